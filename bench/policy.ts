// What authorization and xDS cost the node, measured in-process (no root):
//  - one authorization check per connection, with 0…1,000 policies in the
//    mesh (the deciding ALLOW last in scope, the worst case), against the
//    allow-all seam as baseline;
//  - encoding the whole mesh as xDS resources (the control plane's side of
//    a full push) and decoding them (the node's side), for 100…5,000 workloads.
// Repeats (BENCH_REPEATS, default 5) interleave the cases; medians with the
// min–max spread are printed as a table and written as JSON to bench/results/.
import fs from 'node:fs';
import path from 'node:path';
import { type Authorizer, allowAll, type ConnectionFacts } from '../src/policy/authorize';
import { matchOf, PolicyAuthorizer } from '../src/policy/engine';
import type { Authorization } from '../src/policy/types';
import type { AddressMessage } from '../src/protocol/messages';
import { TYPE_ADDRESS, unpack } from '../src/protocol/protos';
import { addressFromMessage, toResources } from '../src/sources/xds-resources';
import { MeshStore } from '../src/state/store';
import type { MeshConfig, Workload } from '../src/state/types';
import { fmt, median } from './util';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const POLICY_COUNTS = [0, 10, 100, 1000];
const WORKLOAD_COUNTS = [100, 1000, 5000];

const dst: Workload = {
  uid: 'ns-0/web',
  name: 'web',
  namespace: 'ns-0',
  serviceAccount: 'web',
  node: 'n1',
  addresses: ['10.200.0.10'],
  protocol: 'HBONE',
  dataplane: 'ambient',
  labels: { app: 'web' },
  capacity: 1,
  authorizationPolicies: [],
};
const facts: ConnectionFacts = {
  srcIdentity: 'spiffe://cluster.local/ns/client/sa/sleep',
  srcIp: '10.200.1.11',
  dst,
  dstIp: '10.200.0.10',
  dstPort: 8080,
};

/** k policies over 50 namespaces; those of the destination's namespace allow other principals first, sleep's last. */
function policies(k: number): Authorization[] {
  const out: Authorization[] = [];
  for (let i = 0; i < k; i++) {
    const last = i === k - 1;
    out.push({
      name: `p${i}`,
      namespace: last ? 'ns-0' : `ns-${i % 50}`,
      scope: 'NAMESPACE',
      action: i % 7 === 3 && !last ? 'DENY' : 'ALLOW',
      dryRun: false,
      rules: [
        {
          clauses: [
            {
              matches: [
                matchOf({ principals: [{ exact: last ? 'cluster.local/ns/client/sa/sleep' : `cluster.local/ns/x${i}/sa/y` }] }),
                matchOf({ sourceIps: [{ address: `10.${i % 250}.0.0`, length: 16 }] }),
              ],
            },
            { matches: [matchOf({ destinationPorts: [8080, 9090] })] },
          ],
        },
      ],
    });
  }
  return out;
}

/** Checks per second for ~250 ms. */
function rate(a: Authorizer): number {
  let n = 0;
  const start = process.hrtime.bigint();
  const until = start + 250_000_000n;
  let now = start;
  while (now < until) {
    for (let i = 0; i < 1000; i++) if (a.check(facts).allow) n++;
    now = process.hrtime.bigint();
  }
  if (n === 0) throw new Error('the benchmark connection was denied: the policy set is wrong');
  return n / (Number(now - start) / 1e9);
}

function mesh(w: number): MeshConfig {
  const workloads: Workload[] = Array.from({ length: w }, (_, i) => ({
    ...dst,
    uid: `ns-${i % 50}/pod-${i}`,
    name: `pod-${i}`,
    namespace: `ns-${i % 50}`,
    serviceAccount: `sa-${i % 200}`,
    node: `n${i % 20}`,
    addresses: [`10.${200 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`],
    labels: { app: `app-${i % 100}` },
    authorizationPolicies: [`ns-${i % 50}/p`],
  }));
  return {
    trustDomain: 'cluster.local',
    ca: { dir: '' },
    nodes: [],
    workloads,
    services: Array.from({ length: 100 }, (_, i) => ({
      name: `svc-${i}`,
      namespace: `ns-${i % 50}`,
      hostname: `svc-${i}.ns-${i % 50}.svc.cluster.local`,
      addresses: [`10.96.0.${i + 1}`],
      ports: [{ port: 80, targetPort: 8080 }],
      selector: { app: `app-${i}` },
    })),
    policies: policies(100),
    rootNamespace: 'istio-system',
    controlPlane: { tokens: [] },
  };
}

