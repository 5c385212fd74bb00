// Kubernetes-facing logic without a cluster: the kubelet's cgroup layouts,
// locating pods in a /proc tree, mesh membership by labels, workloads and
// services from recorded API objects, and the client, informer and
// TokenReview against a local HTTP server that speaks the API paths
// (test/helpers/fake-kube.ts), and the control plane's cluster view with
// its waypoints (Gateways, istio.io/use-waypoint labels) against that same
// server: no real cluster.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { TokenReviewer } from '../../src/control-plane/token-review';
import { KubeClient } from '../../src/kube/client';
import { KubeClusterSource } from '../../src/kube/cluster-source';
import { Informer } from '../../src/kube/informer';
import { inMesh, meshFromCluster, podUid } from '../../src/kube/mesh';
import { PodLocator, podOfCgroupPath } from '../../src/kube/pod-locator';
import type { EndpointSlice, Gateway, Namespace, Pod, Service } from '../../src/kube/types';
import { waypointDocs } from '../../src/kube/waypoints';
import { capturedByNode } from '../../src/roots/pod-agent';
import { applyWaypointDocs } from '../../src/sources/standalone-waypoints';
import type { GatewayAddress, MeshConfig } from '../../src/state/types';
import { FakeKube, fixture } from '../helpers/fake-kube';
import { at } from '../helpers/must';
import { waitFor } from '../helpers/proc';

const log = pino({ level: 'silent' });
const UID = '5f0c7a53-8f7e-4a51-b6a4-2c1d9e0b7a64';

test('the pod and its own cgroup are read from both kubelet cgroup drivers', () => {
  const u = UID.replace(/-/g, '_');
  const cases: [string, string | undefined][] = [
    [
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u}.slice/cri-containerd-9a1f.scope`,
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u}.slice`,
    ],
    [
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${u}.slice/cri-containerd-9a1f.scope`,
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${u}.slice`,
    ],
    [`/kubepods.slice/kubepods-pod${u}.slice/cri-containerd-9a1f.scope`, `/kubepods.slice/kubepods-pod${u}.slice`], // Guaranteed
    [`/kubepods/besteffort/pod${UID}/9a1f3c0d7be2`, `/kubepods/besteffort/pod${UID}`],
    [`/kubepods/pod${UID}/9a1f3c0d7be2`, `/kubepods/pod${UID}`],
    [`/system.slice/containerd.service/kubepods-besteffort-pod${u}.slice:cri-containerd:9a1f`, undefined], // not a directory of its own
    [
      `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${u}.slice/cri-containerd-1.scope`,
      `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${u}.slice`,
    ], // kind
    [`/user.slice/user-0.slice/session-1.scope`, undefined],
    [`/system.slice/pod${UID}`, undefined], // a pod-looking name outside kubepods
  ];
  for (const [p, podPath] of cases) {
    const got = podOfCgroupPath(p);
    assert.deepEqual(got, podPath ? { uid: UID, podPath } : undefined, p);
  }
});

test('the locator finds each pod by its processes and keeps its choice while that process lives', () => {
  const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-proc-'));
  const cgRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-cgroup-'));
  try {
    const u = UID.replace(/-/g, '_');
    const other = '11111111-2222-4333-8444-555555555555';
    const write = (pid: number, cg: string): void => {
      fs.mkdirSync(path.join(proc, String(pid), 'ns'), { recursive: true });
      fs.writeFileSync(path.join(proc, String(pid), 'cgroup'), `0::${cg}\n`);
    };
    write(900, `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u}.slice/cri-containerd-b.scope`);
    write(120, `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u}.slice/cri-containerd-pause.scope`);
    write(300, `/kubepods/burstable/pod${other}/c0ffee`);
    write(1, '/init.scope');
    fs.mkdirSync(path.join(proc, 'self'));
    const podDir = path.join(cgRoot, 'kubepods.slice', 'kubepods-besteffort.slice', `kubepods-besteffort-pod${u}.slice`);
    fs.mkdirSync(podDir, { recursive: true });
    fs.mkdirSync(path.join(cgRoot, 'kubepods', 'burstable', `pod${other}`), { recursive: true });
    const locator = new PodLocator(proc, cgRoot);
    const first = locator.locate(new Set([UID, other, 'not-here']));
    assert.deepEqual(first.get(UID), { pid: 120, netns: path.join(proc, '120/ns/net'), cgroup: podDir });
    assert.equal(first.get(other)?.cgroup, path.join(cgRoot, `kubepods/burstable/pod${other}`));
    assert.equal(first.has('not-here'), false);
    write(50, `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u}.slice/cri-containerd-new.scope`);
    assert.equal(locator.locate(new Set([UID])).get(UID)?.pid, 120, 'a lower pid appearing does not move a live choice');
    fs.rmSync(path.join(proc, '120'), { recursive: true });
    assert.equal(locator.locate(new Set([UID])).get(UID)?.pid, 50, 'the chosen process is gone (sandbox restarted): another one is chosen');

    // Seen from a container with its own cgroup namespace: paths relative to the agent's cgroup.
    const inNs = new PodLocator(proc, cgRoot);
    fs.rmSync(path.join(proc, '50'), { recursive: true });
    fs.rmSync(path.join(proc, '900'), { recursive: true });
    write(77, `/../../kubepods-besteffort.slice/kubepods-besteffort-pod${u}.slice/cri-containerd-x.scope`);
    assert.equal(inNs.locate(new Set([UID])).get(UID)?.cgroup, podDir, 'found by name under the cgroup root');
    write(78, `/../kubepods-besteffort-pod${'9'.repeat(8)}_1111_4111_8111_111111111111.slice/c.scope`);
    assert.equal(
      inNs.locate(new Set(['99999999-1111-4111-8111-111111111111'])).size,
      0,
      'a pod whose directory is not there is not located',
    );
  } finally {
    fs.rmSync(proc, { recursive: true, force: true });
    fs.rmSync(cgRoot, { recursive: true, force: true });
  }
});

