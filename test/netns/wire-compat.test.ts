// Wire compatibility with an implementation that shares no code with
// ambit: Debian's protoc compiles ambit's own .proto files to Python, and
// Debian's python3-grpcio (gRPC core, C) talks to `ambit control-plane`
// with them over TLS: delta ADS as a node agent (wildcard subscription,
// every Any decoded, every response ACKed) and Istio's CreateCertificate,
// plus the refusals (another node's identity, a wrong token, a stream
// naming another node). Only 127.0.0.1 is used, no namespaces; it lives
// with the root tests because CI runs those with the Debian packages
// installed. It never skips: without them it fails naming the package.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { Cleanup } from '../helpers/cleanup';
import { collect, jsonLines, lastJson, waitForLine } from '../helpers/proc';

const CLI = path.resolve(__dirname, '../../src/cli/main.js');
/** dist/test/netns → the repository's test/python (the script is not compiled). */
const CLIENT = path.resolve(__dirname, '../../../test/python/ambit_wire_client.py');
/** Debian's interpreter: a python3 from pyenv or a virtualenv does not see the python3-* packages. */
const PYTHON = '/usr/bin/python3';
const DEBIAN_PACKAGES = 'python3 python3-grpcio python3-protobuf protobuf-compiler libprotobuf-dev python3-cryptography';

const TOKEN_N1 = 'wire-compat-n1-3f9c0a7d';
const TOKEN_N2 = 'wire-compat-n2-8b21e4c6';
const OWN = 'spiffe://cluster.local/ns/default/sa/sleep'; // sleep-1 runs on n1
const FOREIGN = 'spiffe://cluster.local/ns/default/sa/echo'; // echo-1 runs on n2 only
const ECHO_KEY = 'default/echo.default.svc.cluster.local';

interface WorkloadSummary {
  resource_name: string;
  uid: string;
  name: string;
  namespace: string;
  addresses: string[];
  tunnel_protocol: string;
  trust_domain: string;
  service_account: string;
  node: string;
  workload_type: string;
  canonical_name: string;
  status: string;
  cluster_id: string;
  capacity: number | null;
  services: string[];
  service_ports: Record<string, number[][]>;
  authorization_policies: string[];
}
interface Summary {
  versions: { grpcio: string; protobuf: string };
  workloads: WorkloadSummary[];
  services: { resource_name: string; name: string; namespace: string; hostname: string; addresses: string[]; ports: number[][] }[];
  policies: {
    resource_name: string;
    name: string;
    namespace: string;
    scope: string;
    action: string;
    dry_run: boolean;
    rules: number;
    principals: Record<string, unknown>[];
  }[];
  acked: string[];
  removed: string[];
  late_responses: number;
  stream_end: string;
  certificate: {
    chain_length: number;
    leaf_uri_sans: string[];
    leaf_key_is_csr_key: boolean;
    chain_signatures_ok: boolean;
    last_is_mesh_root: boolean;
  };
  errors: { foreign_identity: string; wrong_token_certificate: string; wrong_token_stream: string; wrong_node_name_stream: string };
}

