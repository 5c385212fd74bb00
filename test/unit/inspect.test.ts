// `ambit config …` and `ambit --version` without root: the rendering, every
// way a wrong or broken endpoint can answer (real HTTP servers on ephemeral
// loopback ports), the admin's GET /connections, the connection registry,
// and tunnel workers that do not answer the connection listing.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import YAML from 'yaml';
import {
  type AdminAddress,
  type CertificateRow,
  type ConfigDump,
  fetchAdmin,
  inspect,
  parseAdminAddress,
  type WorkloadRow,
} from '../../src/cli/inspect';
import { age, bytes, cell, renderTable } from '../../src/cli/table';
import { versionLine } from '../../src/cli/version';
import { AmbitError } from '../../src/errors';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { requestCertificate, type WorkloadCert } from '../../src/identity/cert-manager';
import { startAdmin } from '../../src/observability/admin';
import type { MeshConfig, Workload } from '../../src/state/types';
import { type ConnectionInfo, ConnectionRegistry } from '../../src/tunnel/connections';
import type { DataPlaneContext } from '../../src/tunnel/data-plane';
import { WorkersDataPlane } from '../../src/tunnel/worker-host';
import { TIME_SCALE, waitFor } from '../helpers/proc';

const CLI = path.resolve(__dirname, '../../src/cli/main.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-inspect-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function ambit(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }));
  });
}