test('mesh membership: namespace label, pod label, pod opt-out, host network', () => {
  const ns = fixture<Namespace>('namespace');
  const plainNs: Namespace = { metadata: { ...ns.metadata, labels: {} } };
  const pod = (labels: Record<string, string>, hostNetwork = false): Pod => {
    const p = fixture<Pod>('pod');
    p.metadata.labels = labels;
    p.spec.hostNetwork = hostNetwork;
    return p;
  };
  assert.equal(inMesh(pod({}), ns), true);
  assert.equal(inMesh(pod({ 'ambit.dev/mode': 'none' }), ns), false);
  assert.equal(inMesh(pod({}), plainNs), false);
  assert.equal(inMesh(pod({ 'ambit.dev/mode': 'ambient' }), plainNs), true);
  assert.equal(inMesh(pod({ 'ambit.dev/mode': 'ambient' }, true), ns), false);
  assert.equal(inMesh(pod({}), undefined), false);
});

test('workloads and services from recorded API objects: identity facts, named target ports, endpoints', () => {
  const sleep = fixture<Pod>('pod');
  const web = fixture<Pod>('pod');
  Object.assign(web.metadata, {
    name: 'web-5b8d7c9f6-qz4lm',
    uid: 'a4e9c2d1-6b3f-4f8e-8c7a-1d2e3f4a5b6c',
    labels: { app: 'web', version: 'v2' },
  });
  Object.assign(web.spec, { nodeName: 'kind-worker2', serviceAccountName: 'web' });
  Object.assign(web.status, { podIP: '10.244.2.5', podIPs: [{ ip: '10.244.2.5' }, { ip: 'fd00::5' }] });
  const done = fixture<Pod>('pod');
  Object.assign(done.metadata, { name: 'job-1', uid: 'u-job' });
  done.status.phase = 'Succeeded';
  const headless = fixture<Service>('service');
  Object.assign(headless.metadata, { name: 'web-headless' });
  Object.assign(headless.spec, { clusterIP: 'None', clusterIPs: ['None'] });
  const { workloads, services } = meshFromCluster({
    pods: [sleep, web, done],
    namespaces: [fixture<Namespace>('namespace')],
    services: [fixture<Service>('service'), headless],
    slices: [fixture<EndpointSlice>('endpointslice')],
  });
  assert.deepEqual(
    workloads.map((w) => w.uid),
    ['Kubernetes//Pod/demo/sleep-7d9c6b5f8d-x2kqf', 'Kubernetes//Pod/demo/web-5b8d7c9f6-qz4lm'],
    'finished pods are not workloads',
  );
  const w = at(workloads, 1, 'workloads');
  assert.deepEqual(
    { sa: w.serviceAccount, node: w.node, addresses: w.addresses, protocol: w.protocol, services: w.services, labels: w.labels },
    {
      sa: 'web',
      node: 'kind-worker2',
      addresses: ['10.244.2.5'],
      protocol: 'HBONE',
      services: ['demo/web.demo.svc.cluster.local'],
      labels: { app: 'web', version: 'v2' },
    },
  );
  assert.equal(podUid(sleep), workloads[0]?.uid);
  assert.deepEqual(
    services,
    [
      {
        name: 'web',
        namespace: 'demo',
        hostname: 'web.demo.svc.cluster.local',
        addresses: ['10.96.14.122'],
        ports: [{ port: 80, targetPort: 8080, name: 'http' }],
        selector: {},
      },
    ],
    'named targetPort "http" → 8080 from the slice; headless skipped',
  );
});

