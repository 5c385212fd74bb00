// `ambit config workloads|services|policies|certificates|connections`: what a
// running node holds, read from its admin endpoint (GET /config_dump and GET
// /connections on 127.0.0.1:15000) and shown with the columns
// `istioctl ztunnel-config` users know. What answers at --admin may not be
// ambit at all: the answer is bounded in time and size, must be JSON of the
// expected shape, and every way that fails is one AMBIT_E_ADMIN line naming
// the address and the likely fix.
import { X509Certificate } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { AmbitError } from '../errors';
import { parseSpiffe } from '../identity/spiffe';
import type { Authorization } from '../policy/types';
import { MeshStore } from '../state/store';
import type { MeshConfig } from '../state/types';
import { type ConnectionInfo, type ConnectionList, MAX_LISTED } from '../tunnel/connections';
import { parseFlags, UsageError, verbOf } from './args';
import { age, bytes, type Column, OUTPUT_FORMATS, type OutputFormat, render } from './table';
import { CONFIG_USAGE } from './usage';

export const KINDS = ['workloads', 'services', 'policies', 'certificates', 'connections'] as const;
export type Kind = (typeof KINDS)[number];

/** The node agent's admin port (src/observability/admin.ts), which listens on loopback only. */
export const DEFAULT_ADMIN = '127.0.0.1:15000';

export interface AdminAddress {
  host: string;
  port: number;
}

export interface FetchLimits {
  /** The whole answer must arrive within this. */
  timeoutMs: number;
  /** Longer answers are cut off: a wrong endpoint cannot make the CLI hold gigabytes. */
  maxBytes: number;
}

export const DEFAULT_FETCH_LIMITS: FetchLimits = { timeoutMs: 5000, maxBytes: 64 << 20 };