function xdsCost(cfg: MeshConfig): { encodeMs: number; decodeMs: number; bytes: number } {
  const store = new MeshStore(cfg);
  let t = process.hrtime.bigint();
  const res = toResources(cfg, (s) => store.endpoints(s));
  const encodeMs = Number(process.hrtime.bigint() - t) / 1e6;
  let bytes = 0;
  t = process.hrtime.bigint();
  const addresses = res.get(TYPE_ADDRESS);
  if (!addresses) throw new Error(`no ${TYPE_ADDRESS} resources to decode`);
  for (const [name, r] of addresses) {
    bytes += r.resource.value.length;
    addressFromMessage(name, unpack<AddressMessage>(r.resource), 'cluster.local');
  }
  return { encodeMs, decodeMs: Number(process.hrtime.bigint() - t) / 1e6, bytes };
}

function main(): void {
  const authorizers = new Map<string, Authorizer>([
    ['allow-all (no policy engine)', allowAll],
    ...POLICY_COUNTS.map((k) => [`${k} policies`, PolicyAuthorizer.of(policies(k))] as [string, Authorizer]),
  ]);
  const meshes = new Map(WORKLOAD_COUNTS.map((w) => [w, mesh(w)]));
  const checks = new Map<string, number[]>();
  const xds = new Map<number, { encodeMs: number[]; decodeMs: number[]; bytes: number }>();
  for (const a of authorizers.values()) rate(a); // warm-up: JIT
  for (let r = 0; r < REPEATS; r++) {
    for (const [name, a] of authorizers) checks.set(name, [...(checks.get(name) ?? []), rate(a)]);
    for (const [w, cfg] of meshes) {
      const c = xdsCost(cfg);
      const e = xds.get(w) ?? { encodeMs: [], decodeMs: [], bytes: c.bytes };
      e.encodeMs.push(c.encodeMs);
      e.decodeMs.push(c.decodeMs);
      xds.set(w, e);
    }
  }
  const base = median(checks.get('allow-all (no policy engine)') ?? []); // NaN (shown as –) if it was not measured
  console.log(`\nAuthorization check per connection (${REPEATS} repeats, medians; the allowing policy is the last in scope)\n`);
  console.log('| policies in the mesh | checks/s | µs per check | spread (checks/s) | vs allow-all |');
  console.log('|---|---:|---:|---|---:|');
  for (const [name, xs] of checks) {
    const m = median(xs);
    console.log(`| ${name} | ${fmt(m)} | ${fmt(1e6 / m)} | ${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))} | ${(base / m).toFixed(1)}× |`);
  }
  console.log(`\nxDS: the whole mesh as resources (100 services, 100 policies; ${REPEATS} repeats, medians)\n`);
  console.log('| workloads | Address bytes | encode (control plane) ms | decode + validate (node) ms | µs per workload decoded |');
  console.log('|---:|---:|---:|---:|---:|');
  for (const [w, e] of xds)
    console.log(
      `| ${fmt(w)} | ${fmt(e.bytes)} | ${fmt(median(e.encodeMs))} | ${fmt(median(e.decodeMs))} | ${fmt((median(e.decodeMs) * 1000) / w)} |`,
    );
  const out = path.resolve(__dirname, '../../bench/results', `policy-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(
    out,
    JSON.stringify({ repeats: REPEATS, checksPerSecond: Object.fromEntries(checks), xds: Object.fromEntries(xds) }, null, 2),
  );
  console.log(`\nJSON: ${out}`);
}

main();
