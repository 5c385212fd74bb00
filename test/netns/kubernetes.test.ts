// Root: ambit on "Kubernetes nodes" without Kubernetes. A local HTTP server
// that speaks the API paths (test/helpers/fake-kube.ts, recorded object
// shapes) stands in for the API server; the netns test bed provides the
// real namespaces, and each pod's processes run in cgroups laid out as the
// kubelet lays them out (node 1: systemd driver, node 2: cgroupfs). The
// control plane builds workloads and services from the API and checks the
// agents' tokens with TokenReview; each agent finds its own mesh pods
// (labels) and their netns and cgroup in /proc.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import type { Pod } from '../../src/kube/types';
import { Cleanup, waitExit } from '../helpers/cleanup';
import { fixture } from '../helpers/fake-kube';
import { CLI, configDump, PODAPP, requireRoot, spawnNodeAgent, testBed, untilReady } from '../helpers/fixture';
import { at, must } from '../helpers/must';
import { collect, jsonLines, lastJson, waitFor, waitForLine } from '../helpers/proc';
import { SWITCH_IP, type TestNode, type TestPod, type Topology } from '../helpers/topology';

const FAKE_KUBE = path.resolve(__dirname, '../helpers/fake-kube.js');
const KUBE_PORT = 16443;
const CP_PORT = 15012;
const VIP = '10.96.14.122';

interface KubePod {
  pod: TestPod;
  name: string;
  ns: string;
  sa: string;
  labels: Record<string, string>;
  uid: string;
  container: string;
  sandbox?: ChildProcess;
}

