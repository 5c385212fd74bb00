// The one-shot commands: `ambit ca init|issue` and `ambit datapath
// probe|status|cleanup`. Each verb has its own flags and --help.
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_PIN_DIR } from '../datapath/loader';
import { formatFindings, probe } from '../datapath/probe';
import { cleanupDatapath, datapathStatus, pendingPodsOf } from '../datapath/status';
import { AmbitError } from '../errors';
import { BuiltinCa } from '../identity/builtin-ca';
import { requestCertificate } from '../identity/cert-manager';
import { parseSpiffe } from '../identity/spiffe';
import { parseCount, parseFlags, UsageError, verbOf } from './args';
import { DEFAULT_ADMIN, DEFAULT_FETCH_LIMITS, type FetchLimits, fetchAdmin, parseAdminAddress, showAddress } from './inspect';
import {
  CA_INIT_USAGE,
  CA_ISSUE_USAGE,
  CA_USAGE,
  DATAPATH_CLEANUP_USAGE,
  DATAPATH_PROBE_USAGE,
  DATAPATH_STATUS_USAGE,
  DATAPATH_USAGE,
} from './usage';

export async function ca(argv: string[]): Promise<void> {
  const verb = verbOf(argv, ['init', 'issue'], 'ca', CA_USAGE);
  if (verb === 'init') {
    const { values } = parseFlags(argv.slice(1), { dir: { type: 'string' } }, CA_INIT_USAGE);
    if (!values.dir) throw new UsageError('--dir is required', CA_INIT_USAGE);
    await BuiltinCa.open(values.dir);
    console.log(`CA ready in ${values.dir} (root-cert.pem, root-key.pem; readable by root only)`);
    return;
  }
  const u = CA_ISSUE_USAGE;
  const { values } = parseFlags(
    argv.slice(1),
    { dir: { type: 'string' }, identity: { type: 'string' }, out: { type: 'string' }, ttl: { type: 'string' } },
    u,
  );
  if (!values.dir) throw new UsageError('--dir is required', u);
  if (!values.out) throw new UsageError('--out is required', u);
  if (!values.identity || !parseSpiffe(values.identity))
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `--identity ${JSON.stringify(values.identity ?? '')} is not spiffe://<trust domain>/ns/<namespace>/sa/<service account>`,
    );
  const ttl = parseCount('--ttl', values.ttl, 86400, u, 1, 10 * 365 * 86400);
  const authority = await BuiltinCa.open(values.dir);
  const c = await requestCertificate(authority, values.identity, ttl);
  fs.mkdirSync(values.out, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(values.out, 'cert.pem'), c.chainPem, { mode: 0o644 });
  fs.writeFileSync(path.join(values.out, 'key.pem'), c.keyPem, { mode: 0o600 });
  fs.writeFileSync(path.join(values.out, 'root.pem'), c.rootsPem, { mode: 0o644 });
  console.log(`issued ${values.identity} until ${c.notAfter.toISOString()}: ${values.out}/{cert,key,root}.pem`);
}

/** `datapath status` asks the agent for its pending pods; a node whose agent is down answers at once (refused), a stuck one within this. */
const PENDING_FETCH: FetchLimits = { timeoutMs: 2000, maxBytes: DEFAULT_FETCH_LIMITS.maxBytes };

export async function datapath(argv: string[]): Promise<void> {
  const verb = verbOf(argv, ['probe', 'status', 'cleanup'], 'datapath', DATAPATH_USAGE);
  const usage = verb === 'probe' ? DATAPATH_PROBE_USAGE : verb === 'status' ? DATAPATH_STATUS_USAGE : DATAPATH_CLEANUP_USAGE;
  const { values } = parseFlags(
    argv.slice(1),
    {
      'pin-dir': { type: 'string' },
      ...(verb === 'status' ? { json: { type: 'boolean' as const }, admin: { type: 'string' as const } } : {}),
    },
    usage,
  );
  const pinDir = values['pin-dir'] ?? DEFAULT_PIN_DIR;
  if (verb === 'probe') {
    const findings = probe(pinDir);
    console.log(formatFindings(findings));
    if (findings.some((f) => !f.ok)) process.exitCode = 1;
    return;
  }
  if (verb === 'status') {
    const addr = parseAdminAddress(typeof values.admin === 'string' ? values.admin : DEFAULT_ADMIN, usage);
    const s = datapathStatus(pinDir);
    // The kernel holds what is captured; only the agent knows which pods should be and are not yet.
    const pending = await fetchAdmin(addr, '/config_dump', PENDING_FETCH).then(
      (dump) => pendingPodsOf(dump, pinDir),
      (err: Error) => ({ unknown: err.message }),
    );
    if (values.json) {
      const extra = 'pods' in pending ? { pendingPods: pending.pods } : { pendingPods: null, pendingPodsUnknown: pending.unknown };
      console.log(JSON.stringify({ ...s, ...extra }, (_k, v) => (typeof v === 'bigint' ? Number(v) : v), 2));
      return;
    }
    console.log(`pin directory ${s.pinDir}`);
    if (!s.links.length) console.log('  nothing attached');
    for (const l of s.links)
      console.log(
        `  ${l.pin.padEnd(28)} link ${String(l.linkId).padEnd(5)} prog ${l.program} (id ${l.progId}, tag ${l.tag}) → ${l.target}`,
      );
    console.log(`enrolled pods: ${s.enrolledCgroups}; captured addresses: ${Object.keys(s.podAddrs).join(', ') || 'none'}`);
    if (s.counters) for (const [k, v] of Object.entries(s.counters)) if (v > 0n) console.log(`  ${k.padEnd(28)} ${v}`);
    if (!('pods' in pending)) console.log(`pods pending enrolment: unknown (asked ${showAddress(addr)}: ${pending.unknown})`);
    else console.log(`pods pending enrolment: ${pending.pods.length || 'none'}`);
    if ('pods' in pending) for (const p of pending.pods) console.log(`  ${p.uid}: ${p.why}`);
    return;
  }
  const removed = cleanupDatapath(pinDir);
  console.log(removed.length ? `removed ${removed.length} pins under ${pinDir}: ${removed.join(', ')}` : `nothing pinned under ${pinDir}`);
}