const servers: http.Server[] = [];
after(() => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

/** An HTTP server on a loopback port 0 with the given handler; closed after the file. */
async function serve(handler: http.RequestListener): Promise<AdminAddress> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

const json = (body: unknown) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

async function rejectsAdmin(p: Promise<unknown>, message: RegExp): Promise<AmbitError> {
  let caught: unknown;
  await p.catch((err: unknown) => {
    caught = err;
  });
  assert.ok(caught instanceof AmbitError, `an AmbitError, got ${String(caught)}`);
  assert.equal(caught.code, 'AMBIT_E_ADMIN');
  assert.match(caught.message, message);
  assert.doesNotMatch(caught.message, /\n/, 'one line');
  return caught;
}

function workload(name: string, extra: Partial<Workload> = {}): Workload {
  return {
    uid: `uid-${name}`,
    name,
    namespace: 'default',
    serviceAccount: `sa-${name}`,
    node: 'n1',
    addresses: ['10.200.1.11'],
    protocol: 'HBONE',
    dataplane: 'ambient',
    labels: {},
    capacity: 1,
    authorizationPolicies: [],
    ...extra,
  };
}

describe('tables', () => {
  test('kubectl style: headers in caps, columns padded with three spaces, no borders, - for nothing', () => {
    const text = renderTable(
      [
        { header: 'NAMESPACE', value: (r: { ns: string; name?: string; ips: string[] }) => r.ns },
        { header: 'POD-NAME', value: (r) => r.name },
        { header: 'ADDRESS', value: (r) => r.ips },
      ],
      [
        { ns: 'default', name: 'a-long-pod-name', ips: ['10.0.0.1', '10.0.0.2'] },
        { ns: 'kube-system', ips: [] },
      ],
    );
    assert.equal(
      text,
      [
        'NAMESPACE     POD-NAME          ADDRESS',
        'default       a-long-pod-name   10.0.0.1,10.0.0.2',
        'kube-system   -                 -',
      ].join('\n'),
    );
  });

  test('a value from the mesh cannot move the cursor or recolour the terminal', () => {
    assert.equal(cell('evil\u001b[2J\nname'), 'evil?[2J?name');
    assert.equal(cell(false), 'false');
    assert.equal(cell(0), '0');
  });

  test('ages and byte counts as people read them', () => {
    assert.deepEqual([0, 45_000, 192_000, 25 * 60_000, 5 * 3600_000 + 20 * 60_000, 30 * 3600_000, 72 * 3600_000].map(age), [
      '0s',
      '45s',
      '3m12s',
      '25m',
      '5h20m',
      '30h',
      '3d',
    ]);
    assert.deepEqual([0, 512, 1536, 3.25 * 2 ** 20, 20 * 2 ** 30].map(bytes), ['0B', '512B', '1.5KiB', '3.3MiB', '20GiB']);
  });

  test('--admin is HOST:PORT', () => {
    assert.deepEqual(parseAdminAddress('127.0.0.1:15000', ''), { host: '127.0.0.1', port: 15000 });
    assert.deepEqual(parseAdminAddress('[::1]:15000', ''), { host: '::1', port: 15000 });
    assert.deepEqual(parseAdminAddress('localhost:9', ''), { host: 'localhost', port: 9 });
    for (const bad of ['15000', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', 'http://127.0.0.1:15000', ':15000'])
      assert.throws(() => parseAdminAddress(bad, ''), /--admin .* is not HOST:PORT/, bad);
  });
});

describe('a node as `ambit config` sees it', () => {
  let leaf: WorkloadCert;
  let shortLived: WorkloadCert;
  let addr: AdminAddress;
  const identity = 'spiffe://cluster.local/ns/default/sa/sa-a';
  const other = 'spiffe://cluster.local/ns/shop/sa/sa-b';

  before(async () => {
    const ca = await BuiltinCa.open(path.join(dir, 'ca'));
    leaf = await requestCertificate(ca, identity, 86_400);
    shortLived = await requestCertificate(ca, other, 60);
    const config: MeshConfig = {
      trustDomain: 'cluster.local',
      ca: { dir: '/nowhere' },
      nodes: [
        { name: 'n1', address: '10.201.0.1' },
        { name: 'n2', address: '10.201.0.2' },
      ],
      workloads: [
        workload('a', { labels: { app: 'echo' } }),
        workload('b', { namespace: 'shop', addresses: ['10.200.1.12'] }),
        workload('c', { addresses: ['10.200.1.13'] }),
        workload('d', { node: 'n2', addresses: ['10.200.2.11'], labels: { app: 'echo' } }),
        workload('e', { node: 'n2', addresses: ['10.200.2.12'], protocol: 'NONE' }),
      ],
      services: [
        {
          name: 'echo',
          namespace: 'default',
          hostname: 'echo.default.svc.cluster.local',
          addresses: ['10.96.0.10'],
          ports: [
            { port: 80, targetPort: 8080 },
            { port: 443, targetPort: 443 },
          ],
          selector: { app: 'echo' },
        },
      ],
      policies: [
        { name: 'allow-echo', namespace: 'default', scope: 'WORKLOAD_SELECTOR', action: 'ALLOW', rules: [{ clauses: [] }], dryRun: false },
        { name: 'deny-all', namespace: 'shop', scope: 'NAMESPACE', action: 'DENY', rules: [], dryRun: true },
      ],
      rootNamespace: 'istio-system',
      controlPlane: { tokens: [] },
    };
    const dump: ConfigDump & Record<string, unknown> = {
      scope: { node: 'n1' },
      mode: 'hbone',
      config,
      pods: [{ uid: 'uid-a', identity }],
      failedPods: { 'uid-b': 'netns /proc/1/ns/net is gone' },
      waitingPods: ['uid-c'],
      certificates: [leaf, shortLived].map((c) => ({
        identity: c.identity,
        notBefore: c.notBefore,
        notAfter: c.notAfter,
        chainPem: c.chainPem,
        rootsPem: c.rootsPem,
      })),
    };
    addr = await serve(json(dump));
  });

  const rows = async <R>(kind: Parameters<typeof inspect>[0], extra: Record<string, unknown> = {}): Promise<R[]> =>
    JSON.parse((await inspect(kind, { admin: addr, output: 'json', ...extra })).out) as R[];

  test('workloads: every workload of the state, with what this node did about its own', async () => {
    const { out, notes } = await inspect('workloads', { admin: addr, output: 'table' });
    assert.deepEqual(notes, []);
    assert.equal(
      out,
      [
        'NAMESPACE   POD-NAME   ADDRESS       NODE   PROTOCOL   DATAPLANE   STATE',
        'default     a          10.200.1.11   n1     HBONE      ambient     enrolled',
        'shop        b          10.200.1.12   n1     HBONE      ambient     failed',
        'default     c          10.200.1.13   n1     HBONE      ambient     waiting',
        'default     d          10.200.2.11   n2     HBONE      ambient     -',
        'default     e          10.200.2.12   n2     NONE       ambient     -',
      ].join('\n'),
    );
    const all = await rows<WorkloadRow>('workloads');
    assert.equal(all.find((r) => r.podName === 'b')?.reason, 'netns /proc/1/ns/net is gone', 'JSON says why enrolment failed');
    assert.deepEqual(
      (await rows<WorkloadRow>('workloads', { node: 'n2' })).map((r) => r.podName),
      ['d', 'e'],
    );
    assert.deepEqual(
      (await rows<WorkloadRow>('workloads', { namespace: 'shop' })).map((r) => r.podName),
      ['b'],
    );
    const empty = await inspect('workloads', { admin: addr, output: 'table', namespace: 'nope' });
    assert.equal(empty.out, '');
    assert.deepEqual(empty.notes, ['No workloads found in namespace nope.']);
    assert.equal((await inspect('workloads', { admin: addr, output: 'json', namespace: 'nope' })).out, '[]');
  });

  test('services: VIPs, ports and the endpoints the agent itself would pick', async () => {
    const { out } = await inspect('services', { admin: addr, output: 'table' });
    assert.equal(
      out,
      ['NAMESPACE   SERVICE-NAME   SERVICE-VIP   PORTS         ENDPOINTS', 'default     echo           10.96.0.10    80:8080,443   2'].join(
        '\n',
      ),
    );
    const [svc] = await rows<{ endpoints: string[] }>('services');
    assert.deepEqual(svc?.endpoints, ['default/a', 'default/d']);
  });

  test('policies', async () => {
    const { out } = await inspect('policies', { admin: addr, output: 'table' });
    assert.equal(
      out,
      [
        'NAMESPACE   POLICY-NAME   ACTION   SCOPE               DRY-RUN   RULES',
        'default     allow-echo    ALLOW    WORKLOAD_SELECTOR   false     1',
        'shop        deny-all      DENY     NAMESPACE           true      0',
      ].join('\n'),
    );
  });

  test('certificates: leaf and root of each identity, checked against the clock and each other, never a key', async () => {
    const certs = await rows<CertificateRow>('certificates');
    const x = new X509Certificate(leaf.chainPem);
    const mine = certs.filter((c) => c.certificateName === identity);
    assert.deepEqual(
      mine.map((c) => [c.type, c.status, c.valid]),
      [
        ['leaf', 'Available', true],
        ['root', 'Available', true],
      ],
    );
    assert.equal(mine[0]?.serialNumber, x.serialNumber.toLowerCase());
    assert.equal(mine[0]?.notAfter, leaf.notAfter.toISOString().replace(/\.\d{3}Z$/, 'Z'));
    // Two minutes on, the one-minute certificate has expired; its root has not.
    const later = new Date(Date.now() + 120_000);
    const then = JSON.parse(
      (await inspect('certificates', { admin: addr, output: 'json', now: later, namespace: 'shop' })).out,
    ) as CertificateRow[];
    assert.deepEqual(
      then.map((c) => [c.certificateName, c.type, c.status, c.valid]),
      [
        [other, 'leaf', 'Expired', false],
        [other, 'root', 'Available', true],
      ],
    );
    const table = (await inspect('certificates', { admin: addr, output: 'table' })).out;
    assert.match(table.split('\n')[0] ?? '', /^CERTIFICATE-NAME\s+TYPE\s+STATUS\s+VALID\s+NOT-AFTER\s+NOT-BEFORE\s+SERIAL$/);
    for (const format of ['table', 'json', 'yaml'] as const) {
      const text = (await inspect('certificates', { admin: addr, output: format })).out;
      assert.doesNotMatch(text, /PRIVATE KEY|BEGIN CERTIFICATE/, `${format}: rows, no PEM`);
    }
  });

  test('JSON and YAML carry the same rows', async () => {
    const fromJson = await rows<WorkloadRow>('workloads');
    const fromYaml = YAML.parse((await inspect('workloads', { admin: addr, output: 'yaml' })).out) as WorkloadRow[];
    assert.deepEqual(fromYaml, fromJson);
    assert.equal(fromJson.length, 5);
  });

  test('the CLI prints the table on stdout and exits 0; an empty list is a note on stderr', async () => {
    const ok = await ambit('config', 'policies', '--admin', `127.0.0.1:${addr.port}`);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^NAMESPACE {3}POLICY-NAME/);
    const none = await ambit('config', 'policies', '--admin', `127.0.0.1:${addr.port}`, '-n', 'nope');
    assert.deepEqual([none.code, none.stdout, none.stderr], [0, '', 'No policies found in namespace nope.\n']);
    const yaml = await ambit('config', 'services', '--admin', `127.0.0.1:${addr.port}`, '-o', 'yaml');
    assert.equal((YAML.parse(yaml.stdout) as { serviceName: string }[])[0]?.serviceName, 'echo');
  });
});

describe('an endpoint that is not a healthy ambit node', () => {
  const fast = { timeoutMs: 300 * TIME_SCALE, maxBytes: 1024 };

  test('nothing listens: the address, and whether the node runs', async () => {
    const port = await closedPort();
    const err = await rejectsAdmin(
      fetchAdmin({ host: '127.0.0.1', port }, '/config_dump'),
      new RegExp(`cannot reach 127\\.0\\.0\\.1:${port}: ECONNREFUSED`),
    );
    assert.match(err.message, /is `ambit node` running\? its admin port is 15000 on localhost/);
  });

  test('accepts but never answers: cut at the deadline', async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => sockets.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const started = Date.now();
      await rejectsAdmin(fetchAdmin({ host: '127.0.0.1', port }, '/config_dump', fast), /no complete answer within 0\.\d+ s/);
      assert.ok(Date.now() - started < 3000 * TIME_SCALE, `gave up after ${Date.now() - started} ms`);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  test('an answer that trickles in is cut at the deadline too', async () => {
    const addr = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{');
      const t = setInterval(() => res.write(' '), 50);
      res.on('close', () => clearInterval(t));
    });
    await rejectsAdmin(fetchAdmin(addr, '/config_dump', fast), /no complete answer within/);
  });

  test('oversized: refused by its declared length, or cut once past the bound', async () => {
    const declared = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(1 << 30) });
      res.write('[');
    });
    await rejectsAdmin(fetchAdmin(declared, '/config_dump', fast), /the answer is over 1024 bytes/);
    let written = 0;
    const endless = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(16 * 1024, 0x20);
      const pump = (): void => {
        while (!res.destroyed && written < 64 << 20 && res.write(chunk)) written += chunk.length;
        if (!res.destroyed && written < 64 << 20) res.once('drain', pump);
      };
      pump();
    });
    await rejectsAdmin(fetchAdmin(endless, '/config_dump', { ...fast, timeoutMs: 5000 * TIME_SCALE }), /over 1024 bytes/);
    assert.ok(written < 64 << 20, `the server was stopped after ${written} bytes`);
  });

  test('not JSON, not ambit JSON, an error status, still starting', async () => {
    const html = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>hello</html>');
    });
    await rejectsAdmin(
      fetchAdmin(html, '/config_dump'),
      /answered with text\/html, not JSON \(hint: is 127\.0\.0\.1:\d+ an ambit node's admin port/,
    );
    const broken = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"config": ');
    });
    await rejectsAdmin(fetchAdmin(broken, '/config_dump'), /the answer is not JSON/);
    const foreign = await serve(json({ configs: [{ '@type': 'type.googleapis.com/envoy.admin.v3.BootstrapConfigDump' }] }));
    await rejectsAdmin(inspect('workloads', { admin: foreign, output: 'table' }), /not an ambit config dump \(no config\)/);
    await rejectsAdmin(inspect('connections', { admin: foreign, output: 'table' }), /not an ambit connection list/);
    const missing = await serve((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('GET /config_dump · POST /logging\n');
    });
    await rejectsAdmin(fetchAdmin(missing, '/connections'), /GET \/connections on 127\.0\.0\.1:\d+: answered 404 GET \/config_dump/);
    const starting = await serve((_req, res) => {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('starting\n');
    });
    await rejectsAdmin(fetchAdmin(starting, '/connections'), /the node at 127\.0\.0\.1:\d+ is still starting/);
    await rejectsAdmin(inspect('workloads', { admin: await serve(json({ starting: true })), output: 'table' }), /still starting/);
  });

  test('the CLI: one line on stderr with the code, exit 2 (the convention for AmbitError)', async () => {
    const port = await closedPort();
    const r = await ambit('config', 'workloads', '--admin', `127.0.0.1:${port}`);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`^ambit: AMBIT_E_ADMIN: cannot reach 127\\.0\\.0\\.1:${port}: ECONNREFUSED .*\\n$`));
  });

  test('mistakes on the command line are usage errors', async () => {
    for (const args of [
      ['config'],
      ['config', 'pods'],
      ['config', 'workloads', '-o', 'xml'],
      ['config', 'services', '--node', 'n1'],
      ['config', 'workloads', '--admin', 'localhost'],
    ]) {
      const r = await ambit(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^ambit: .*\nusage:\n {2}ambit config workloads\|services/, args.join(' '));
    }
    const help = await ambit('config', '--help');
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--admin HOST:PORT/);
  });
});

