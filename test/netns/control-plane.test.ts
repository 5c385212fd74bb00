// Root: `ambit control-plane` in the switch namespace serving delta xDS and
// the CA over TLS on :15012; one `ambit node --xds` per node (real
// processes, one tunnel worker each). Covers L4 authorization at the
// destination (principal, namespace, port, IP block, dry-run, STRICT and
// PERMISSIVE mTLS), a live policy change closing a now-denied connection,
// the control plane going away and coming back, a malformed resource
// NACKed while the last good state serves, a CA answer for the wrong
// identity, and requests for identities that are not on the asking node.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { parseConfig } from '../../src/sources/config';
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
  untilReady,
  workloadOf,
} from '../helpers/fixture';
import { must } from '../helpers/must';
import { collect, jsonLines, lastJson, waitFor, waitForLine } from '../helpers/proc';
import { expectRefusal } from '../helpers/refusal';
import { SWITCH_IP, type TestNode, type TestPod, type Topology } from '../helpers/topology';

const PORT = 15012;
const FIXTURE = path.resolve(__dirname, '../helpers/xds-fixture.js');
const td = 'cluster.local';

describe('control plane: delta xDS, CA and L4 authorization across nodes', () => {
  let topo: Topology;
  let dir: string;
  let configFile: string;
  let cp: ChildProcess | undefined;
  const agents = new Map<string, { child: ChildProcess; lines: Record<string, unknown>[] }>();
  let baseDoc: Record<string, unknown>;
  const cleanup = new Cleanup();

  // n1: sleep (ns client), other (ns other), legacy (not in the mesh: plaintext). n2: web, db (ns server), n2-p3 not in the mesh.
  const roles = (): Record<string, { ns: string; sa: string; app: string; mesh: boolean }> => ({
    [topo.pod(1, 1).uid]: { ns: 'client', sa: 'sleep', app: 'sleep', mesh: true },
    [topo.pod(1, 2).uid]: { ns: 'other', sa: 'other', app: 'other', mesh: true },
    [topo.pod(1, 3).uid]: { ns: 'legacy', sa: 'legacy', app: 'legacy', mesh: false },
    [topo.pod(2, 1).uid]: { ns: 'server', sa: 'web', app: 'web', mesh: true },
    [topo.pod(2, 2).uid]: { ns: 'server', sa: 'db', app: 'db', mesh: true },
    [topo.pod(2, 3).uid]: { ns: 'server', sa: 'plain', app: 'plain', mesh: false },
  });
  const sleep = (): TestPod => topo.pod(1, 1);
  const other = (): TestPod => topo.pod(1, 2);
  const legacy = (): TestPod => topo.pod(1, 3);
  const web = (): TestPod => topo.pod(2, 1);
  const db = (): TestPod => topo.pod(2, 2);
  const tokenFile = (node: TestNode): string => path.join(dir, `${node.name}.token`);

  function writeConfig(policies: unknown[], extra: Record<string, unknown> = {}): void {
    fs.writeFileSync(configFile, YAML.stringify({ ...baseDoc, policies, ...extra }));
  }

  /** The policy names the destination node holds once it has the file's state. */
  async function untilApplied(policies: unknown[], extra: Record<string, unknown> = {}): Promise<void> {
    writeConfig(policies, extra);
    const want = parseConfig(fs.readFileSync(configFile, 'utf8'))
      .policies.map((p) => `${p.namespace}/${p.name}`)
      .sort();
    for (const node of topo.nodes) {
      await waitFor(
        `${node.name} to hold policies ${want.join(', ') || '(none)'}`,
        async () => {
          const dump = await configDump<{ config: { policies: { namespace: string; name: string }[] } }>(node);
          return JSON.stringify(dump.config.policies.map((p) => `${p.namespace}/${p.name}`).sort()) === JSON.stringify(want);
        },
        15_000,
        100,
      );
    }
  }

  function startControlPlane(): ChildProcess {
    const child = topo.spawnInSwitch(process.execPath, [
      CLI,
      'control-plane',
      '--config',
      configFile,
      '--listen',
      `${SWITCH_IP}:${PORT}`,
      '--server-ip',
      SWITCH_IP,
    ]);
    cp = child;
    return child;
  }

  async function startAgent(node: TestNode, address = `${SWITCH_IP}:${PORT}`): Promise<ChildProcess> {
    const child = spawnNodeAgent(
      topo,
      node,
      [
        '--xds',
        address,
        '--xds-root',
        path.join(dir, 'ca', 'root-cert.pem'),
        '--xds-token',
        tokenFile(node),
        '--pods',
        path.join(dir, `pods-${node.name}.yaml`),
        '--workers',
        '1',
      ],
      { INSTANCE_IP: node.wireIp },
    );
    agents.set(node.name, { child, lines: jsonLines(child) });
    return child;
  }

  async function stopAgent(node: TestNode): Promise<void> {
    const a = agents.get(node.name);
    if (!a) return;
    a.child.kill('SIGKILL');
    await waitExit(a.child);
    agents.delete(node.name);
  }

  const ready = (node: TestNode): Promise<{ status: number; body: string }> =>
    httpInNetns(node, '127.0.0.1', 15021, 'GET', '/healthz/ready');

  async function serve(pod: TestPod, port: number): Promise<void> {
    const app = topo.spawnInPod(pod, process.execPath, [PODAPP, 'whoami', String(port)]);
    await waitForLine(app, (l) => l.includes('listening'), `whoami ${pod.uid}:${port}`);
  }

  /** Whether one connection from → to:port gets through (the server's first line arrives). */
  async function reaches(from: TestPod, to: TestPod, port: number): Promise<boolean> {
    return (await dialOutcome(topo, from, to.ip, port, 3000)) === 'connected';
  }

  /**
   * One connection from → to:port is denied by policy at the destination: the app's connection is
   * closed with not a byte within 3 s, the destination counts one more `denied`, and a mesh source one
   * more refusal status (the 401) on its side.
   */
  async function denied(from: TestPod, to: TestPod, port: number, what: string): Promise<void> {
    const fromMesh = roles()[from.uid]?.mesh === true;
    const inBefore = await connectionFailures(to.node, 'inbound', 'denied');
    const outBefore = await connectionFailures(from.node, 'outbound', 'AMBIT_E_HBONE_STATUS');
    await expectRefusal(dialOutcome(topo, from, to.ip, port, 3000), { closed: true }, 3000, what);
    await waitFor(
      `${what}: counted as denied on ${to.node.name}`,
      async () => (await connectionFailures(to.node, 'inbound', 'denied')) === inBefore + 1,
    );
    if (fromMesh)
      await waitFor(
        `${what}: the refusal status counted on ${from.node.name}`,
        async () => (await connectionFailures(from.node, 'outbound', 'AMBIT_E_HBONE_STATUS')) === outBefore + 1,
      );
  }

  const logged = (
    node: TestNode,
    msg: string,
    match: (l: Record<string, unknown>) => boolean = () => true,
  ): Record<string, unknown> | undefined => must(agents.get(node.name), `agent ${node.name}`).lines.find((l) => l.msg === msg && match(l));

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 3 }));
    configFile = path.join(dir, 'mesh.yaml');
    const tokens = topo.nodes.map((n) => {
      const token = randomBytes(24).toString('base64url');
      fs.writeFileSync(tokenFile(n), `${token}\n`, { mode: 0o600 });
      return { node: n.name, sha256: createHash('sha256').update(token).digest('hex') };
    });
    const r = roles();
    baseDoc = {
      trustDomain: td,
      ca: { dir: path.join(dir, 'ca') },
      nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
      workloads: topo.pods.map((p) => {
        const { netns: _n, cgroup: _c, ...w } = workloadOf(p);
        const role = must(r[p.uid], `the role of ${p.uid}`);
        return {
          ...w,
          namespace: role.ns,
          serviceAccount: role.sa,
          labels: { app: role.app },
          protocol: role.mesh ? 'HBONE' : 'NONE',
        };
      }),
      services: [
        {
          name: 'web',
          namespace: 'server',
          hostname: 'web.server.svc.cluster.local',
          addresses: ['10.96.0.20'],
          ports: [{ port: 80, targetPort: 8080 }],
          selector: { app: 'web' },
        },
      ],
      controlPlane: { tokens },
    };
    writeConfig([]);
    for (const n of topo.nodes) {
      fs.writeFileSync(
        path.join(dir, `pods-${n.name}.yaml`),
        YAML.stringify({ pods: n.pods.map((p) => ({ uid: p.uid, netns: p.netnsPath, cgroup: p.cgroup })) }),
      );
    }
    await waitForLine(startControlPlane(), (l) => l.includes('control plane serving'), 'control plane serving');
    for (const n of topo.nodes) await startAgent(n);
    for (const n of topo.nodes) await untilReady(n);
    for (const port of [8080, 9090]) for (const pod of [web(), db()]) await serve(pod, port);
  });

  after(() => cleanup.run());

  test('nodes take workloads, services and certificates from the control plane; the server sees the client identity', async () => {
    const r = await dialFrom(topo, sleep(), web().ip, 8080, 20, 5);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    const viaVip = await dialFrom(topo, sleep(), '10.96.0.20', 80, 5, 5);
    assert.equal(viaVip.ok, 5, 'the service VIP resolves to its endpoint from xDS');
    const seen = await waitFor('the destination access log', () =>
      logged(
        topo.node(2),
        'connection complete',
        (l) => l.direction === 'inbound' && l['src.identity'] === `spiffe://${td}/ns/client/sa/sleep`,
      ),
    );
    assert.equal(seen['dst.identity'], `spiffe://${td}/ns/server/sa/web`);
    const dump = await configDump<{ certificates: { identity: string }[] }>(topo.node(1));
    assert.deepEqual(dump.certificates.map((c) => c.identity).sort(), [
      `spiffe://${td}/ns/client/sa/sleep`,
      `spiffe://${td}/ns/other/sa/other`,
    ]);
  });

  const ap = (name: string, ns: string, spec: Record<string, unknown>, annotations?: Record<string, string>): Record<string, unknown> => ({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace: ns, ...(annotations ? { annotations } : {}) },
    spec,
  });
  const pa = (name: string, ns: string, spec: Record<string, unknown>): Record<string, unknown> => ({
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name, namespace: ns },
    spec,
  });

  test('policy matrix at the destination: principal, namespace, port, IP block, DENY before ALLOW, dry-run', async () => {
    await untilApplied([
      // web: only sleep's identity, only on 8080.
      ap('web-from-sleep', 'server', {
        selector: { matchLabels: { app: 'web' } },
        action: 'ALLOW',
        rules: [{ from: [{ source: { principals: [`${td}/ns/client/sa/sleep`] } }], to: [{ operation: { ports: ['8080'] } }] }],
      }),
      // db: namespaces client and other, but never other's pod address.
      ap('db-from-clients', 'server', {
        selector: { matchLabels: { app: 'db' } },
        rules: [{ from: [{ source: { namespaces: ['client', 'other'] } }] }],
      }),
      ap('db-deny-ip', 'server', {
        selector: { matchLabels: { app: 'db' } },
        action: 'DENY',
        rules: [{ from: [{ source: { ipBlocks: [`${other().ip}/32`] } }] }],
      }),
      // Dry-run: would deny everything on db, enforces nothing.
      ap(
        'db-dry-deny',
        'server',
        { selector: { matchLabels: { app: 'db' } }, action: 'DENY', rules: [{}] },
        { 'istio.io/dry-run': 'true' },
      ),
    ]);
    assert.equal(await reaches(sleep(), web(), 8080), true, 'allowed: the principal and the port match');
    await denied(other(), web(), 8080, 'denied by principal');
    await denied(sleep(), web(), 9090, 'denied by port');
    assert.equal(await reaches(sleep(), db(), 8080), true, 'allowed by namespace (the dry-run DENY is not enforced)');
    await denied(other(), db(), 8080, 'denied by IP block: DENY before ALLOW');
    await denied(legacy(), db(), 9090, 'plaintext has no namespace: no ALLOW matches');

    const n2 = topo.node(2);
    const refusal = await waitFor('the refusal logged with its reason', () =>
      logged(n2, 'HBONE stream refused', (l) => l.reason === 'denied' && l.policy === 'server/db-deny-ip'),
    );
    assert.equal(refusal.status, 401);
    await waitFor('a refusal for no matching ALLOW', () => logged(n2, 'HBONE stream refused', (l) => l.why === 'no_allow_policy_matched'));
    const allowed = await waitFor('the deciding ALLOW in the access log', () =>
      logged(n2, 'connection complete', (l) => l.policy === 'server/web-from-sleep'),
    );
    assert.equal(allowed['src.identity'], `spiffe://${td}/ns/client/sa/sleep`);
    const dry = await waitFor('the dry-run result logged', () => logged(n2, 'dry-run policies evaluated (not enforced)'));
    assert.deepEqual(dry.dryRun, [{ policy: 'server/db-dry-deny', action: 'DENY', matched: true }]);
  });

  test('PeerAuthentication: PERMISSIVE accepts plaintext, STRICT refuses it, a port exception reopens one port', async () => {
    await untilApplied([]);
    assert.equal(await reaches(legacy(), db(), 8080), true, 'no PeerAuthentication: PERMISSIVE');
    await untilApplied([pa('default', 'server', { mtls: { mode: 'STRICT' } })]);
    await denied(legacy(), db(), 8080, 'STRICT: plaintext refused');
    assert.equal(await reaches(sleep(), db(), 8080), true, 'STRICT: mutual TLS accepted');
    await waitFor('the plaintext refusal', () =>
      logged(topo.node(2), 'plaintext connection refused', (l) => l.policy === 'server/ambit-peerauthn-default'),
    );
    await untilApplied([
      pa('default', 'server', { mtls: { mode: 'STRICT' } }),
      pa('db-metrics', 'server', {
        selector: { matchLabels: { app: 'db' } },
        mtls: { mode: 'STRICT' },
        portLevelMtls: { 9090: { mode: 'PERMISSIVE' } },
      }),
    ]);
    assert.equal(await reaches(legacy(), db(), 9090), true, 'port 9090 is PERMISSIVE');
    await denied(legacy(), db(), 8080, 'the rest stays STRICT');
    await denied(legacy(), web(), 9090, 'web has no exception');
  });

  test('a policy change closes open connections that it now denies, and leaves allowed ones open', async (t) => {
    await untilApplied([]);
    const streamTo = (from: TestPod, to: TestPod): ChildProcess =>
      topo.spawnInPod(from, process.execPath, [PODAPP, 'stream', to.ip, '8080', '40', '20']);
    const doomed = streamTo(sleep(), web());
    const kept = streamTo(other(), web());
    const doomedDone = collect(doomed);
    const keptDone = collect(kept);
    const n2 = topo.node(2);
    const open =
      (who: string): ((l: Record<string, unknown>) => boolean) =>
      (l) =>
        l['src.identity'] === who;
    // Both are flowing before the change.
    await waitFor('both streams established', async () => {
      const m = await httpInNetns(n2, '127.0.0.1', 15020, 'GET', '/metrics');
      return (
        /istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*source_principal="spiffe:\/\/cluster.local\/ns\/other\/sa\/other"/.test(
          m.body,
        ) &&
        /istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*source_principal="spiffe:\/\/cluster.local\/ns\/client\/sa\/sleep"/.test(
          m.body,
        )
      );
    });
    const started = Date.now();
    await untilApplied([
      ap('deny-sleep', 'server', { action: 'DENY', rules: [{ from: [{ source: { principals: [`${td}/ns/client/sa/sleep`] } }] }] }),
    ]);
    const closedLine = await waitFor('the closure logged', () =>
      logged(n2, 'open connection closed: the policies now deny it', open(`spiffe://${td}/ns/client/sa/sleep`)),
    );
    assert.equal(closedLine.policy, 'server/deny-sleep');
    t.diagnostic(
      `file written → connection closed on the destination node: ${(closedLine.time as number) - started} ms (poll 500 ms, push, NACK-checked apply, re-check)`,
    );
    const d = lastJson<{ echoed: number; ms: number }>((await doomedDone).stdout);
    assert.ok(d.echoed < 40 * 1024 * 1024 && Date.now() - started < 15_000, `the denied stream ended early (${JSON.stringify(d)})`);
    assert.equal(kept.exitCode, null, 'the allowed stream is still running');
    const k = lastJson<{ echoed: number; error?: string }>((await keptDone).stdout);
    assert.equal(k.error, undefined);
    assert.equal(k.echoed, 40 * 1024 * 1024, 'the allowed stream was echoed completely');
    await untilApplied([]);
  });

  test('the control plane goes away: nodes keep serving known workloads, then resync when it is back', async () => {
    await untilApplied([]);
    const n1 = topo.node(1);
    const stopped = must(cp, 'the control plane');
    stopped.kill('SIGKILL');
    await waitExit(stopped);
    await waitFor('n1 noticing', () => logged(n1, 'xDS stream lost; serving the state held'));
    // Existing sessions and new connections (new TLS sessions too) between known workloads.
    assert.equal((await dialFrom(topo, sleep(), web().ip, 8080, 20, 5)).ok, 20);
    assert.equal((await dialFrom(topo, other(), db().ip, 8080, 5, 5)).ok, 5);
    assert.equal((await ready(n1)).status, 200, 'still ready: serving with the state it has');
    assert.match((await httpInNetns(n1, '127.0.0.1', 15020, 'GET', '/metrics')).body, /^ambit_xds_connected 0$/m);
    // Changed while away: delivered when the control plane is back.
    writeConfig([ap('deny-other', 'server', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['other'] } }] }] })]);
    await waitForLine(startControlPlane(), (l) => l.includes('control plane serving'), 'control plane serving again');
    await untilApplied([ap('deny-other', 'server', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['other'] } }] }] })]);
    await denied(other(), db(), 8080, 'the new policy is enforced after the resync');
    assert.match((await httpInNetns(n1, '127.0.0.1', 15020, 'GET', '/metrics')).body, /^ambit_xds_connected 1$/m);
    const dump = await configDump<{ source: { connected: boolean; connects: number } }>(n1);
    assert.equal(dump.source.connected, true);
    assert.ok(dump.source.connects >= 2, 'reconnected');
    assert.equal(await reaches(sleep(), db(), 8080), true);
    await untilApplied([]);
  });

  test("a node whose token is another node's is refused; a node may only get certificates for its own workloads", async () => {
    const n1 = topo.node(1);
    // The CA check: n1's token asking for web's identity (web runs on n2).
    const script = `
      const { IstioCaClient } = require(${JSON.stringify(path.resolve(__dirname, '../../src/identity/ca-client.js'))});
      const { requestCertificate } = require(${JSON.stringify(path.resolve(__dirname, '../../src/identity/cert-manager.js'))});
      const ca = new IstioCaClient({ address: '${SWITCH_IP}:${PORT}', rootsPem: require('fs').readFileSync(${JSON.stringify(path.join(dir, 'ca', 'root-cert.pem'))}, 'utf8'), tokenFile: ${JSON.stringify(tokenFile(n1))} });
      requestCertificate(ca, 'spiffe://${td}/ns/server/sa/web', 600).then(() => console.log('ISSUED'), (e) => console.log('REFUSED ' + e.message)).finally(() => ca.close());`;
    const r = await collect(topo.spawnInNode(n1, process.execPath, ['-e', script]));
    assert.match(
      r.stdout,
      /REFUSED .*PERMISSION_DENIED.*node n1 asked for spiffe:\/\/cluster.local\/ns\/server\/sa\/web/,
      r.stdout + r.stderr,
    );

    // The xDS check: an agent for n1 presenting n2's token.
    // In the switch netns: n1's own admin ports are taken by its real agent; the refusal comes before any datapath work.
    const fake = topo.spawnInSwitch(process.execPath, [
      CLI,
      'node',
      '--xds',
      `${SWITCH_IP}:${PORT}`,
      '--xds-root',
      path.join(dir, 'ca', 'root-cert.pem'),
      '--xds-token',
      tokenFile(topo.node(2)),
      '--node',
      n1.name,
      '--pods-cgroup',
      n1.podsCgroup,
      '--pin-dir',
      `${pinDirFor(topo, n1)}-fake`,
      '--workers',
      '0',
    ]);
    try {
      const lost = await waitForLine(fake, (l) => l.includes('xDS stream lost'), 'the refusal');
      assert.match(lost, /PERMISSION_DENIED: the token is node n2's but the stream says NODE_NAME \\"n1\\"/);
    } finally {
      fake.kill('SIGKILL');
      await waitExit(fake);
    }
  });

  test('a malformed resource is NACKed and the last good state keeps serving; a CA answer for the wrong identity is refused', async () => {
    const n1 = topo.node(1);
    const fixturePort = PORT + 1;
    const fixture = topo.spawnInSwitch(process.execPath, [FIXTURE, configFile, `${SWITCH_IP}:${fixturePort}`, SWITCH_IP, db().uid]);
    const fixtureLines = jsonLines(fixture);
    await waitFor('fixture serving', () => fixtureLines.find((l) => l.msg === 'fixture serving'));
    await stopAgent(n1);
    try {
      await startAgent(n1, `${SWITCH_IP}:${fixturePort}`);
      await untilReady(n1);
      assert.equal(await reaches(sleep(), db(), 8080), true);
      fixture.kill('SIGUSR2');
      const nack = await waitFor('the NACK at the server', () =>
        fixtureLines.find((l) => l.msg === 'xDS response rejected by the node (NACK)'),
      );
      assert.match(String(nack.err), new RegExp(`${db().uid}: addresses\\[0\\] "0ac8020c07" is not an IP address`));
      assert.ok(logged(n1, 'xDS response rejected (NACK); the last good state keeps serving'));
      assert.equal(await reaches(sleep(), db(), 8080), true, 'the last good state keeps serving');
      const dump = await configDump<{ config: { workloads: { uid: string; addresses: string[] }[] } }>(n1);
      assert.deepEqual(dump.config.workloads.find((w) => w.uid === db().uid)?.addresses, [db().ip]);
    } finally {
      fixture.kill('SIGKILL');
      await stopAgent(n1);
    }

    // A CA that signs for another identity: the node refuses the certificate and does not enrol the pod.
    const wrong = topo.spawnInSwitch(process.execPath, [
      FIXTURE,
      configFile,
      `${SWITCH_IP}:${fixturePort}`,
      SWITCH_IP,
      db().uid,
      '--wrong-identity',
    ]);
    const wrongLines = jsonLines(wrong);
    await waitFor('fixture serving', () => wrongLines.find((l) => l.msg === 'fixture serving'));
    try {
      await startAgent(n1, `${SWITCH_IP}:${fixturePort}`);
      const failed = await waitFor('the enrolment failure', () => logged(n1, 'pod enrolment failed; its traffic is not captured'), 20_000);
      assert.match(
        String(failed.err),
        /issued a certificate for \["spiffe:\/\/cluster.local\/ns\/default\/sa\/impostor"\] when spiffe:\/\/cluster.local\/ns\/(client|other)\/sa\/(sleep|other) was asked/,
      );
      const r = await ready(n1);
      assert.equal(r.status, 503, 'not ready: its pods have no certificate');
    } finally {
      wrong.kill('SIGKILL');
      await stopAgent(n1);
      await startAgent(n1);
      await untilReady(n1);
    }
  });
});