const sha256 = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Fails (never skips) naming the Debian packages to install. */
async function requireDebianPython(): Promise<void> {
  if (!fs.existsSync(PYTHON)) {
    throw new Error(
      `${PYTHON} is missing: install the Debian package python3 (apt-get install ${DEBIAN_PACKAGES}; scripts/install-deps.sh does)`,
    );
  }
  const check = await collect(spawn(PYTHON, [CLIENT, '--check'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  if (check.code !== 0) {
    throw new Error(
      `the Python wire client cannot run (exit ${check.code}):\n${check.stderr.trim()}\n` +
        `apt-get install ${DEBIAN_PACKAGES} (scripts/install-deps.sh does)`,
    );
  }
}

describe("wire compatibility: Debian's python3-grpcio against ambit's control plane", () => {
  let cpLog: Record<string, unknown>[] = [];
  let s: Summary;
  const cleanup = new Cleanup();

  before(async () => {
    await requireDebianPython();
    const dir = cleanup.tempDir('ambit-wire-compat');
    const config = path.join(dir, 'mesh.yaml');
    const caDir = path.join(dir, 'ca');
    fs.writeFileSync(
      config,
      YAML.stringify({
        trustDomain: 'cluster.local',
        ca: { dir: caDir },
        nodes: [
          { name: 'n1', address: '10.201.0.1' },
          { name: 'n2', address: '10.201.0.2' },
        ],
        workloads: [
          {
            uid: 'default/sleep-1',
            name: 'sleep-1',
            namespace: 'default',
            serviceAccount: 'sleep',
            node: 'n1',
            addresses: ['10.200.0.10'],
            labels: { app: 'sleep' },
          },
          {
            uid: 'default/echo-1',
            name: 'echo-1',
            namespace: 'default',
            serviceAccount: 'echo',
            node: 'n2',
            addresses: ['10.200.0.20'],
            labels: { app: 'echo', version: 'v2' },
          },
        ],
        services: [
          {
            name: 'echo',
            namespace: 'default',
            hostname: 'echo.default.svc.cluster.local',
            addresses: ['10.96.0.10'],
            ports: [{ port: 80, targetPort: 8080 }, { port: 9090 }],
            selector: { app: 'echo' },
          },
        ],
        policies: [
          {
            apiVersion: 'security.istio.io/v1',
            kind: 'AuthorizationPolicy',
            metadata: { name: 'allow-sleep', namespace: 'default' },
            spec: {
              selector: { matchLabels: { app: 'echo' } },
              action: 'ALLOW',
              rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/sleep'] } }] }],
            },
          },
        ],
        controlPlane: {
          tokens: [
            { node: 'n1', sha256: sha256(TOKEN_N1) },
            { node: 'n2', sha256: sha256(TOKEN_N2) },
          ],
        },
      }),
    );

    const port = await freePort();
    const cp = cleanup.process(
      spawn(process.execPath, [CLI, 'control-plane', '--config', config, '--listen', `127.0.0.1:${port}`, '--server-ip', '127.0.0.1'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    cpLog = jsonLines(cp);
    await waitForLine(cp, (l) => l.includes('control plane serving xDS and the CA'), 'the control plane serving');

    const py = cleanup.process(
      spawn(PYTHON, [CLIENT, `127.0.0.1:${port}`, path.join(caDir, 'root-cert.pem'), TOKEN_N1, 'n1', OWN, FOREIGN], {
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    const r = await collect(py);
    const serverSaid = cpLog.map((l) => JSON.stringify(l)).join('\n');
    assert.equal(r.code, 0, `the Python client failed (exit ${r.code}):\n${r.stderr}\ncontrol plane log:\n${serverSaid}`);
    s = lastJson<Summary>(r.stdout);
  });

  after(() => cleanup.run());

  test('every workload arrives as istio.workload.Address, decoded by protoc-generated classes', () => {
    assert.deepEqual(s.workloads, [
      {
        resource_name: 'default/echo-1',
        uid: 'default/echo-1',
        name: 'echo-1',
        namespace: 'default',
        addresses: ['10.200.0.20'],
        tunnel_protocol: 'HBONE',
        trust_domain: 'cluster.local',
        service_account: 'echo',
        node: 'n2',
        workload_type: 'POD',
        canonical_name: 'echo',
        status: 'HEALTHY',
        cluster_id: 'Kubernetes',
        capacity: 1,
        services: [ECHO_KEY],
        service_ports: {
          [ECHO_KEY]: [
            [80, 8080],
            [9090, 9090],
          ],
        },
        authorization_policies: ['default/allow-sleep'],
      },
      {
        resource_name: 'default/sleep-1',
        uid: 'default/sleep-1',
        name: 'sleep-1',
        namespace: 'default',
        addresses: ['10.200.0.10'],
        tunnel_protocol: 'HBONE',
        trust_domain: 'cluster.local',
        service_account: 'sleep',
        node: 'n1',
        workload_type: 'POD',
        canonical_name: 'sleep',
        status: 'HEALTHY',
        cluster_id: 'Kubernetes',
        capacity: 1,
        services: [],
        service_ports: {},
        authorization_policies: [],
      },
    ]);
  });

  test('every service arrives as istio.workload.Address named <namespace>/<hostname>', () => {
    assert.deepEqual(s.services, [
      {
        resource_name: ECHO_KEY,
        name: 'echo',
        namespace: 'default',
        hostname: 'echo.default.svc.cluster.local',
        addresses: ['10.96.0.10'],
        ports: [
          [80, 8080],
          [9090, 9090],
        ],
      },
    ]);
  });

  test('the AuthorizationPolicy arrives as istio.security.Authorization, scoped to the workloads that list it', () => {
    assert.deepEqual(s.policies, [
      {
        resource_name: 'default/allow-sleep',
        name: 'allow-sleep',
        namespace: 'default',
        scope: 'WORKLOAD_SELECTOR',
        action: 'ALLOW',
        dry_run: false,
        rules: 1,
        principals: [{ exact: 'cluster.local/ns/default/sa/sleep' }],
      },
    ]);
    assert.deepEqual(s.workloads.find((w) => w.uid === 'default/echo-1')?.authorization_policies, ['default/allow-sleep']);
  });

  test('both subscriptions are ACKed, nothing more is pushed, and the stream ends with OK', () => {
    assert.deepEqual(s.acked, ['type.googleapis.com/istio.workload.Address', 'type.googleapis.com/istio.security.Authorization']);
    assert.deepEqual(s.removed, []);
    assert.equal(s.late_responses, 0);
    assert.equal(s.stream_end, 'OK');
  });

  test('CreateCertificate returns a chain for exactly the asked identity, on the CSR key, up to the mesh root', () => {
    assert.ok(s.certificate.chain_length >= 2, `chain of ${s.certificate.chain_length} certificate(s)`);
    assert.deepEqual(s.certificate.leaf_uri_sans, [OWN]);
    assert.equal(s.certificate.leaf_key_is_csr_key, true);
    assert.equal(s.certificate.chain_signatures_ok, true);
    assert.equal(s.certificate.last_is_mesh_root, true);
  });

  test("CreateCertificate for an identity not on the caller's node is PERMISSION_DENIED", () => {
    assert.equal(s.errors.foreign_identity, 'PERMISSION_DENIED');
  });

  test('CreateCertificate with a wrong token is UNAUTHENTICATED', () => {
    assert.equal(s.errors.wrong_token_certificate, 'UNAUTHENTICATED');
  });

  test('a delta ADS stream with a wrong token is UNAUTHENTICATED', () => {
    assert.equal(s.errors.wrong_token_stream, 'UNAUTHENTICATED');
  });

  test("a delta ADS stream whose NODE_NAME is not the token's node is PERMISSION_DENIED", () => {
    assert.equal(s.errors.wrong_node_name_stream, 'PERMISSION_DENIED');
  });
});