let kube: FakeKube;
let client: KubeClient;
before(async () => {
  kube = new FakeKube();
  await new Promise<void>((r) => kube.server.listen(0, '127.0.0.1', () => r()));
  client = new KubeClient({ server: `http://127.0.0.1:${(kube.server.address() as AddressInfo).port}` });
});
after(() => {
  kube.server.closeAllConnections();
  kube.server.close();
});

test('the informer lists, follows the watch, and relists after 410 Gone', async () => {
  const pod = (name: string, node: string): Pod => {
    const p = fixture<Pod>('pod');
    Object.assign(p.metadata, { name, uid: `uid-${name}` });
    p.spec.nodeName = node;
    return p;
  };
  kube.put({ kind: 'Pod', ...pod('a', 'n1') });
  kube.put({ kind: 'Pod', ...pod('b', 'n2') });
  const informer = new Informer<Pod>(client, `/api/v1/pods?fieldSelector=${encodeURIComponent('spec.nodeName=n1')}`, log).start();
  try {
    await informer.whenSynced();
    assert.deepEqual(
      informer.list().map((p) => p.metadata.name),
      ['a'],
      "only this node's pods",
    );
    kube.put({ kind: 'Pod', ...pod('c', 'n1') });
    await waitFor('the watched add', () => informer.get('demo/c'));
    kube.delete('Pod', 'demo', 'a');
    await waitFor('the watched delete', () => !informer.get('demo/a'));
    const lists = kube.requests.filter(
      (r) => r.startsWith('GET /api/v1/pods?fieldSelector=spec.nodeName%3Dn1') && !r.includes('watch=1'),
    ).length;
    kube.expireWatches();
    kube.put({ kind: 'Pod', ...pod('d', 'n1') });
    await waitFor('the relist after 410', () => informer.get('demo/d'));
    assert.equal(
      kube.requests.filter((r) => r.startsWith('GET /api/v1/pods?fieldSelector=spec.nodeName%3Dn1') && !r.includes('watch=1')).length,
      lists + 1,
      'one relist',
    );
    assert.deepEqual(
      informer
        .list()
        .map((p) => p.metadata.name)
        .sort(),
      ['c', 'd'],
    );
  } finally {
    informer.stop();
  }
});

test('TokenReview: the node agent account with a node claim, or via its pod; anything else refused', async () => {
  const status = fixture<{ status: { user: { extra: Record<string, string[]> } } }>('tokenreview').status;
  kube.review('with-node', status);
  kube.review('pod-only', {
    ...status,
    user: { ...status.user, extra: { 'authentication.kubernetes.io/pod-name': ['ambit-node-7xk2p'] } },
  });
  kube.review('other-sa', { ...status, user: { ...status.user, username: 'system:serviceaccount:demo:sleep' } });
  const reviewer = new TokenReviewer(client, {
    nodeOfPod: (ns, name) => (ns === 'ambit-system' && name === 'ambit-node-7xk2p' ? 'kind-worker2' : undefined),
    log,
  });
  const md = (token?: string): grpc.Metadata => {
    const m = new grpc.Metadata();
    if (token) m.set('authorization', `Bearer ${token}`);
    return m;
  };
  assert.deepEqual(await reviewer.authenticate(md('with-node')), { node: 'kind-worker' });
  assert.deepEqual(await reviewer.authenticate(md('pod-only')), { node: 'kind-worker2' });
  assert.match(
    JSON.stringify(await reviewer.authenticate(md('other-sa'))),
    /system:serviceaccount:demo:sleep is not a node agent's service account/,
  );
  assert.match(JSON.stringify(await reviewer.authenticate(md('unknown'))), /did not accept the token: invalid bearer token/);
  assert.match(JSON.stringify(await reviewer.authenticate(md())), /no bearer token/);
  const reviews = kube.requests.filter((r) => r.startsWith('POST /apis/authentication.k8s.io/v1/tokenreviews')).length;
  await reviewer.authenticate(md('with-node'));
  assert.equal(kube.requests.filter((r) => r.startsWith('POST /apis/authentication.k8s.io/v1/tokenreviews')).length, reviews, 'cached');
});