export function parseAdminAddress(value: string, usage: string): AdminAddress {
  const m = /^(?:\[([^\]]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(value.trim());
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!host || !(port >= 1 && port <= 65535))
    throw new UsageError(`--admin ${JSON.stringify(value)} is not HOST:PORT, e.g. 127.0.0.1:15000 or [::1]:15000`, usage);
  return { host, port };
}

export const showAddress = (a: AdminAddress): string => (net.isIPv6(a.host) ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

const runningHint = (where: string): string =>
  "is `ambit node` running? its admin port is 15000 on localhost, in the node's network namespace" +
  (where === DEFAULT_ADMIN ? '' : ` (asked ${where}: check --admin)`);
const notAmbitHint = (where: string): string => `is ${where} an ambit node's admin port? \`ambit node\` serves it on 127.0.0.1:15000`;

/** The first line of a body, short and printable, for an error message. */
function gist(body: string): string {
  const line =
    body
      .trim()
      .split('\n')[0]
      ?.replace(/\p{Cc}/gu, '?') ?? '';
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** GET path as JSON from an admin endpoint; every failure is an AMBIT_E_ADMIN naming the address. */
export function fetchAdmin(addr: AdminAddress, path: string, limits: FetchLimits = DEFAULT_FETCH_LIMITS): Promise<unknown> {
  const where = showAddress(addr);
  const what = `GET ${path} on ${where}`;
  return new Promise((resolve, reject) => {
    let settled = false;
    let req: http.ClientRequest | undefined;
    const fail = (message: string, hint: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req?.destroy();
      reject(new AmbitError('AMBIT_E_ADMIN', message, hint));
    };
    const timer = setTimeout(
      () =>
        fail(
          `${what}: no complete answer within ${limits.timeoutMs / 1000} s`,
          `${notAmbitHint(where)}; a node that accepts but never answers is stuck: see its log`,
        ),
      limits.timeoutMs,
    );
    try {
      req = http.request(
        { host: addr.host, port: addr.port, path, method: 'GET', agent: false, headers: { accept: 'application/json' } },
        (res) => {
          const status = res.statusCode ?? 0;
          const type = String(res.headers['content-type'] ?? '');
          const tooLong = (): void =>
            fail(`${what}: the answer is over ${limits.maxBytes} bytes, more than this command reads`, notAmbitHint(where));
          if (Number(res.headers['content-length']) > limits.maxBytes) return tooLong();
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (d: Buffer) => {
            size += d.length;
            if (size > limits.maxBytes) tooLong();
            else chunks.push(d);
          });
          res.on('error', (err) => fail(`${what}: the answer broke off (${err.message})`, runningHint(where)));
          res.on('end', () => {
            if (settled) return;
            const body = Buffer.concat(chunks).toString('utf8');
            if (status === 503 && body.startsWith('starting'))
              return fail(`the node at ${where} is still starting`, 'ask again once its readiness (GET :15021/healthz/ready) answers 200');
            if (status !== 200) return fail(`${what}: answered ${status} ${gist(body)}`.trimEnd(), notAmbitHint(where));
            if (!/\bjson\b/i.test(type))
              return fail(`${what}: answered ${type ? `with ${gist(type)}` : 'without a content type'}, not JSON`, notAmbitHint(where));
            let parsed: unknown;
            try {
              parsed = JSON.parse(body);
            } catch (err) {
              return fail(`${what}: the answer is not JSON (${(err as Error).message})`, notAmbitHint(where));
            }
            settled = true;
            clearTimeout(timer);
            resolve(parsed);
          });
        },
      );
    } catch (err) {
      // Node refuses some host strings before dialing.
      return fail(`cannot ask ${where}: ${(err as Error).message}`, runningHint(where));
    }
    req.on('error', (err: NodeJS.ErrnoException) =>
      fail(
        `cannot reach ${where}: ${err.code ?? err.message}${err.code === 'ECONNREFUSED' ? ' (nothing listens there)' : ''}`,
        runningHint(where),
      ),
    );
    req.end();
  });
}

// --- What the admin endpoint answers (src/roots/pod-agent.ts configDump(), GET /connections).

interface CertificateDump {
  identity: string;
  chainPem: string;
  rootsPem: string;
}

export interface ConfigDump {
  scope: { node?: string; sidecar?: string };
  config: MeshConfig;
  pods: { uid: string; identity: string }[];
  failedPods: Record<string, string>;
  waitingPods: string[];
  certificates: CertificateDump[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The dump's shape, checked as far as the rows read it. */
export function asConfigDump(v: unknown, where: string): ConfigDump {
  const notDump = (missing: string): AmbitError =>
    new AmbitError(
      'AMBIT_E_ADMIN',
      `GET /config_dump on ${where}: the answer is not an ambit config dump (${missing})`,
      notAmbitHint(where),
    );
  if (isObject(v) && v.starting === true)
    throw new AmbitError(
      'AMBIT_E_ADMIN',
      `the node at ${where} is still starting`,
      'ask again once its readiness (GET :15021/healthz/ready) answers 200',
    );
  if (!isObject(v) || !isObject(v.config)) throw notDump('no config');
  for (const k of ['workloads', 'services', 'policies'])
    if (!Array.isArray(v.config[k]) || !v.config[k].every(isObject)) throw notDump(`config.${k} is not a list of objects`);
  for (const k of ['pods', 'certificates'])
    if (!Array.isArray(v[k]) || !v[k].every(isObject)) throw notDump(`${k} is not a list of objects`);
  if (!isObject(v.scope)) throw notDump('no scope');
  return {
    ...(v as unknown as ConfigDump),
    failedPods: isObject(v.failedPods) ? (v.failedPods as Record<string, string>) : {},
    waitingPods: Array.isArray(v.waitingPods) ? (v.waitingPods as string[]) : [],
  };
}

export function asConnectionList(v: unknown, where: string): ConnectionList {
  if (!isObject(v) || !Array.isArray(v.connections) || !v.connections.every(isObject) || typeof v.total !== 'number')
    throw new AmbitError(
      'AMBIT_E_ADMIN',
      `GET /connections on ${where}: the answer is not an ambit connection list`,
      `${notAmbitHint(where)} (a node older than this command has no /connections)`,
    );
  return {
    connections: v.connections as unknown as ConnectionInfo[],
    total: v.total,
    unanswered: Array.isArray(v.unanswered) ? v.unanswered : [],
  };
}

// --- Rows, one kind each: the JSON/YAML fields, and the table's columns.

interface View<R> {
  columns: Column<R>[];
  /** The namespace a row belongs to, for --namespace. */
  namespace: (row: R) => string | undefined;
}

export interface WorkloadRow {
  namespace: string;
  podName: string;
  uid: string;
  addresses: string[];
  node: string;
  protocol: string;
  dataplane: string;
  /** On the node that answered: enrolled, waiting (not located yet) or failed; none for others' workloads. */
  state?: 'enrolled' | 'waiting' | 'failed';
  /** Why enrolment failed. */
  reason?: string;
}

export function workloadRows(d: ConfigDump): WorkloadRow[] {
  const enrolled = new Set(d.pods.map((p) => p.uid));
  const waiting = new Set(d.waitingPods);
  return d.config.workloads.map((w) => {
    const failed = d.failedPods[w.uid];
    return {
      namespace: w.namespace,
      podName: w.name,
      uid: w.uid,
      addresses: w.addresses,
      node: w.node,
      protocol: w.protocol,
      dataplane: w.dataplane,
      state: enrolled.has(w.uid) ? 'enrolled' : failed !== undefined ? 'failed' : waiting.has(w.uid) ? 'waiting' : undefined,
      reason: failed,
    };
  });
}

const WORKLOADS: View<WorkloadRow> = {
  columns: [
    { header: 'NAMESPACE', value: (r) => r.namespace },
    { header: 'POD-NAME', value: (r) => r.podName },
    { header: 'ADDRESS', value: (r) => r.addresses },
    { header: 'NODE', value: (r) => r.node },
    { header: 'PROTOCOL', value: (r) => r.protocol },
    { header: 'DATAPLANE', value: (r) => r.dataplane },
    { header: 'STATE', value: (r) => r.state },
  ],
  namespace: (r) => r.namespace,
};

export interface ServiceRow {
  namespace: string;
  serviceName: string;
  hostname: string;
  serviceVips: string[];
  ports: { port: number; targetPort: number }[];
  /** namespace/name of each endpoint workload. */
  endpoints: string[];
}

export function serviceRows(d: ConfigDump, where: string): ServiceRow[] {
  let store: MeshStore;
  try {
    // The agent's own endpoint rules (selector or xDS membership), not a second copy of them.
    store = new MeshStore(d.config);
  } catch (err) {
    throw new AmbitError(
      'AMBIT_E_ADMIN',
      `GET /config_dump on ${where}: the state in the answer cannot be read (${(err as Error).message})`,
      notAmbitHint(where),
    );
  }
  return store.config.services.map((s) => ({
    namespace: s.namespace,
    serviceName: s.name,
    hostname: s.hostname,
    serviceVips: s.addresses,
    ports: s.ports.map((p) => ({ port: p.port, targetPort: p.targetPort })),
    endpoints: store.endpoints(s).map((w) => `${w.namespace}/${w.name}`),
  }));
}

const SERVICES: View<ServiceRow> = {
  columns: [
    { header: 'NAMESPACE', value: (r) => r.namespace },
    { header: 'SERVICE-NAME', value: (r) => r.serviceName },
    { header: 'SERVICE-VIP', value: (r) => r.serviceVips },
    { header: 'PORTS', value: (r) => r.ports.map((p) => (p.port === p.targetPort ? `${p.port}` : `${p.port}:${p.targetPort}`)) },
    { header: 'ENDPOINTS', value: (r) => r.endpoints.length },
  ],
  namespace: (r) => r.namespace,
};

export interface PolicyRow {
  namespace: string;
  policyName: string;
  action: Authorization['action'];
  scope: Authorization['scope'];
  dryRun: boolean;
  rules: number;
}

export function policyRows(d: ConfigDump): PolicyRow[] {
  return d.config.policies.map((p) => ({
    namespace: p.namespace,
    policyName: p.name,
    action: p.action,
    scope: p.scope,
    dryRun: !!p.dryRun,
    rules: Array.isArray(p.rules) ? p.rules.length : 0,
  }));
}

const POLICIES: View<PolicyRow> = {
  columns: [
    { header: 'NAMESPACE', value: (r) => r.namespace },
    { header: 'POLICY-NAME', value: (r) => r.policyName },
    { header: 'ACTION', value: (r) => r.action },
    { header: 'SCOPE', value: (r) => r.scope },
    { header: 'DRY-RUN', value: (r) => r.dryRun },
    { header: 'RULES', value: (r) => r.rules },
  ],
  namespace: (r) => r.namespace,
};

export interface CertificateRow {
  /** The workload identity the certificate was issued for (the leaf), or whose chain it is part of. */
  certificateName: string;
  type: 'leaf' | 'intermediate' | 'root';
  /** Available within its validity, Expired after it, NotYetValid before it; Unreadable when the PEM does not parse. */
  status: 'Available' | 'Expired' | 'NotYetValid' | 'Unreadable';
  /** Within its validity and signed by the next certificate of the chain (a root: by itself). */
  valid: boolean;
  serialNumber?: string;
  notAfter?: string;
  notBefore?: string;
  subject?: string;
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** `2025-03-05T10:00:00Z`: istioctl's form, without milliseconds. */
const isoSeconds = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

function parseCert(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

/** One row per certificate of each identity: the leaf, its intermediates, the roots; never a key. */
export function certificateRows(d: ConfigDump, now = new Date()): CertificateRow[] {
  return d.certificates.flatMap((c) => {
    const chain = (typeof c.chainPem === 'string' ? (c.chainPem.match(PEM_BLOCK) ?? []) : []).map(parseCert);
    const roots = (typeof c.rootsPem === 'string' ? (c.rootsPem.match(PEM_BLOCK) ?? []) : []).map(parseCert);
    const known = [...chain, ...roots].filter((x): x is X509Certificate => !!x);
    const signedBy = (x: X509Certificate, self: boolean): boolean => {
      const issuers = self ? [x] : known.filter((i) => i !== x && x.checkIssued(i));
      return issuers.some((i) => {
        try {
          return x.verify(i.publicKey);
        } catch {
          return false;
        }
      });
    };
    const row = (x: X509Certificate | undefined, type: CertificateRow['type']): CertificateRow => {
      if (!x) return { certificateName: c.identity, type, status: 'Unreadable', valid: false };
      const notBefore = new Date(x.validFrom);
      const notAfter = new Date(x.validTo);
      const status = now < notBefore ? 'NotYetValid' : now > notAfter ? 'Expired' : 'Available';
      return {
        certificateName: c.identity,
        type,
        status,
        valid: status === 'Available' && signedBy(x, type === 'root'),
        serialNumber: x.serialNumber.toLowerCase(),
        notAfter: isoSeconds(notAfter),
        notBefore: isoSeconds(notBefore),
        // Undefined, not empty, for a SPIFFE leaf without a subject.
        subject: (x.subject as string | undefined)?.replace(/\n/g, ', ') || undefined,
      };
    };
    return [...chain.map((x, i) => row(x, i === 0 ? 'leaf' : 'intermediate')), ...roots.map((x) => row(x, 'root'))];
  });
}

const CERTIFICATES: View<CertificateRow> = {
  columns: [
    { header: 'CERTIFICATE-NAME', value: (r) => r.certificateName },
    { header: 'TYPE', value: (r) => r.type },
    { header: 'STATUS', value: (r) => r.status },
    { header: 'VALID', value: (r) => r.valid },
    { header: 'NOT-AFTER', value: (r) => r.notAfter },
    { header: 'NOT-BEFORE', value: (r) => r.notBefore },
    { header: 'SERIAL', value: (r) => r.serialNumber },
  ],
  namespace: (r) => parseSpiffe(r.certificateName)?.namespace,
};

function connectionsView(rows: ConnectionInfo[], now: number): View<ConnectionInfo> {
  const columns: Column<ConnectionInfo>[] = [
    { header: 'NAMESPACE', value: (r) => r.namespace },
    { header: 'POD', value: (r) => r.pod },
    { header: 'DIRECTION', value: (r) => r.direction },
    { header: 'SOURCE', value: (r) => r.source },
    { header: 'SOURCE-IDENTITY', value: (r) => r.sourceIdentity },
    { header: 'DESTINATION', value: (r) => r.destination },
    { header: 'SERVICE', value: (r) => r.destinationService },
    { header: 'PROTOCOL', value: (r) => r.protocol },
    { header: 'PEER', value: (r) => r.peer },
    { header: 'AGE', value: (r) => age(now - Date.parse(r.startedAt)) },
    { header: 'TO-DST', value: (r) => bytes(r.bytesToDestination) },
    { header: 'TO-SRC', value: (r) => bytes(r.bytesToSource) },
  ];
  // With tunnel workers, which one carries each connection.
  if (rows.some((r) => r.worker !== undefined)) columns.push({ header: 'WORKER', value: (r) => r.worker });
  return { columns, namespace: (r) => r.namespace };
}

// --- The command.

export interface InspectOptions {
  admin: AdminAddress;
  output: OutputFormat;
  namespace?: string;
  node?: string;
  limits?: FetchLimits;
  now?: Date;
}

/** What `ambit config KIND` prints: stdout text and notes for stderr (an empty list, workers that did not answer). */
export async function inspect(kind: Kind, o: InspectOptions): Promise<{ out: string; notes: string[] }> {
  const where = showAddress(o.admin);
  const now = o.now ?? new Date();
  const notes: string[] = [];
  const shown = <R>(view: View<R>, all: R[], extra: (r: R) => boolean = () => true): string => {
    const rows = all.filter((r) => (o.namespace === undefined || view.namespace(r) === o.namespace) && extra(r));
    if (!rows.length && o.output === 'table')
      notes.push(`No ${kind} found${o.namespace === undefined ? '' : ` in namespace ${o.namespace}`}.`);
    return rows.length || o.output !== 'table' ? render(o.output, view.columns, rows) : '';
  };
  if (kind === 'connections') {
    const list = asConnectionList(await fetchAdmin(o.admin, '/connections', o.limits), where);
    for (const u of list.unanswered) notes.push(`warning: ${u}: its connections are not listed`);
    if (list.total > list.connections.length)
      notes.push(
        `warning: ${list.connections.length} of ${list.total} open connections listed (each process answers with at most ${MAX_LISTED})`,
      );
    return { out: shown(connectionsView(list.connections, now.getTime()), list.connections), notes };
  }
  const dump = asConfigDump(await fetchAdmin(o.admin, '/config_dump', o.limits), where);
  switch (kind) {
    case 'workloads':
      return { out: shown(WORKLOADS, workloadRows(dump), (r) => o.node === undefined || r.node === o.node), notes };
    case 'services':
      return { out: shown(SERVICES, serviceRows(dump, where)), notes };
    case 'policies':
      return { out: shown(POLICIES, policyRows(dump)), notes };
    case 'certificates':
      return { out: shown(CERTIFICATES, certificateRows(dump, now)), notes };
  }
}

const CONFIG_OPTIONS = {
  admin: { type: 'string' },
  output: { type: 'string', short: 'o' },
  namespace: { type: 'string', short: 'n' },
  node: { type: 'string' },
} as const;

/** `ambit config KIND [flags]`. */
export async function config(argv: string[]): Promise<void> {
  const u = CONFIG_USAGE;
  const kind = verbOf(argv, [...KINDS], 'config', u) as Kind;
  const { values } = parseFlags(argv.slice(1), CONFIG_OPTIONS, u);
  const output = (values.output ?? 'table') as OutputFormat;
  if (!OUTPUT_FORMATS.includes(output))
    throw new UsageError(`-o ${JSON.stringify(values.output)} is not one of ${OUTPUT_FORMATS.join(', ')}`, u);
  if (values.node !== undefined && kind !== 'workloads')
    throw new UsageError(`--node filters workloads only; the node asked is the one at --admin`, u);
  const { out, notes } = await inspect(kind, {
    admin: parseAdminAddress(values.admin ?? DEFAULT_ADMIN, u),
    output,
    namespace: values.namespace,
    node: values.node,
  });
  for (const n of notes) console.error(n);
  if (out) console.log(out);
}
