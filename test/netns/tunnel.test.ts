// Root: the HBONE tunnel end to end on the test bed. Both nodes' agents run
// in this process (PodAgent, the same composition root `ambit node` uses),
// with their outgoing sockets created in their node's netns, so the test
// can read their counters and swap their authorizer.
// Topology: 2 nodes × 3 pods. p1, p2 in the mesh (HBONE); n2-p3 is not in
// the configuration at all (an unknown destination).
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type tls from 'node:tls';
import { BuiltinCa, EC_ALG, toPem } from '../../src/identity/builtin-ca';
import { createLogger } from '../../src/observability/log';
import type { ConnectionFacts } from '../../src/policy/authorize';
import { PodAgent } from '../../src/roots/pod-agent';
import type { MeshConfig } from '../../src/state/types';
import type { Tunnel } from '../../src/tunnel/tunnel';
import { Cleanup } from '../helpers/cleanup';
import { dialFrom, meshConfig, PODAPP, pinDirFor, requireRoot, tcpAttempt, testBed, workloadOf } from '../helpers/fixture';
import { attempt } from '../helpers/hbone-client';
import { at, must } from '../helpers/must';
import { collect, waitFor, waitForLine } from '../helpers/proc';
import { expectRefusal, type Outcome, type Refusal } from '../helpers/refusal';
import type { TestPod, Topology } from '../helpers/topology';

const VIP = '10.96.0.10';
/** How long a refusal may take: each is decided on the first bytes, so this is generous. */
const REFUSED_WITHIN_MS = 2000;