test('an optional kind the server does not serve (a CRD not installed) is synced and empty, not waited for', async () => {
  const informer = new Informer<Gateway>(client, '/apis/example.dev/v1/missing', log, { optional: true }).start();
  try {
    await waitFor('synced', () => informer.synced, 2000);
    assert.deepEqual(informer.list(), []);
  } finally {
    informer.stop();
  }
});

/** The cluster of the waypoint test: demo (ambient) with sleep, web (service web) and Istio's waypoint for it, and an ingress Gateway. */
function waypointCluster() {
  const web = fixture<Pod>('pod');
  Object.assign(web.metadata, { name: 'web-5b8d7c9f6-qz4lm', uid: 'a4e9c2d1-6b3f-4f8e-8c7a-1d2e3f4a5b6c', labels: { app: 'web' } });
  Object.assign(web.spec, { nodeName: 'kind-worker2', serviceAccountName: 'web' });
  Object.assign(web.status, { podIP: '10.244.2.5', podIPs: [{ ip: '10.244.2.5' }] });
  const svc = fixture<Service>('service');
  svc.metadata.labels = { app: 'web', 'istio.io/use-waypoint': 'waypoint' };
  return {
    ns: fixture<Namespace>('namespace'),
    sleep: fixture<Pod>('pod'),
    web,
    svc,
    slice: fixture<EndpointSlice>('endpointslice'),
    gateway: fixture<Gateway>('gateway'),
    ingress: fixture<Gateway>('gateway-ingress'),
    waypointPod: fixture<Pod>('waypoint-pod'),
    waypointSvc: fixture<Service>('waypoint-service'),
  };
}

const policyDoc = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'demo' },
  spec,
});

