// ambit-cni: a chained CNI plugin (spec 1.0). The container runtime runs
// it after the plugins that give the pod its network (bridge, calico, …),
// while the pod sandbox is being created and before any container starts.
// ADD asks the node agent to enrol the pod now and passes prevResult on
// unchanged once the agent says capture is on, or that the pod is not in
// the mesh. For a mesh pod, no answer (agent down, too slow) or a failed
// enrolment fails the ADD: the runtime tears the sandbox down and the
// kubelet retries, so no container of a mesh pod runs uncaptured.
//
// The netconf may set `socket` (default /var/run/ambit/cni.sock) and
// `timeoutSeconds` (default 20: the kubelet's call must not hang).
//
// Imports nothing but Node's built-ins and ./protocol: it runs once per pod
// inside the kubelet's pod creation, so its start-up is on that path.
import fs from 'node:fs';
import net from 'node:net';
import { type CniMembers, type CniReply, type CniRequest, DEFAULT_CNI_SOCKET, membersFileOf } from './protocol';

const SUPPORTED = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'];
const MAX_STDIN = 1 << 20;

/** CNI error codes: 1-99 are the spec's, 100 and up the plugin's own. */
const E_INCOMPATIBLE_VERSION = 1;
const E_ENV = 4;
const E_DECODE = 6;
const E_CONFIG = 7;
const E_ENROL = 100;
const E_AGENT_UNREACHABLE = 101;

interface NetConf {
  cniVersion?: string;
  name?: string;
  type?: string;
  socket?: string;
  timeoutSeconds?: number;
  prevResult?: { ips?: { address?: string }[] } & Record<string, unknown>;
}

class PluginError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
  }
}

/** K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;… as a map. */
export function parseCniArgs(s: string | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of (s ?? '').split(';')) {
    const i = kv.indexOf('=');
    if (i > 0) m.set(kv.slice(0, i), kv.slice(i + 1));
  }
  return m;
}

/** The pod's addresses in a prevResult (ips[].address is CIDR notation). */
export function addressesOf(prev: NetConf['prevResult']): string[] {
  return (prev?.ips ?? []).map((ip) => String(ip.address ?? '').split('/')[0] ?? '').filter((a) => net.isIP(a) !== 0);
}

function ask(socket: string, req: CniRequest, timeoutMs: number): Promise<CniReply> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error(`the agent did not answer within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.on('connect', () => s.write(`${JSON.stringify(req)}\n`));
    s.on('data', (d) => {
      buf += d;
      if (buf.length > 1 << 16) s.destroy(new Error('reply too long'));
    });
    s.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf) as CniReply);
      } catch {
        reject(new Error(`the agent's reply is not JSON: ${JSON.stringify(buf.slice(0, 200))}`));
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * With the agent down: is the pod one the agent last said is in the mesh?
 * Without the agent's members file nothing can be told apart, so every pod
 * counts as a mesh pod (fail closed).
 */
function lastKnownMember(socket: string, req: CniRequest): { member: boolean; why: string } {
  const file = membersFileOf(socket);
  let m: CniMembers;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8')) as CniMembers;
  } catch (err) {
    return { member: true, why: `no members file ${file} (${(err as NodeJS.ErrnoException).code ?? 'unreadable'}) to tell otherwise` };
  }
  const hit = m.pods.find(
    (p) => (req.pod && p.namespace === req.pod.namespace && p.name === req.pod.name) || p.addresses.some((a) => req.addresses.includes(a)),
  );
  return hit
    ? { member: true, why: `${hit.namespace}/${hit.name} is in the mesh on node ${m.node} (as of ${m.written})` }
    : { member: false, why: 'not in the mesh' };
}