describe('Kubernetes: pods enrolled from the API server, located in /proc', () => {
  let topo: Topology;
  let dir: string;
  let kube: ChildProcess;
  let cp: ChildProcess;
  const agents = new Map<string, { child: ChildProcess; lines: Record<string, unknown>[] }>();
  const kpods = new Map<string, KubePod>();
  const cleanup = new Cleanup();

  const send = (cmd: unknown): void => {
    must(kube.stdin, "the fake API server's stdin").write(`${JSON.stringify(cmd)}\n`);
  };
  const kp = (name: string): KubePod => must(kpods.get(name), `pod ${name}`);
  /** The process standing in for a pod's containers (startSandbox). */
  const sandbox = (k: KubePod): ChildProcess => must(k.sandbox, `${k.name}'s sandbox`);

  /** The kubelet's cgroup for a pod's container: systemd layout on node 1, cgroupfs on node 2. */
  function containerCgroup(pod: TestPod, uid: string): string {
    const id = randomUUID().replace(/-/g, '');
    return pod.node.index === 1
      ? path.join(
          pod.node.podsCgroup,
          'kubepods.slice',
          'kubepods-besteffort.slice',
          `kubepods-besteffort-pod${uid.replace(/-/g, '_')}.slice`,
          `cri-containerd-${id}.scope`,
        )
      : path.join(pod.node.podsCgroup, 'kubepods', 'besteffort', `pod${uid}`, id);
  }

  /** A process in the pod: its netns, its container's cgroup. */
  function runInPod(k: KubePod, args: string[]): ChildProcess {
    const child = spawn(
      'bash',
      [
        '-c',
        `echo $$ > ${k.container}/cgroup.procs && exec nsenter --net=${k.pod.netnsPath} -- "$@"`,
        'bash',
        process.execPath,
        PODAPP,
        ...args,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    return cleanup.process(child);
  }

  function podObject(k: KubePod, phase = 'Running'): Pod & { kind: string } {
    const p = fixture<Pod & { kind: string }>('pod');
    Object.assign(p.metadata, {
      name: k.name,
      namespace: k.ns,
      uid: k.uid,
      labels: k.labels,
      generateName: undefined,
      ownerReferences: undefined,
    });
    Object.assign(p.spec, { nodeName: k.pod.node.name, serviceAccountName: k.sa, serviceAccount: k.sa });
    Object.assign(
      p.status,
      phase === 'Running' ? { phase, podIP: k.pod.ip, podIPs: [{ ip: k.pod.ip }] } : { phase, podIP: undefined, podIPs: undefined },
    );
    return p;
  }

  function addPod(name: string, pod: TestPod, ns: string, sa: string, labels: Record<string, string> = {}): KubePod {
    const uid = randomUUID();
    const k: KubePod = { pod, name, ns, sa, labels: { app: name, ...labels }, uid, container: '' };
    k.container = containerCgroup(pod, uid);
    fs.mkdirSync(k.container, { recursive: true });
    kpods.set(name, k);
    return k;
  }

  async function startSandbox(k: KubePod): Promise<void> {
    k.sandbox = runInPod(k, ['whoami', '8080']);
    await waitForLine(k.sandbox, (l) => l.includes('listening'), `${k.name} serving`);
  }

  const dump = async (
    node: TestNode,
  ): Promise<{
    pods: { uid: string; netns: string }[];
    waitingPods: string[];
    config: { workloads: { uid: string; protocol: string; serviceAccount: string }[] };
  }> => configDump(node);
  const enrolled = async (node: TestNode): Promise<string[]> => (await dump(node)).pods.map((p) => p.uid.split('/').at(-1) ?? p.uid).sort();

  /** podapp dial from inside a pod's container cgroup (so capture applies). */
  async function dial(
    from: KubePod,
    ip: string,
    port: number,
    n = 1,
  ): Promise<{ ok: number; failed: number; firstLines: Record<string, number> }> {
    const r = await collect(runInPod(from, ['dial', ip, String(port), String(n), '1', '3000']));
    return lastJson(r.stdout);
  }

  const logged = (node: TestNode, match: (l: Record<string, unknown>) => boolean): Record<string, unknown> | undefined =>
    must(agents.get(node.name), `agent ${node.name}`).lines.find(match);

  function startAgent(node: TestNode): void {
    const child = spawnNodeAgent(
      topo,
      node,
      [
        '--xds',
        `${SWITCH_IP}:${CP_PORT}`,
        '--xds-root',
        path.join(dir, 'ca', 'root-cert.pem'),
        '--xds-token',
        path.join(dir, `${node.name}.token`),
        '--kubernetes',
        '--kube-api',
        `http://${SWITCH_IP}:${KUBE_PORT}`,
        '--proc',
        '/proc',
        '--workers',
        '1',
      ],
      { INSTANCE_IP: node.wireIp, POD_NAME: `ambit-node-${node.name}`, POD_NAMESPACE: 'ambit-system' },
    );
    agents.set(node.name, { child, lines: jsonLines(child) });
  }

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 3 }));
    kube = topo.spawnInSwitch(process.execPath, [FAKE_KUBE, SWITCH_IP, String(KUBE_PORT)], { stdio: ['pipe', 'pipe', 'pipe'] });
    await waitForLine(kube, (l) => l.includes('listening'), 'the fake API server');

    // Namespaces: demo in the mesh by label, plain not.
    const ns = (name: string, labels: Record<string, string>): unknown => {
      const n = fixture<{ metadata: Record<string, unknown> }>('namespace');
      Object.assign(n.metadata, { name, uid: randomUUID(), labels: { 'kubernetes.io/metadata.name': name, ...labels } });
      return n;
    };
    send({ put: ns('demo', { 'ambit.dev/mode': 'ambient' }) });
    send({ put: ns('plain', {}) });
    send({ put: ns('ambit-system', {}) });
    addPod('sleep', topo.pod(1, 1), 'demo', 'sleep');
    addPod('optout', topo.pod(1, 2), 'demo', 'optout', { 'ambit.dev/mode': 'none' });
    addPod('web', topo.pod(2, 1), 'demo', 'web');
    addPod('db', topo.pod(2, 2), 'plain', 'db', { 'ambit.dev/mode': 'ambient' });
    addPod('legacy', topo.pod(2, 3), 'plain', 'legacy');
    for (const k of kpods.values()) {
      await startSandbox(k);
      send({ put: podObject(k) });
    }
    // The web service: a named target port resolved through its EndpointSlice.
    const svc = fixture<{ metadata: Record<string, unknown> }>('service');
    send({ put: svc });
    const slice = fixture<{ endpoints: { addresses: string[]; targetRef: Record<string, string> }[] }>('endpointslice');
    const endpoint = at(slice.endpoints, 0, "the fixture's endpoints");
    endpoint.addresses = [kp('web').pod.ip];
    Object.assign(endpoint.targetRef, { name: 'web', namespace: 'demo', uid: kp('web').uid });
    send({ put: slice });
    // The agents' own pods (host network) and their projected tokens: n1's carries its node, n2's only its pod.
    const review = fixture<{ status: { user: { extra: Record<string, string[]> } } }>('tokenreview').status;
    for (const node of topo.nodes) {
      const agentPod = fixture<Pod & { kind: string }>('pod');
      Object.assign(agentPod.metadata, {
        name: `ambit-node-${node.name}`,
        namespace: 'ambit-system',
        uid: randomUUID(),
        labels: { app: 'ambit-node' },
      });
      Object.assign(agentPod.spec, { nodeName: node.name, hostNetwork: true, serviceAccountName: 'ambit-node' });
      Object.assign(agentPod.status, { podIP: node.wireIp, podIPs: [{ ip: node.wireIp }] });
      send({ put: agentPod });
      const token = `projected-${node.name}-${randomUUID()}`;
      fs.writeFileSync(path.join(dir, `${node.name}.token`), token, { mode: 0o600 });
      const extra =
        node.index === 1
          ? { 'authentication.kubernetes.io/node-name': [node.name], 'authentication.kubernetes.io/pod-name': [`ambit-node-${node.name}`] }
          : { 'authentication.kubernetes.io/pod-name': [`ambit-node-${node.name}`] };
      send({ token, review: { ...review, user: { ...review.user, extra } } });
    }
    const configFile = path.join(dir, 'mesh.yaml');
    fs.writeFileSync(
      configFile,
      YAML.stringify({ trustDomain: 'cluster.local', ca: { dir: path.join(dir, 'ca') }, nodes: [], workloads: [], services: [] }),
    );
    cp = topo.spawnInSwitch(process.execPath, [
      CLI,
      'control-plane',
      '--config',
      configFile,
      '--listen',
      `${SWITCH_IP}:${CP_PORT}`,
      '--server-ip',
      SWITCH_IP,
      '--kubernetes',
      '--kube-api',
      `http://${SWITCH_IP}:${KUBE_PORT}`,
    ]);
    await waitForLine(cp, (l) => l.includes('control plane serving'), 'control plane serving');
    for (const node of topo.nodes) startAgent(node);
    for (const node of topo.nodes) {
      await untilReady(node);
    }
  });

  after(() => cleanup.run());

  test("labels decide enrolment on both cgroup drivers; identities are the pods' service accounts", async () => {
    assert.deepEqual(await enrolled(topo.node(1)), ['sleep'], 'n1 (systemd layout): sleep; optout opted out');
    assert.deepEqual(
      await enrolled(topo.node(2)),
      ['db', 'web'],
      'n2 (cgroupfs layout): web by its namespace, db by its own label; legacy not',
    );
    const r = await dial(kp('sleep'), kp('web').pod.ip, 8080, 5);
    assert.equal(r.ok, 5);
    const seen = await waitFor('the destination access log', () =>
      logged(topo.node(2), (l) => l.direction === 'inbound' && l['dst.workload'] === 'web'),
    );
    assert.equal(seen['src.identity'], 'spiffe://cluster.local/ns/demo/sa/sleep');
    assert.equal(seen['dst.identity'], 'spiffe://cluster.local/ns/demo/sa/web');
    const viaVip = await dial(kp('sleep'), VIP, 80, 3);
    assert.equal(viaVip.ok, 3, "the service VIP, port 80 → the slice's named port 8080");
    const plain = await dial(kp('optout'), kp('web').pod.ip, 8080, 1);
    assert.equal(plain.ok, 1, 'an opted-out pod is not captured: plaintext, accepted by a PERMISSIVE destination');
    await waitFor('plaintext inbound', () =>
      logged(
        topo.node(2),
        (l) => l.direction === 'inbound_plain' && l['src.addr'] !== undefined && String(l['src.addr']).startsWith(kp('optout').pod.ip),
      ),
    );
  });

  test("a pod that starts is enrolled once its sandbox runs; one that goes away is unenrolled; other pods' traffic carries on", async () => {
    const n1 = topo.node(1);
    // A long connection from sleep to web, which must not notice.
    const stream = runInPod(kp('sleep'), ['stream', kp('web').pod.ip, '8080', '16', '8']);
    const streamDone = collect(stream);
    // Its sandbox runs but it has no address yet (Pending): not to be enrolled.
    const late = addPod('late', topo.pod(1, 3), 'demo', 'late');
    await startSandbox(late);
    send({ put: podObject(late, 'Pending') });
    // A barrier on the same watch stream: a later change that n1 does act on.
    const optout = kp('optout');
    send({ put: podObject({ ...optout, labels: { ...optout.labels, 'ambit.dev/mode': 'ambient' } }) });
    await waitFor('optout enrolled after opting in', async () => (await enrolled(n1)).includes('optout'), 15_000, 100);
    assert.deepEqual(await enrolled(n1), ['optout', 'sleep'], 'the Pending pod (seen before that change) is not enrolled');
    send({ put: podObject(optout) });
    await waitFor('optout unenrolled after opting out again', async () => !(await enrolled(n1)).includes('optout'), 15_000, 100);
    send({ put: podObject(late) });
    await waitFor('late enrolled', async () => (await enrolled(n1)).includes('late'), 15_000, 100);
    const r = await dial(late, kp('web').pod.ip, 8080, 2);
    assert.equal(r.ok, 2);
    await waitFor("late's identity at the destination", () =>
      logged(topo.node(2), (l) => l.direction === 'inbound' && l['src.identity'] === 'spiffe://cluster.local/ns/demo/sa/late'),
    );
    // Deleted: the object goes, then its processes.
    send({ delete: { kind: 'Pod', namespace: 'demo', name: 'late' } });
    await waitFor('late unenrolled', async () => !(await enrolled(n1)).includes('late'), 15_000, 100);
    sandbox(late).kill('SIGKILL');
    const s = lastJson<{ echoed: number; error?: string }>((await streamDone).stdout);
    assert.equal(s.error, undefined);
    assert.equal(s.echoed, 16 * 1024 * 1024, "the other pod's connection was echoed completely");
  });

  test('the process that located a pod exits and another takes its place: same netns, the enrolment stays, traffic flows', async () => {
    const n1 = topo.node(1);
    const sleep = kp('sleep');
    const log = must(agents.get(n1.name), `agent ${n1.name}`).lines;
    const mark = log.length;
    const locatedBefore = log.filter((l) => l.msg === 'node pods located').length;
    sandbox(sleep).kill('SIGKILL');
    await waitExit(sandbox(sleep));
    await startSandbox(sleep);
    // What the kubelet reports when a container of the pod restarted.
    const updated = podObject(sleep);
    const statuses = (updated.status as { containerStatuses?: { restartCount: number }[] }).containerStatuses;
    at(must(statuses, "the fixture pod's containerStatuses"), 0, 'containerStatuses').restartCount = 1;
    send({ put: updated });
    await waitFor(
      'sleep located through its new process',
      () => log.filter((l) => l.msg === 'node pods located').length > locatedBefore,
      15_000,
      100,
    );
    assert.deepEqual(await enrolled(n1), ['sleep']);
    assert.equal(
      log.slice(mark).filter((l) => l.msg === 'pod unenrolled' || l.msg === 'pod enrolled').length,
      0,
      'the same netns: no re-enrolment',
    );
    const r = await dial(sleep, kp('web').pod.ip, 8080, 3);
    assert.equal(r.ok, 3);
    assert.equal(
      log.filter((l) => l.msg === 'xDS stream lost; serving the state held').length,
      0,
      'the agent kept its control-plane stream throughout',
    );
  });
});
