// Root: a real `ambit waypoint` routing a service by an Istio
// VirtualService, between a test client (an HBONE peer) and backend pods
// served by a real `ambit node`: fault aborts at their percentage, a fault
// delay, and a mirror whose copy reaches the mirror pod while the client
// gets the primary's answer at once.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type http2 from 'node:http2';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { Cleanup } from '../helpers/cleanup';
import { CLI, PODAPP, pinDirFor, requireRoot, testBed, workloadOf } from '../helpers/fixture';
import { certFor, connect, openSession } from '../helpers/hbone-client';
import { jsonLines, TIME_SCALE, waitFor, waitForLine } from '../helpers/proc';
import type { TestPod, Topology } from '../helpers/topology';

const GW = 'gateway.networking.k8s.io/gateway-name';
const VIP = { web: '10.96.0.30', shadow: '10.96.0.31' };

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request over its own CONNECT stream to the waypoint, authority VIP:port. */
async function request(session: http2.ClientHttp2Session, authority: string, urlPath: string): Promise<Answer> {
  const { outcome, stream } = await connect(session, authority);
  assert.ok(stream, `CONNECT ${authority}: ${outcome}`);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        path: urlPath,
        headers: { host: authority, connection: 'close' },
        createConnection: () => stream as unknown as net.Socket,
        timeout: 10_000 * TIME_SCALE,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from the waypoint for ${authority}${urlPath}`)));
    req.on('error', reject);
    req.end();
  });
}

async function many(n: number, c: number, one: () => Promise<Answer>): Promise<Answer[]> {
  const out: Answer[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (next < n) {
        next++;
        out.push(await one());
      }
    }),
  );
  return out;
}

describe('ambit waypoint: Istio VirtualService fault injection and mirroring', () => {
  let topo: Topology;
  let session: http2.ClientHttp2Session;
  let wpLog: Record<string, unknown>[];
  let mirrorLog: Record<string, unknown>[];
  let webLog: Record<string, unknown>[];
  const cleanup = new Cleanup();

  before(async () => {
    requireRoot();
    let dir: string;
    ({ topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 2 }));
    const wpPod: TestPod = topo.pod(1, 1);
    const client = topo.pod(1, 2);
    const [primary, shadow] = [topo.pod(2, 1), topo.pod(2, 2)];
    const caDir = path.join(dir, 'ca');
    const svc = (name: string, vip: string, app: string) => ({
      name,
      namespace: 'default',
      hostname: `${name}.default.svc.cluster.local`,
      addresses: [vip],
      ports: [{ port: 80, targetPort: 8080, name: 'http' }],
      selector: { app },
    });
    const config = path.join(dir, 'mesh.yaml');
    const mesh = {
      trustDomain: 'cluster.local',
      ca: { dir: caDir },
      nodes: topo.nodes.map((n) => ({ name: n.name, address: n.wireIp })),
      workloads: [
        {
          uid: wpPod.uid,
          name: 'waypoint',
          namespace: 'default',
          serviceAccount: 'waypoint',
          node: wpPod.node.name,
          addresses: [wpPod.ip],
          labels: { [GW]: 'waypoint' },
        },
        { ...workloadOf(primary), name: 'web', serviceAccount: 'web', labels: { app: 'web' } },
        { ...workloadOf(shadow), name: 'shadow', serviceAccount: 'shadow', labels: { app: 'shadow' } },
      ],
      services: [svc('web', VIP.web, 'web'), svc('shadow', VIP.shadow, 'shadow')],
      routes: [
        {
          apiVersion: 'gateway.networking.k8s.io/v1',
          kind: 'Gateway',
          metadata: { name: 'waypoint', namespace: 'default', labels: { 'istio.io/waypoint-for': 'service' } },
          spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
        },
        {
          apiVersion: 'networking.istio.io/v1',
          kind: 'VirtualService',
          metadata: { name: 'web', namespace: 'default' },
          spec: {
            hosts: ['web'],
            http: [
              {
                match: [{ uri: { prefix: '/abort' } }],
                route: [{ destination: { host: 'web' } }],
                fault: { abort: { httpStatus: 503, percentage: { value: 50 } } },
              },
              {
                match: [{ uri: { prefix: '/delay' } }],
                route: [{ destination: { host: 'web' } }],
                fault: { delay: { fixedDelay: '500ms', percentage: { value: 100 } } },
              },
              { route: [{ destination: { host: 'web' } }], mirror: { host: 'shadow' }, mirrorPercentage: { value: 100 } },
            ],
          },
        },
      ],
    };
    fs.writeFileSync(config, YAML.stringify(mesh));
    const n2 = topo.node(2);
    const agent = topo.spawnInNode(n2, process.execPath, [
      CLI,
      'node',
      '--config',
      config,
      '--node',
      n2.name,
      '--pods-cgroup',
      n2.podsCgroup,
      '--pin-dir',
      pinDirFor(topo, n2),
      '--workers',
      '0',
    ]);
    await waitForLine(agent, (l) => l.includes('"node ready"'), 'node agent n2');
    const web = topo.spawnInPod(primary, process.execPath, [PODAPP, 'http', '8080', 'web', '0', 'log']);
    webLog = jsonLines(web);
    await waitForLine(web, (l) => l.includes('listening'), 'web app');
    // The mirror answers 503 to everything: an answer the client must never see.
    const mirror = topo.spawnInPod(shadow, process.execPath, [PODAPP, 'http', '8080', 'shadow', '100', 'log']);
    mirrorLog = jsonLines(mirror);
    await waitFor('shadow app listening', () => mirrorLog.some((l) => l.listening === 8080));
    const waypoint = topo.spawnInPod(wpPod, process.execPath, [
      CLI,
      'waypoint',
      '--config',
      config,
      '--name',
      'waypoint',
      '--namespace',
      'default',
    ]);
    wpLog = jsonLines(waypoint);
    await waitFor('waypoint ready', () => wpLog.some((l) => l.msg === 'waypoint ready'), 30_000);
    const ca = await BuiltinCa.open(caDir);
    session = await openSession(client.netnsPath, wpPod.ip, await certFor(ca, 'spiffe://cluster.local/ns/default/sa/sleep'));
    cleanup.add('client session', () => session.destroy());
  });

  after(() => cleanup.run());

  test('fault abort at 50%: of 200 requests, the aborted ones (503 FI) within 4 standard deviations of 100; none reached the app', async () => {
    const answers = await many(200, 10, () => request(session, `${VIP.web}:80`, '/abort'));
    const aborted = answers.filter((a) => a.status === 503);
    const passed = answers.filter((a) => a.status === 200);
    assert.equal(aborted.length + passed.length, 200, JSON.stringify(answers.map((a) => a.status)));
    // Binomial(200, 0.5): mean 100, sd 7.07.
    assert.ok(aborted.length >= 72 && aborted.length <= 128, `aborted ${aborted.length} of 200`);
    assert.ok(
      aborted.every((a) => a.body === 'fault filter abort'),
      'the waypoint answered the aborts itself',
    );
    assert.ok(passed.every((a) => a.headers['x-name'] === 'web'));
    assert.equal(webLog.filter((l) => l.request === '/abort').length, passed.length, 'an aborted request never reaches the app');
    // Each abort is flagged FI in the access log (written as the answer ends, so it may trail the client).
    await waitFor('FI for each abort', () =>
      wpLog.filter((l) => l.msg === 'request complete' && l.response_flags === 'FI').length === aborted.length ? true : undefined,
    );
  });

  test('fault delay: the answer comes after fixedDelay, flagged DI', async () => {
    const t0 = Date.now();
    const a = await request(session, `${VIP.web}:80`, '/delay');
    const took = Date.now() - t0;
    assert.equal(a.status, 200);
    assert.ok(took >= 490, `answered after ${took} ms (delay 500 ms)`);
    assert.ok(took < 500 + 2000 * TIME_SCALE, `answered after ${took} ms (delay 500 ms)`);
    await waitFor('DI in the access log', () => wpLog.find((l) => l.msg === 'request complete' && l.response_flags === 'DI'));
  });

  test('mirror: the copy reaches the mirror pod (Host with -shadow) while the client gets the primary answer, never the copy 503', async () => {
    const before = mirrorLog.filter((l) => l.request === '/mirrored').length;
    const a = await request(session, `${VIP.web}:80`, '/mirrored');
    assert.equal(a.status, 200);
    assert.equal(a.headers['x-name'], 'web', 'the client gets the primary answer');
    const copy = await waitFor('the copy at the mirror pod', () =>
      mirrorLog.filter((l) => l.request === '/mirrored').length > before
        ? mirrorLog.filter((l) => l.request === '/mirrored').at(-1)
        : undefined,
    );
    assert.equal(copy.host, `${VIP.web}-shadow:80`);
    // The copies' 503s never reach a client.
    const more = await many(20, 5, () => request(session, `${VIP.web}:80`, '/mirrored'));
    assert.deepEqual([...new Set(more.map((x) => `${x.status} ${String(x.headers['x-name'])}`))], ['200 web']);
  });
});