describe('HBONE tunnel', () => {
  let topo: Topology;
  let dir: string;
  let ca: BuiltinCa;
  const apps: PodAgent[] = [];
  const seen: ConnectionFacts[] = [];
  const cleanup = new Cleanup();
  const log = createLogger(process.env.AMBIT_TEST_LOG ?? 'silent');

  const identity = (sa: string, td = 'cluster.local'): string => `spiffe://${td}/ns/default/sa/${sa}`;
  /** The agent of node i (1-based) and its tunnel. */
  const agent = (i: number): PodAgent => at(apps, i - 1, 'agents');
  const tunnel = (i: number): Tunnel => must(agent(i).tunnel, `the tunnel of n${i}`);

  function config(): MeshConfig {
    const inMesh = topo.pods.filter((p) => p.name !== 'p3');
    return meshConfig(topo, dir, {
      workloads: inMesh.map((p) => ({
        ...workloadOf(p),
        serviceAccount: `sa-${p.node.name}-${p.name}`,
        labels: p.node.index === 2 ? { app: 'echo' } : { app: 'client' },
      })),
      services: [
        {
          name: 'echo',
          namespace: 'default',
          hostname: 'echo.default.svc.cluster.local',
          addresses: [VIP],
          ports: [{ port: 80, targetPort: 8080 }],
          selector: { app: 'echo' },
        },
      ],
    });
  }

  async function whoami(pod: TestPod, port = 8080): Promise<void> {
    const app = topo.spawnInPod(pod, process.execPath, [PODAPP, 'whoami', String(port)]);
    await waitForLine(app, (l) => l.includes('listening'), `whoami in ${pod.uid}`);
  }

  before(async () => {
    requireRoot();
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 3 }));
    cleanup.add('the agents', () => {
      for (const a of apps.splice(0)) a.stop();
    });
    ca = await BuiltinCa.open(path.join(dir, 'ca'));
    for (const node of topo.nodes) {
      const app = await PodAgent.start({
        config: config(),
        scope: { node: node.name },
        podsCgroup: node.podsCgroup,
        pinDir: pinDirFor(topo, node),
        certTtlSeconds: 4,
        log,
        authorizer: () => ({
          check: (c) => {
            seen.push(c);
            return { allow: true };
          },
        }),
      });
      apps.push(app);
    }
    for (const pod of topo.pods) await whoami(pod);
  });

  after(() => cleanup.run());

  test("cross-node and same-node traffic goes through HBONE; the server side sees the client's identity", async () => {
    const client = topo.pod(1, 1);
    for (const server of [topo.pod(2, 1), topo.pod(1, 2)]) {
      seen.length = 0;
      const before = tunnel(server.node.index).handshakes();
      const r = await dialFrom(topo, client, server.ip, 8080, 20, 5);
      assert.equal(r.failed, 0, JSON.stringify(r.errors));
      assert.deepEqual(r.peers, { [`${server.ip}:8080`]: 20 });
      assert.deepEqual(
        r.firstLines,
        { [JSON.stringify({ local: `${server.ip}:8080`, remote: server.ip })]: 20 },
        'delivered from inside the server pod',
      );
      assert.equal(seen.length, 20);
      assert.ok(
        seen.every((c) => c.srcIdentity === identity('sa-n1-p1') && c.dstPort === 8080 && c.dst.uid === server.uid),
        JSON.stringify(seen[0]),
      );
      assert.ok(tunnel(server.node.index).handshakes() > before, 'arrived over mutual TLS on :15008');
    }
  });

  test('1,500 sequential connections share one pooled TLS session; no reset storm kills it', async () => {
    const server = topo.pod(2, 2);
    const client = topo.pod(1, 2);
    const opened = tunnel(1).pool.sessionsOpened;
    const handshakes = tunnel(2).handshakes();
    const r = await dialFrom(topo, client, server.ip, 8080, 1500, 1);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.equal(tunnel(1).pool.sessionsOpened - opened, 1, 'one session opened for the pair');
    assert.equal(tunnel(2).handshakes() - handshakes, 1, 'one TLS handshake at the destination');
  });

  test('service VIP traffic spreads across endpoints with port translation', async () => {
    seen.length = 0;
    const r = await dialFrom(topo, topo.pod(1, 1), VIP, 80, 100, 10);
    assert.equal(r.failed, 0, JSON.stringify(r.errors));
    assert.deepEqual(r.peers, { [`${VIP}:80`]: 100 }, 'the app still sees the VIP');
    const served = Object.entries(r.firstLines).map(([l, n]) => [(JSON.parse(l) as { local: string }).local, n]);
    assert.deepEqual(
      served.map(([l]) => l).sort(),
      [`${topo.pod(2, 1).ip}:8080`, `${topo.pod(2, 2).ip}:8080`],
      `both endpoints served: ${JSON.stringify(served)}`,
    );
  });

  test('an unknown destination passes through as plain TCP', async () => {
    const unknown = topo.pod(2, 3);
    const r = await dialFrom(topo, topo.pod(1, 1), unknown.ip, 8080);
    assert.deepEqual(
      r.firstLines,
      { [JSON.stringify({ local: `${unknown.ip}:8080`, remote: topo.pod(1, 1).ip })]: 1 },
      'dialed from inside the client pod: the source address is kept',
    );
  });

  describe('the HBONE listener refuses', () => {
    const target = (): TestPod => topo.pod(2, 1);

    /** A whole HBONE attempt from node 1's netns with the given client TLS settings (see attempt()). */
    const tryConnect = async (
      clientTls: tls.ConnectionOptions | Promise<tls.ConnectionOptions>,
      authority = `${target().ip}:8080`,
    ): Promise<Outcome> => attempt(topo.node(1).netnsPath, target().ip, await clientTls, authority);

    /** Node 2's inbound failures counted under reason. */
    async function inboundFailures(reason: string): Promise<number> {
      const m = await agent(2).metrics.registry.getSingleMetric('ambit_connection_failures_total')?.get();
      return m?.values.find((v) => v.labels.direction === 'inbound' && v.labels.reason === reason)?.value ?? 0;
    }

    /**
     * The attempt is refused as expected within REFUSED_WITHIN_MS, and the destination counted it under
     * reason. (A connection refused for its peer identity is counted twice: once for the connection and once
     * for the stream its first bytes had already opened, so the count is compared with "more than before".)
     */
    async function refusedAs(reason: string, attempt: () => Promise<Outcome>, refusal: Refusal, what = reason): Promise<void> {
      const before = await inboundFailures(reason);
      await expectRefusal(attempt(), refusal, REFUSED_WITHIN_MS, what);
      await waitFor(`${what}: counted as ${reason}`, async () => (await inboundFailures(reason)) > before, 2000);
    }

    async function certFor(id: string, signer: BuiltinCa, validity?: { notBefore: Date; notAfter: Date }): Promise<tls.ConnectionOptions> {
      const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      const cert = await signer.issue(keys.publicKey, id, validity);
      return { cert, key: toPem(Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), 'PRIVATE KEY') };
    }

    test('a valid client certificate gets 200 (control)', async () => {
      assert.equal(await tryConnect(await certFor(identity('tester'), ca)), 'status 200');
    });

    test('CONNECT answers: 400 bad or foreign authority, 503 tunnel port or nothing listening', async () => {
      const good = await certFor(identity('tester'), ca);
      const pod = target();
      await refusedAs('bad_authority', () => tryConnect(good, 'not-an-address'), { status: 400 }, 'an authority that is no address');
      await refusedAs(
        'authority_not_this_pod',
        () => tryConnect(good, `${topo.pod(2, 2).ip}:8080`),
        { status: 400 },
        'authority of another pod than the one the stream arrived at',
      );
      await refusedAs('tunnel_port', () => tryConnect(good, `${pod.ip}:15006`), { status: 503 }, 'a tunnel port');
      await refusedAs('upstream_connect', () => tryConnect(good, `${pod.ip}:9`), { status: 503 }, 'nothing listens there');
    });

    // Node's TLS server checks the chain after the handshake and closes without an alert; only a missing
    // certificate is refused by OpenSSL itself, with TLS 1.3's certificate_required alert. Each refusal is
    // also counted under its reason on the destination, so a close for some other cause does not pass.
    test('a certificate from another trust domain: closed, counted once as peer_identity', async () => {
      const before = await inboundFailures('peer_identity');
      await refusedAs('peer_identity', () => tryConnect(certFor(identity('tester', 'evil.local'), ca)), { closed: true });
      // The connection check and the stream check both see the peer; one connection is one refusal.
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await inboundFailures('peer_identity'), before + 1, 'one refused connection, counted once');
    });

    test('a certificate from another CA: closed, counted as tls_handshake', async () => {
      const other = await BuiltinCa.open(path.join(dir, 'other-ca'));
      await refusedAs('tls_handshake', () => tryConnect(certFor(identity('tester'), other)), { closed: true });
    });

    test('an expired certificate: closed, counted as tls_handshake', async () => {
      const expired = { notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) };
      await refusedAs('tls_handshake', () => tryConnect(certFor(identity('tester'), ca, expired)), { closed: true });
    });

    test('no client certificate: the certificate_required alert, counted as tls_handshake', async () => {
      await refusedAs('tls_handshake', () => tryConnect(Promise.resolve({})), { alert: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' });
    });

    test('plaintext: closed with not a byte sent (no tunnel opened), counted as tls_handshake', async () => {
      const pod = target();
      await refusedAs(
        'tls_handshake',
        () =>
          Promise.resolve(
            tcpAttempt(topo.node(1).netnsPath, pod.ip, 15008, `CONNECT ${pod.ip}:8080 HTTP/1.1\r\nHost: ${pod.ip}:8080\r\n\r\n`),
          ),
        { closed: true },
      );
    });
  });

  test("half-close crosses the tunnel: the app sees the client's FIN and can still answer", async () => {
    const server = topo.pod(2, 2);
    const sink = topo.spawnInPod(server, process.execPath, [PODAPP, 'sink', '9100']);
    await waitForLine(sink, (l) => l.includes('listening'), 'sink listening');
    const r = await collect(
      topo.spawnInPod(topo.pod(1, 1), process.execPath, [PODAPP, 'halfclose', server.ip, '9100', 'x'.repeat(100_000)]),
    );
    assert.deepEqual(JSON.parse(r.stdout.trim()), { reply: JSON.stringify({ got: 100_000 }) });
    sink.kill();
  });

  test('a certificate rotation during a long transfer does not break it', async () => {
    const requests = agent(1).certs.requests + agent(2).certs.requests;
    const child = topo.spawnInPod(topo.pod(1, 1), process.execPath, [PODAPP, 'stream', topo.pod(2, 1).ip, '8080', '8', '6']);
    const r = await collect(child);
    const result = JSON.parse(r.stdout.trim()) as { sent: number; echoed: number; error?: string };
    assert.equal(result.error, undefined);
    assert.equal(result.echoed, 8 * 1024 * 1024, 'every byte came back');
    assert.ok(
      agent(1).certs.requests + agent(2).certs.requests - requests >= 4,
      'certificates of both ends were renewed during the transfer (TTL 4 s)',
    );
    const after = await dialFrom(topo, topo.pod(1, 1), topo.pod(2, 1).ip, 8080, 5, 5);
    assert.equal(after.failed, 0, 'new connections work with the renewed certificates');
  });

  test('after teardown no namespace, cgroup or pin remains', async () => {
    await cleanup.run();
  });
});
