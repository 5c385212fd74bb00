// Root: ambit-cni chained after Debian's containernetworking-plugins (bridge
// + host-local), invoked as a container runtime invokes a conflist: each
// plugin in turn, in the host's (here: node n1's) netns, with CNI_COMMAND,
// CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH and its plugin
// config plus the previous plugin's result on stdin; DEL in reverse order.
// A CNI pod is a netns made here (the runtime's sandbox) and a cgroup named
// as the kubelet names it (kubepods/besteffort/pod<uid>) under n1's pods
// cgroup, made before ADD as the kubelet makes it. Mesh-wide STRICT mTLS:
// a connection that reaches a pod's app did so over HBONE.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { Cleanup, waitExit } from '../helpers/cleanup';
import {
  CLI,
  configDump,
  connectionFailures,
  dialFrom,
  dialOutcome,
  httpInNetns,
  PODAPP,
  pinDirFor,
  requireRoot,
  spawnNodeAgent,
  testBed,
  workloadOf,
  writeMeshYaml,
} from '../helpers/fixture';
import { collect, jsonLines, sh, waitFor, waitForLine } from '../helpers/proc';
import { expectRefusal } from '../helpers/refusal';
import type { TestNode, TestPod, Topology } from '../helpers/topology';

const CNI_PATH = [path.resolve(__dirname, '../../../bin'), '/usr/lib/cni'];
const SUBNET = '10.200.1.128/25';
const LOOPBACK = { type: 'loopback' };

interface CniPod {
  name: string;
  namespace: string;
  uid: string;
  containerId: string;
  netns: string;
  netnsPath: string;
  cgroup: string;
  /** The chain's ADD result, handed to DEL as the runtime does. */
  result?: { ips: { address: string }[] } & Record<string, unknown>;
}

interface PluginRun {
  code: number | null;
  out: Record<string, unknown> | undefined;
  stderr: string;
  ms: number;
}