test('the cluster view fills waypoints from Gateways of class istio-waypoint and istio.io/use-waypoint labels, as they change', async () => {
  const api = new FakeKube();
  await new Promise<void>((r) => api.server.listen(0, '127.0.0.1', () => r()));
  const c = new KubeClient({ server: `http://127.0.0.1:${(api.server.address() as AddressInfo).port}` });
  const o = waypointCluster();
  const put = (x: { metadata: { name: string } }, kind: string): void => api.put({ kind, ...x });
  put(o.ns, 'Namespace');
  for (const p of [o.sleep, o.web, o.waypointPod]) put(p, 'Pod');
  for (const s of [o.svc, o.waypointSvc]) put(s, 'Service');
  put(o.slice, 'EndpointSlice');
  for (const g of [o.gateway, o.ingress]) put(g, 'Gateway');
  const source = new KubeClusterSource(c, log);
  const base: MeshConfig = {
    trustDomain: 'cluster.local',
    ca: { dir: '' },
    nodes: [],
    workloads: [],
    services: [],
    policies: [],
    rootNamespace: 'istio-system',
    controlPlane: { tokens: [] },
    policyDocs: [
      policyDoc('web-admin', {
        targetRefs: [{ kind: 'Service', group: '', name: 'web' }],
        action: 'DENY',
        rules: [{ to: [{ operation: { paths: ['/admin'] } }] }],
      }),
      policyDoc('web-get', { selector: { matchLabels: { app: 'web' } }, rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }),
    ],
  };
  const address: GatewayAddress = { destination: { kind: 'address', network: '', ip: '10.96.200.17' }, hboneMtlsPort: 15008 };
  const uid = (p: Pod): string => podUid(p);
  try {
    await source.start();
    let m = source.mesh(base);
    assert.deepEqual(
      m.waypoints,
      [{ name: 'waypoint', namespace: 'demo', for: 'service', address, serviceAccount: 'waypoint' }],
      'its VIP from the status Istio writes',
    );
    assert.deepEqual(m.services.find((s) => s.name === 'web')?.waypoint, address, "the service's own label");
    assert.equal(m.services.find((s) => s.name === 'waypoint')?.waypoint, undefined);
    assert.deepEqual(
      m.workloads.filter((w) => w.waypoint).map((w) => w.uid),
      [],
      'a waypoint for services: pods go direct',
    );
    assert.deepEqual(m.notes, [
      'policies[0] (demo/web-admin) spec.targetRefs: an L7 policy of the waypoint, which enforces it; not converted for the node tunnel',
    ]);
    assert.equal(m.warnings?.length, 1, 'nothing about the ingress Gateway (another class), one about web-get');
    assert.match(
      m.warnings?.[0] ?? '',
      new RegExp(
        `^policies\\[1\\] \\(demo/web-get\\) spec\\.rules\\[0\\]\\.to\\[0\\]\\.operation\\.methods: .*; workload ${uid(o.web).replace(/\//g, '\\/')} sits behind waypoint demo/waypoint`,
      ),
    );

    // The namespace opts in and the waypoint takes all traffic: every pod but the waypoint's own.
    o.ns.metadata.labels = { ...o.ns.metadata.labels, 'istio.io/use-waypoint': 'waypoint' };
    put(o.ns, 'Namespace');
    o.gateway.metadata.labels = { 'istio.io/waypoint-for': 'all' };
    put(o.gateway, 'Gateway');
    await waitFor(
      'the watched labels',
      () => source.mesh(base).waypoints?.[0]?.for === 'all' && source.mesh(base).workloads.some((w) => w.waypoint),
    );
    m = source.mesh(base);
    assert.deepEqual(
      m.workloads.map((w) => [w.uid, w.waypoint?.destination]),
      [
        [uid(o.sleep), address.destination],
        [uid(o.web), address.destination],
        [uid(o.waypointPod), undefined],
      ],
    );
    assert.equal(
      capturedByNode(m.workloads.find((w) => w.uid === uid(o.waypointPod)) ?? assert.fail('no waypoint pod')),
      false,
      'never enrolled',
    );
    assert.equal(capturedByNode(m.workloads.find((w) => w.uid === uid(o.web)) ?? assert.fail('no web pod')), true);

    // Without a status address, the waypoint's own service still gives its VIP; a service says none.
    delete o.gateway.status;
    put(o.gateway, 'Gateway');
    o.svc.metadata.labels = { app: 'web', 'istio.io/use-waypoint': 'none' };
    put(o.svc, 'Service');
    await waitFor('the service opts out', () => !source.mesh(base).services.find((s) => s.name === 'web')?.waypoint);
    assert.deepEqual(source.mesh(base).waypoints?.[0]?.address, address);

    // The Gateway goes: nobody uses a waypoint, and the namespace's label is a warning naming it.
    api.delete('Gateway', 'demo', 'waypoint');
    await waitFor('the Gateway deleted', () => source.mesh(base).waypoints?.length === 0);
    m = source.mesh(base);
    assert.deepEqual(
      m.workloads.filter((w) => w.waypoint).map((w) => w.uid),
      [],
    );
    assert.ok(
      m.warnings?.includes(
        'Namespace demo metadata.labels.istio.io/use-waypoint: names waypoint demo/waypoint, which no Gateway of class istio-waypoint declares; declare it or fix the label (got "waypoint")',
      ),
      m.warnings?.join('\n'),
    );
  } finally {
    source.stop();
    api.server.closeAllConnections();
    api.server.close();
  }
});

test('a waypoint without status nor service is reached at its pod; one with neither pods nor address is a warning, not a crash', () => {
  const o = waypointCluster();
  delete o.gateway.status;
  const cfg = (pods: Pod[]): MeshConfig => {
    const { workloads, services } = meshFromCluster({ pods, namespaces: [o.ns], services: [o.svc], slices: [o.slice] });
    return {
      trustDomain: 'cluster.local',
      ca: { dir: '' },
      nodes: [],
      workloads,
      services,
      policies: [],
      rootNamespace: 'istio-system',
      controlPlane: { tokens: [] },
    };
  };
  const problems: string[] = [];
  const docs = waypointDocs({ gateways: [o.gateway, o.ingress], namespaces: [o.ns], services: [o.svc], mesh: cfg([]).services });
  assert.equal(docs.length, 2, 'the waypoint Gateway and the labelled service; not the ingress, not the unlabelled namespace');
  const withPod = cfg([o.web, o.waypointPod]);
  applyWaypointDocs(withPod, docs, 'cluster', (at, _v, what) => problems.push(`${at}: ${what}`));
  assert.deepEqual(problems, []);
  assert.deepEqual(withPod.waypoints?.[0]?.address.destination, { kind: 'address', network: '', ip: '10.244.1.9' });
  const none = cfg([o.web]);
  const unreachable: string[] = [];
  applyWaypointDocs(none, docs, 'cluster', (at, _v, what) => unreachable.push(`${at}: ${what}`));
  assert.deepEqual(none.waypoints, []);
  assert.equal(none.services[0]?.waypoint, undefined);
  assert.match(unreachable.join('\n'), /^cluster\[0\] \(Gateway demo\/waypoint\) spec\.addresses: the waypoint has no address/);
});