async function run(env: NodeJS.ProcessEnv, stdin: string): Promise<string> {
  const command = env.CNI_COMMAND;
  if (command === 'VERSION') return JSON.stringify({ cniVersion: '1.0.0', supportedVersions: SUPPORTED });
  if (command !== 'ADD' && command !== 'DEL' && command !== 'CHECK')
    throw new PluginError(E_ENV, `CNI_COMMAND ${JSON.stringify(command)} is not ADD, DEL, CHECK or VERSION`);
  let conf: NetConf;
  try {
    conf = JSON.parse(stdin) as NetConf;
  } catch (err) {
    throw new PluginError(E_DECODE, 'the network configuration on stdin is not JSON', (err as Error).message);
  }
  if (conf === null || typeof conf !== 'object') throw new PluginError(E_DECODE, 'the network configuration on stdin is not a JSON object');
  if (!SUPPORTED.includes(String(conf.cniVersion)))
    throw new PluginError(
      E_INCOMPATIBLE_VERSION,
      `cniVersion ${JSON.stringify(conf.cniVersion)} is not supported`,
      `supported: ${SUPPORTED.join(', ')}`,
    );
  const containerId = env.CNI_CONTAINERID ?? '';
  if (!containerId) throw new PluginError(E_ENV, 'CNI_CONTAINERID is not set');
  if (command !== 'DEL' && !env.CNI_NETNS) throw new PluginError(E_ENV, 'CNI_NETNS is not set');
  if (command !== 'DEL' && !conf.prevResult)
    throw new PluginError(
      E_CONFIG,
      'ambit-cni is a chained plugin and got no prevResult',
      'list it after the plugin that sets up the pod network',
    );
  const timeoutS = conf.timeoutSeconds ?? 20;
  if (typeof timeoutS !== 'number' || !(timeoutS > 0 && timeoutS <= 600))
    throw new PluginError(E_CONFIG, 'timeoutSeconds must be a number from 0 to 600');
  const socket = conf.socket ?? DEFAULT_CNI_SOCKET;

  const args = parseCniArgs(env.CNI_ARGS);
  const [namespace, name, uid] = [args.get('K8S_POD_NAMESPACE'), args.get('K8S_POD_NAME'), args.get('K8S_POD_UID')];
  const req: CniRequest = {
    command,
    containerId,
    netns: env.CNI_NETNS ?? '',
    pod: namespace && name ? { namespace, name, uid: uid ?? '' } : undefined,
    addresses: addressesOf(conf.prevResult),
  };
  const who = req.pod ? `pod ${req.pod.namespace}/${req.pod.name}` : `sandbox ${containerId}`;
  // What ADD hands on: the chain's result, unchanged, in the version the runtime asked for.
  const passOn = command === 'ADD' ? JSON.stringify({ ...conf.prevResult, cniVersion: conf.cniVersion }) : '';

  let reply: CniReply;
  try {
    reply = await ask(socket, req, timeoutS * 1000);
  } catch (err) {
    // Nothing to release without an agent: a restarted agent drops sandboxes whose netns is gone.
    if (command === 'DEL') return '';
    const known = lastKnownMember(socket, req);
    if (!known.member) return passOn;
    throw new PluginError(
      E_AGENT_UNREACHABLE,
      `ambit node agent unreachable at ${socket} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); ${who} is in the mesh and would start uncaptured`,
      `${known.why}; the kubelet retries once the agent is back`,
    );
  }
  if (reply.result === 'error')
    throw new PluginError(E_ENROL, `ambit could not enrol ${who}: ${reply.code}: ${reply.message}`, reply.hint ?? '');
  return passOn;
}

function readStdin(): string {
  const chunks: Buffer[] = [];
  let total = 0;
  const b = Buffer.alloc(65536);
  for (;;) {
    let n: number;
    try {
      n = fs.readSync(0, b, 0, b.length, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      if ((err as NodeJS.ErrnoException).code === 'EOF') break;
      throw err;
    }
    if (n === 0) break;
    total += n;
    if (total > MAX_STDIN) throw new PluginError(E_DECODE, `the network configuration is longer than ${MAX_STDIN} bytes`);
    chunks.push(Buffer.from(b.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString('utf8');
}

function main(): void {
  const version = (): string => {
    try {
      return String((JSON.parse(stdin) as NetConf).cniVersion ?? '1.0.0');
    } catch {
      return '1.0.0';
    }
  };
  let stdin = '';
  const fail = (err: unknown): void => {
    const e = err instanceof PluginError ? err : new PluginError(999, (err as Error).message);
    process.stdout.write(`${JSON.stringify({ cniVersion: version(), code: e.code, msg: e.message, details: e.details })}\n`);
    process.exitCode = 1;
  };
  try {
    stdin = process.env.CNI_COMMAND === 'VERSION' ? '' : readStdin();
  } catch (err) {
    fail(err);
    return;
  }
  run(process.env, stdin).then((out) => {
    if (out) process.stdout.write(`${out}\n`);
  }, fail);
}

if (require.main === module) main();