describe('ambit-cni: pods enrolled before their first packet', () => {
  let topo: Topology;
  let dir: string;
  let configFile: string;
  let socket: string;
  let conflist: { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
  const agents = new Map<string, ChildProcess>();
  const logs = new Map<string, Record<string, unknown>[]>();
  const cleanup = new Cleanup();
  const n1 = (): TestNode => topo.node(1);

  async function startAgent(node: TestNode): Promise<void> {
    const more = node.index === 1 ? ['--cni-socket', socket] : [];
    const child = spawnNodeAgent(topo, node, ['--config', configFile, '--workers', '1', '--drain-seconds', '1', ...more]);
    agents.set(node.name, child);
    logs.set(node.name, jsonLines(child));
    await waitForLine(child, (l) => l.includes(node.index === 1 ? '"CNI socket listening"' : '"node ready"'), `agent ${node.name} ready`);
  }

  async function stopAgent(node: TestNode): Promise<void> {
    const child = agents.get(node.name);
    if (!child) return;
    child.kill('SIGTERM');
    await waitExit(child);
    agents.delete(node.name);
  }

  /** A sandbox as the kubelet and runtime make one before the network: netns and pod cgroup. */
  async function sandbox(name: string, namespace: string): Promise<CniPod> {
    const uid = randomUUID();
    const pod: CniPod = {
      name,
      namespace,
      uid,
      containerId: randomUUID().replace(/-/g, ''),
      netns: `${topo.prefix}-c${name}`,
      netnsPath: `/var/run/netns/${topo.prefix}-c${name}`,
      cgroup: path.join(n1().podsCgroup, 'kubepods', 'besteffort', `pod${uid}`),
    };
    await sh('ip', ['netns', 'add', pod.netns]);
    cleanup.add(`netns ${pod.netns}`, () => (fs.existsSync(pod.netnsPath) ? sh('ip', ['netns', 'del', pod.netns]) : undefined));
    fs.mkdirSync(pod.cgroup, { recursive: true });
    return pod;
  }

  /** One plugin of the conflist, run as the runtime runs it (in n1's netns). */
  async function runPlugin(
    plugin: Record<string, unknown>,
    command: string,
    pod: CniPod,
    prevResult?: unknown,
    network: string = conflist.name,
  ): Promise<PluginRun> {
    const exe = CNI_PATH.map((d) => path.join(d, String(plugin.type))).find((p) => fs.existsSync(p));
    assert.ok(exe, `plugin ${String(plugin.type)} in ${CNI_PATH.join(':')}`);
    const child = topo.spawnInNode(n1(), exe, [], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {
        PATH: process.env.PATH,
        AMBIT_NODE: process.execPath,
        CNI_COMMAND: command,
        CNI_CONTAINERID: pod.containerId,
        CNI_NETNS: pod.netnsPath,
        CNI_IFNAME: 'eth0',
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.containerId};K8S_POD_UID=${pod.uid}`,
        CNI_PATH: CNI_PATH.join(':'),
      },
    });
    child.stdin?.end(JSON.stringify({ cniVersion: conflist.cniVersion, name: network, ...plugin, ...(prevResult ? { prevResult } : {}) }));
    const started = Date.now();
    const r = await collect(child);
    return {
      code: r.code,
      out: r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined,
      stderr: r.stderr,
      ms: Date.now() - started,
    };
  }

  /** ADD through the whole chain; on a failure the runtime DELs the chain, and so does this. */
  async function add(pod: CniPod): Promise<{ ok: true; bridge: unknown; ms: Record<string, number> } | { ok: false; error: PluginRun }> {
    // containerd and CRI-O bring the sandbox's lo up (their own loopback network) before the pod network.
    const lo = await runPlugin(LOOPBACK, 'ADD', pod, undefined, 'cni-loopback');
    assert.equal(lo.code, 0, `loopback: ${JSON.stringify(lo.out)}`);
    let prev: unknown;
    let bridge: unknown;
    const ms: Record<string, number> = {};
    for (const plugin of conflist.plugins) {
      const r = await runPlugin(plugin, 'ADD', pod, prev);
      ms[String(plugin.type)] = r.ms;
      if (r.code !== 0) {
        await del(pod);
        return { ok: false, error: r };
      }
      prev = r.out;
      if (plugin.type === 'bridge') bridge = r.out;
    }
    pod.result = prev as CniPod['result'];
    return { ok: true, bridge, ms };
  }

  async function del(pod: CniPod): Promise<void> {
    for (const plugin of [...conflist.plugins].reverse()) {
      const r = await runPlugin(plugin, 'DEL', pod, pod.result);
      assert.equal(r.code, 0, `DEL ${String(plugin.type)}: ${JSON.stringify(r.out)} ${r.stderr}`);
    }
    assert.equal((await runPlugin(LOOPBACK, 'DEL', pod, undefined, 'cni-loopback')).code, 0);
  }

  const ipOf = (pod: CniPod): string => String(pod.result?.ips[0]?.address.split('/')[0]);
  /** A TestPod for the bed's helpers: the sandbox's netns and cgroup. */
  const asTestPod = (pod: CniPod): TestPod => ({
    name: pod.name,
    uid: pod.uid,
    node: n1(),
    netns: pod.netns,
    netnsPath: pod.netnsPath,
    ip: ipOf(pod),
    cgroup: pod.cgroup,
  });
  const enrolledPods = async (): Promise<{ uid: string; podId: number; netns: string }[]> =>
    (await configDump<{ pods: { uid: string; podId: number; netns: string }[] }>(n1())).pods;
  const status = async (): Promise<{ enrolledCgroups: number; podAddrs: Record<string, number>; links: { pin: string }[] }> =>
    JSON.parse(await sh(process.execPath, [CLI, 'datapath', 'status', '--pin-dir', pinDirFor(topo, n1()), '--json']));

  let web: CniPod;
  let app: ChildProcess;
  const meshClient = (): TestPod => topo.pod(2, 1);
  const plainClient = (): TestPod => topo.pod(2, 2);

  before(async () => {
    requireRoot();
    assert.ok(fs.existsSync('/usr/lib/cni/bridge'), 'containernetworking-plugins installed (scripts/install-deps.sh)');
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 2 }));
    socket = path.join(dir, 'cni.sock');
    const meshWorkload = (name: string, address: string): Record<string, unknown> => {
      const { netns: _n, cgroup: _c, ...w } = workloadOf(topo.pod(1, 1));
      return { ...w, uid: `${topo.prefix}/${name}`, name, namespace: 'shop', addresses: [address] };
    };
    const workloads = [
      ...topo.pods.map((p) => ({ ...workloadOf(p), protocol: p === plainClient() ? 'NONE' : 'HBONE' })),
      // Known to the state, placed by nobody: they wait for their sandbox.
      meshWorkload('web', '10.200.1.130'),
      meshWorkload('web2', '10.200.1.131'),
      // Known, but outside the mesh.
      { ...meshWorkload('legacy', '10.200.1.139'), protocol: 'NONE' },
    ];
    const strict = {
      apiVersion: 'security.istio.io/v1',
      kind: 'PeerAuthentication',
      metadata: { name: 'default', namespace: 'istio-system' },
      spec: { mtls: { mode: 'STRICT' } },
    };
    configFile = writeMeshYaml(topo, dir, { workloads, policies: [strict] });
    conflist = {
      cniVersion: '1.0.0',
      name: `${topo.prefix}-net`,
      plugins: [
        {
          type: 'bridge',
          bridge: 'cni0',
          isGateway: true,
          ipMasq: false,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: SUBNET, rangeStart: '10.200.1.130', rangeEnd: '10.200.1.140' }]],
            dataDir: path.join(dir, 'ipam'),
            routes: [{ dst: '0.0.0.0/0' }],
          },
        },
        { type: 'ambit-cni', socket, timeoutSeconds: 10 },
      ],
    };
    for (const node of topo.nodes) await startAgent(node);
    cleanup.add('agents', async () => {
      for (const node of topo.nodes) await stopAgent(node);
    });
    const peer = topo.spawnInPod(meshClient(), process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(peer, (l) => l.includes('listening'), 'whoami on n2-p1');
  });

  after(() => cleanup.run());

  test("ADD enrols a mesh pod before it returns: the app's first connections, in and out, are carried over HBONE", async (t) => {
    const pending = async (): Promise<string[]> =>
      (await configDump<{ pendingPods: { uid: string; why: string }[] }>(n1())).pendingPods
        .filter((p) => /waiting for its sandbox/.test(p.why))
        .map((p) => p.uid)
        .sort();
    assert.deepEqual(await pending(), [`${topo.prefix}/web`, `${topo.prefix}/web2`], 'known to the state, no sandbox yet');
    web = await sandbox('web', 'shop');
    const r = await add(web);
    assert.ok(r.ok, `ADD failed: ${JSON.stringify(!r.ok && r.error)}`);
    const enrolled = (logs.get('n1') ?? []).find((l) => l.msg === 'pod enrolled at CNI ADD');
    t.diagnostic(`ADD took ${JSON.stringify(r.ms)} ms per plugin; the agent's part of ambit-cni's: ${enrolled?.ms} ms`);
    // The instant ADD returns: the app starts, and the first connection to it is made.
    app = topo.spawnInPod(asTestPod(web), process.execPath, [PODAPP, 'whoami', '8080']);
    await waitForLine(app, (l) => l.includes('listening'), 'the app listening');
    assert.deepEqual(web.result, r.bridge, "ambit-cni passes the bridge's result on unchanged");
    assert.deepEqual(await pending(), [`${topo.prefix}/web2`]);
    // n1 stays ready while web2 waits for its sandbox and says so, as `ambit datapath status` does in n1's netns.
    const ready = await httpInNetns(n1(), '127.0.0.1', 15021, 'GET', '/healthz/ready');
    assert.equal(ready.status, 200, ready.body);
    assert.match(ready.body, new RegExp(`^ready\\n(.*\\n)+- ${topo.prefix}/web2: no netns and cgroup yet`));
    assert.doesNotMatch(ready.body, new RegExp(`- ${topo.prefix}/web:`));
    const inN1 = ['netns', 'exec', n1().netns, process.execPath, CLI, 'datapath', 'status', '--pin-dir', pinDirFor(topo, n1()), '--json'];
    assert.deepEqual(
      (JSON.parse(await sh('ip', inN1)) as { pendingPods: { uid: string }[] }).pendingPods.map((p) => p.uid),
      [`${topo.prefix}/web2`],
    );
    const ambitConf = conflist.plugins.at(-1) ?? {};
    assert.deepEqual(await runPlugin(ambitConf, 'CHECK', web, web.result).then((c) => [c.code, c.out]), [0, undefined], 'CHECK: captured');
    assert.equal(ipOf(web), '10.200.1.130');
    const inbound = await dialFrom(topo, meshClient(), ipOf(web), 8080);
    assert.equal(inbound.ok, 1, JSON.stringify(inbound.errors));
    // Delivered from inside the pod by n1's tunnel, and under STRICT: it came over HBONE.
    assert.deepEqual(inbound.firstLines, { [JSON.stringify({ local: `${ipOf(web)}:8080`, remote: ipOf(web) })]: 1 });
    const outbound = await dialFrom(topo, asTestPod(web), meshClient().ip, 8080);
    assert.equal(outbound.ok, 1, `the pod's first outbound connection, STRICT at n2: ${JSON.stringify(outbound.errors)}`);

    const denied = await connectionFailures(n1(), 'inbound', 'denied');
    await expectRefusal(
      dialOutcome(topo, plainClient(), ipOf(web), 8080, 3000),
      { closed: true },
      3000,
      'plaintext from a pod outside the mesh',
    );
    await waitFor('the plaintext refusal counted on n1', async () => (await connectionFailures(n1(), 'inbound', 'denied')) === denied + 1);
    const pods = await enrolledPods();
    assert.deepEqual(
      pods.filter((p) => p.uid === `${topo.prefix}/web`).map((p) => p.netns),
      [web.netnsPath],
    );
  });

  test('with the agent up, a pod outside the mesh (unknown, or known as NONE) passes untouched', async () => {
    for (const name of ['stranger', 'legacy']) {
      const pod = await sandbox(name, 'shop');
      const r = await add(pod);
      assert.ok(r.ok, `ADD of ${name}: ${JSON.stringify(!r.ok && r.error)}`);
      assert.deepEqual(pod.result, r.bridge);
      // The stranger is given the address the state holds for web2 (no sandbox yet): a name decides, not that.
      if (name === 'stranger') assert.equal(ipOf(pod), '10.200.1.131');
      const dump = await configDump<{ pods: { netns: string }[]; placedByRuntime: Record<string, unknown> }>(n1());
      assert.deepEqual(
        dump.pods.filter((p) => p.netns === pod.netnsPath),
        [],
        `${name} not enrolled`,
      );
      assert.equal(Object.keys(dump.placedByRuntime).length, 1, 'web only');
      assert.equal((await sh('ip', ['netns', 'exec', pod.netns, 'ss', '-Hltn'])).trim(), '', `no listener in ${name}`);
      const said = (logs.get('n1') ?? []).find((l) => l.msg === 'pod left alone at CNI ADD' && l.pod === `shop/${name}`);
      assert.match(
        String(said?.reason),
        name === 'legacy' ? /legacy is not captured by the node \(protocol NONE\)/ : /is not an ambient workload of node n1/,
      );
      await del(pod);
    }
  });

  test('a CNI pod that the state later locates as well is not enrolled again', async () => {
    const was = must1(await enrolledPods(), `${topo.prefix}/web`);
    const enrolledLogs = (): number =>
      (logs.get('n1') ?? []).filter((l) => l.msg === 'pod enrolled' && l.pod === `${topo.prefix}/web`).length;
    assert.equal(enrolledLogs(), 1);
    const original = fs.readFileSync(configFile, 'utf8');
    const cfg = YAML.parse(original) as { workloads: Record<string, unknown>[] };
    const w = cfg.workloads.find((x) => x.name === 'web');
    assert.ok(w);
    // As the /proc locator would find it: through its app's process.
    Object.assign(w, { netns: `/proc/${app.pid}/ns/net`, cgroup: web.cgroup });
    const agent = agents.get('n1');
    assert.ok(agent);
    const applied = waitForLine(agent, (l) => l.includes('configuration applied'), 'the located pod applied');
    fs.writeFileSync(configFile, YAML.stringify(cfg));
    try {
      await applied;
      assert.deepEqual(must1(await enrolledPods(), `${topo.prefix}/web`), was);
      assert.equal(enrolledLogs(), 1, 'enrolled once');
      assert.equal((await dialFrom(topo, meshClient(), ipOf(web), 8080)).ok, 1);
    } finally {
      const restored = waitForLine(agent, (l) => l.includes('configuration applied'), 'the original configuration');
      fs.writeFileSync(configFile, original);
      await restored;
    }
  });

  test('with the agent stopped, ADD fails for a mesh pod and passes a pod outside the mesh; a restarted agent keeps the CNI pod', async () => {
    await stopAgent(n1());
    // Stopped (SIGTERM, as for an upgrade), the agent leaves its pods captured: they fail closed meanwhile
    // (the app listens on 8080: a pod no longer captured would answer).
    await expectRefusal(
      dialOutcome(topo, plainClient(), ipOf(web), 8080, 1000),
      { refused: true },
      1000,
      'plaintext to the CNI pod while its agent is down (sk_lookup finds no listener: SK_DROP)',
    );
    await expectRefusal(
      dialOutcome(topo, asTestPod(web), meshClient().ip, 8080, 1000),
      { refused: true },
      1000,
      "the CNI pod's own outbound while its agent is down",
    );
    const web2 = await sandbox('web2', 'shop');
    const refused = await add(web2);
    assert.equal(refused.ok, false, 'ADD of a mesh pod with no agent must fail');
    const err = !refused.ok ? refused.error : undefined;
    assert.equal(err?.code, 1);
    assert.equal(err?.out?.code, 101);
    assert.equal(err?.out?.cniVersion, '1.0.0');
    assert.match(String(err?.out?.msg), /ambit node agent unreachable at .*cni\.sock \(ECONNREFUSED\); pod shop\/web2 is in the mesh/);
    assert.match(String(err?.out?.details), /shop\/web2 is in the mesh on node n1/);

    const other = await sandbox('other', 'default');
    const passed = await add(other);
    assert.ok(passed.ok, `ADD of a pod outside the mesh: ${JSON.stringify(!passed.ok && passed.error)}`);
    assert.deepEqual(other.result, passed.bridge);
    await del(other);

    await startAgent(n1());
    assert.deepEqual(
      (await enrolledPods()).filter((p) => p.uid.endsWith('/web')).map((p) => p.netns),
      [web.netnsPath],
      'the restarted agent enrols the CNI pod again from what it kept',
    );
    assert.equal((await dialFrom(topo, meshClient(), ipOf(web), 8080)).ok, 1);
  });

  test('DEL leaves nothing behind: no listeners, no capture, no address on the bridge', async () => {
    const was = await status();
    assert.equal(was.podAddrs['10.200.1.130'] !== undefined, true);
    app.kill('SIGKILL');
    await waitExit(app);
    await del(web);
    assert.deepEqual(
      (await enrolledPods()).filter((p) => p.uid.endsWith('/web')),
      [],
    );
    const after = await status();
    assert.equal(after.podAddrs['10.200.1.130'], undefined, 'no pod address entry');
    assert.equal(after.enrolledCgroups, was.enrolledCgroups - 1, 'its cgroup no longer captured');
    assert.deepEqual(
      after.links.map((l) => l.pin).filter((p) => p.includes('web')),
      [],
      'no sk_lookup link',
    );
    const listening = await sh('ip', ['netns', 'exec', web.netns, 'ss', '-Hltn']);
    assert.equal(listening.trim(), '', 'no listener in the pod netns');
    assert.equal((await sh('ip', ['-n', n1().netns, 'link', 'show', 'master', 'cni0'])).trim(), '', 'no veth left on the bridge');
    const ipam = path.join(dir, 'ipam', conflist.name);
    assert.deepEqual(
      fs.readdirSync(ipam).filter((f) => /^\d/.test(f)),
      [],
      'host-local released every address',
    );
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'cni.pods.json'), 'utf8')), {}, 'nothing kept for a restart');
  });
});

function must1<T extends { uid: string }>(list: T[], uid: string): T {
  const hits = list.filter((p) => p.uid === uid);
  assert.equal(hits.length, 1, `${uid} enrolled once: ${JSON.stringify(list)}`);
  return hits[0] as T;
}