describe('ambit --version', () => {
  test('the version in package.json and the Node version, on one line', async () => {
    const { version } = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../package.json'), 'utf8')) as { version: string };
    for (const args of [['--version'], ['version']]) {
      const r = await ambit(...args);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `ambit ${version} (node ${process.version})\n`);
    }
  });

  test('a package.json that is missing or broken says which file', () => {
    const missing = path.join(dir, 'nowhere', 'package.json');
    assert.throws(
      () => versionLine(missing),
      (e: AmbitError) => e.code === 'AMBIT_E_INTERNAL' && e.message.includes(missing) && /ENOENT/.test(e.message),
    );
    const broken = path.join(dir, 'package.json');
    fs.writeFileSync(broken, '{"name": "ambit"}');
    assert.throws(() => versionLine(broken), /has no "version"/);
  });
});

describe('open connections', () => {
  test('the registry lists what is open, bytes each way from the socket, and forgets what closed', async () => {
    const registry = new ConnectionRegistry();
    const server = net.createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      await new Promise((resolve) => client.once('connect', resolve));
      const facts = {
        podUid: 'uid-a',
        pod: 'a',
        namespace: 'default',
        direction: 'outbound' as const,
        source: '10.200.1.11:40000',
        destination: '10.200.2.11:8080',
        protocol: 'HBONE' as const,
        peer: '10.200.2.11:15008',
      };
      // The client socket stands for the app's: what it writes goes to the destination.
      const unlist = registry.add(facts, client, 'source');
      const other = registry.add({ ...facts, direction: 'inbound' }, client, 'destination');
      client.write('x'.repeat(1000));
      await waitFor('the echo', () => client.bytesRead === 1000);
      const { connections, total } = registry.list();
      assert.equal(total, 2);
      assert.deepEqual(
        connections.map((c) => [c.direction, c.bytesToDestination, c.bytesToSource]),
        [
          ['outbound', 1000, 1000],
          ['inbound', 1000, 1000],
        ],
      );
      assert.ok(Math.abs(Date.parse(connections[0]?.startedAt ?? '') - Date.now()) < 5000);
      assert.deepEqual(registry.list(1).connections.length, 1, 'at most the limit, total still counts all');
      unlist();
      unlist();
      other();
      assert.equal(registry.size, 0);
      client.destroy();
    } finally {
      server.close();
    }
  });

  test('GET /connections on the admin port, read by `ambit config connections`', async () => {
    const row: ConnectionInfo = {
      podUid: 'uid-a',
      pod: 'a',
      namespace: 'default',
      direction: 'inbound',
      source: '10.200.1.11:40000',
      sourceIdentity: 'spiffe://cluster.local/ns/default/sa/x',
      destination: '10.200.2.11:8080',
      destinationService: 'echo.default.svc.cluster.local',
      protocol: 'HBONE',
      peer: '10.200.1.11:51234',
      startedAt: new Date(Date.now() - 65_000).toISOString(),
      bytesToDestination: 2048,
      bytesToSource: 10,
      worker: 2,
    };
    let listed: Promise<unknown> | undefined;
    const log = pino({ level: 'silent' });
    const { ports, close } = await startAdmin(
      {
        metrics: () => undefined,
        readiness: () => ({ pending: [] }),
        configDump: () => ({}),
        connections: () => listed,
        log,
        setLogLevel: () => undefined,
        quit: () => undefined,
      },
      { admin: 0, stats: 0, ready: 0 },
    );
    try {
      const admin = { host: '127.0.0.1', port: ports.admin };
      await rejectsAdmin(inspect('connections', { admin, output: 'table' }), /still starting/);
      listed = Promise.resolve({ connections: [row], total: 1, unanswered: ['worker 3 (pid 42) did not answer within 2000 ms'] });
      const { out, notes } = await inspect('connections', { admin, output: 'table' });
      const [header, line] = out.split('\n');
      assert.match(
        header ?? '',
        /^NAMESPACE\s+POD\s+DIRECTION\s+SOURCE\s+SOURCE-IDENTITY\s+DESTINATION\s+SERVICE\s+PROTOCOL\s+PEER\s+AGE\s+TO-DST\s+TO-SRC\s+WORKER$/,
      );
      assert.match(
        line ?? '',
        /^default\s+a\s+inbound\s+10\.200\.1\.11:40000\s+spiffe:\S+\s+10\.200\.2\.11:8080\s+echo\S+\s+HBONE\s+\S+\s+6\ds\s+2\.0KiB\s+10B\s+2$/,
      );
      assert.deepEqual(notes, ['warning: worker 3 (pid 42) did not answer within 2000 ms: its connections are not listed']);
      const fromJson = JSON.parse((await inspect('connections', { admin, output: 'json' })).out) as ConnectionInfo[];
      assert.deepEqual(fromJson, [row]);
      listed = Promise.resolve({ connections: [], total: 0, unanswered: [] });
      assert.deepEqual(await inspect('connections', { admin, output: 'table' }), { out: '', notes: ['No connections found.'] });
    } finally {
      close();
    }
  });

  test('tunnel workers: rows carry the worker; one that does not answer is named after 2 s instead of hanging the request', async () => {
    // A stand-in for `ambit worker`: the first one started never answers the listing.
    const script = path.join(dir, 'fake-worker.js');
    const stuckFile = path.join(dir, 'stuck');
    fs.writeFileSync(
      script,
      `const fs = require('fs');
let stuck = false;
try { fs.writeFileSync(${JSON.stringify(stuckFile)}, String(process.pid), { flag: 'wx' }); stuck = true; } catch {}
process.on('message', (m) => {
  if (m.t === 'init') process.send({ t: 'ready' });
  if (m.t === 'connections' && !stuck)
    process.send({ t: 'connections', id: m.id, total: 1, connections: [{ podUid: 'u', pod: 'p', namespace: 'default', direction: 'outbound',
      source: '10.0.0.1:1', destination: '10.0.0.2:2', protocol: 'HBONE', peer: '10.0.0.2:15008', startedAt: new Date().toISOString(),
      bytesToDestination: 0, bytesToSource: 0 }] });
});
process.on('disconnect', () => process.exit(0));
`,
    );
    const certs = Object.assign(new EventEmitter(), { certificates: () => [] });
    const ctx = {
      store: { config: { workloads: [], services: [], policies: [] } },
      certs,
      mode: 'hbone',
      limits: {},
      log: pino({ level: 'silent' }),
    } as unknown as DataPlaneContext;
    const dp = new WorkersDataPlane(ctx, { count: 2, pinDir: '/nowhere', cli: script });
    try {
      const list = await waitFor(
        'both workers ready, one answering',
        async () => {
          const l = await dp.connections();
          return l.connections.length + l.unanswered.length === 2 ? l : undefined;
        },
        15_000,
      );
      const stuckPid = Number(fs.readFileSync(stuckFile, 'utf8'));
      assert.equal(list.connections.length, 1);
      assert.equal(list.total, 1);
      assert.equal(typeof list.connections[0]?.worker, 'number', 'the row says which worker carries it');
      assert.match(list.unanswered[0] ?? '', new RegExp(`^worker \\d+ \\(pid ${stuckPid}\\) did not answer within 2000 ms$`));
      const started = Date.now();
      await dp.connections();
      const took = Date.now() - started;
      assert.ok(took >= 1900 && took < 3000 * TIME_SCALE, `answered after ${took} ms`);
    } finally {
      const pids = dp.pids();
      dp.stop();
      await waitFor('fake workers gone', () => pids.every((p) => !alive(p)), 10_000);
    }
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
