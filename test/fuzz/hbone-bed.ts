// The test bed the HBONE fuzzer runs against: two nodes with one pod each,
// a real `ambit node` with two tunnel workers on each, a whoami app in the
// destination pod (n2-p1:8080), and a mesh certificate for the fuzzer from
// the same built-in CA the agents use. The fuzzer dials from n1-p1's netns
// straight to n2-p1:15008, as a compromised workload bypassing capture
// would. Health is read from /proc: the agent's and workers' pids and their
// open fds.
import { type ChildProcess, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type tls from 'node:tls';
import { PORT_INBOUND_HBONE } from '../../src/datapath/ports';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { requestCertificate } from '../../src/identity/cert-manager';
import { clientTlsOptions } from '../../src/identity/tls';
import { Cleanup } from '../helpers/cleanup';
import { dialFrom, PODAPP, spawnNodeAgent, testBed, untilReady, writeMeshYaml } from '../helpers/fixture';
import { at, must } from '../helpers/must';
import { waitFor, waitForLine } from '../helpers/proc';
import type { TestNode, Topology } from '../helpers/topology';
import type { Target } from './hbone-ops';

export const APP_PORT = 8080;
const IDENTITY = 'spiffe://cluster.local/ns/default/sa/default';

export interface Agent {
  node: TestNode;
  child: ChildProcess;
  pid: number;
  /** The last error-level lines and worker exits (a crash's evidence). */
  problems: string[];
  /** Warnings counted by message and reason: how the tunnel answered the fuzz. */
  warnings: Record<string, number>;
}

/** The agent's pid and its forked tunnel workers (its node children in /proc). */
export function processTree(agentPid: number): { agent: number; workers: number[] } {
  const workers: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = fs.readdirSync(`/proc/${agentPid}/task`);
  } catch {
    return { agent: agentPid, workers };
  }
  for (const tid of tasks) {
    let kids = '';
    try {
      kids = fs.readFileSync(`/proc/${agentPid}/task/${tid}/children`, 'utf8');
    } catch {
      continue;
    }
    workers.push(...kids.split(' ').filter(Boolean).map(Number));
  }
  return { agent: agentPid, workers: workers.sort((a, b) => a - b) };
}

/** Open fds of the processes, summed (a pid that is gone counts 0). */
export function fdCount(pids: number[]): number {
  return pids.reduce((n, pid) => {
    try {
      return n + fs.readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      return n;
    }
  }, 0);
}

export class HboneBed {
  readonly agents: Agent[] = [];
  tlsOptions!: tls.ConnectionOptions;

  private constructor(
    readonly topo: Topology,
    private readonly dir: string,
    private readonly cleanup: Cleanup,
  ) {}

  static async create(): Promise<HboneBed> {
    const cleanup = new Cleanup();
    const { topo, dir } = await testBed(cleanup, { nodes: 2, podsPerNode: 1 });
    const bed = new HboneBed(topo, dir, cleanup);
    try {
      await bed.start();
      return bed;
    } catch (err) {
      await bed.destroy();
      throw err;
    }
  }

  get source(): { netnsPath: string } {
    return this.topo.pod(1, 1);
  }
  /** n1's agent, whose workers carry the honest checks' connections. */
  get sourceAgent(): Agent {
    return at(this.agents, 0, 'agents');
  }
  get destination(): Agent {
    return at(this.agents, 1, 'agents');
  }
  get target(): Target {
    return { ip: this.topo.pod(2, 1).ip, openPort: APP_PORT, closedPort: 9, otherIp: this.topo.pod(1, 1).ip };
  }

  private async start(): Promise<void> {
    const topo = this.topo;
    const config = writeMeshYaml(topo, this.dir);
    const caDir = path.join(this.dir, 'ca');
    for (const node of topo.nodes) {
      const child = spawnNodeAgent(topo, node, ['--config', config, '--workers', '2'], { AMBIT_LOG_LEVEL: 'warn' });
      const agent: Agent = { node, child, pid: must(child.pid, `agent ${node.name}'s pid`), problems: [], warnings: {} };
      this.agents.push(agent);
      keepProblems(agent);
      const exited = new Promise<never>((_, reject) =>
        child.once('exit', (code) =>
          reject(new Error(`agent ${node.name} exited (${code}) while starting:\n${agent.problems.join('\n')}`)),
        ),
      );
      await Promise.race([untilReady(node), exited]);
      await Promise.race([waitFor(`${node.name}: two tunnel workers`, () => processTree(agent.pid).workers.length === 2), exited]);
      exited.catch(() => undefined);
    }
    const app = topo.spawnInPod(topo.pod(2, 1), process.execPath, [PODAPP, 'whoami', String(APP_PORT)]);
    await waitForLine(app, (l) => l.includes('listening'), 'whoami');
    await waitFor('honest traffic through the tunnel', () => this.honest(4), 30_000, 200);
    const ca = await BuiltinCa.open(caDir);
    const cert = await requestCertificate(ca, IDENTITY, 3600);
    this.tlsOptions = clientTlsOptions(cert, [IDENTITY]);
  }

  /** n connections n1-p1 → n2-p1:8080 through the tunnel (captured, HBONE): true when all succeed. */
  async honest(n = 10): Promise<boolean> {
    const r = await dialFrom(this.topo, this.topo.pod(1, 1), this.topo.pod(2, 1).ip, APP_PORT, n, 2);
    return r.ok === n;
  }

  /** Every pid of both agents and their workers, now. */
  pids(): number[] {
    return this.agents.flatMap((a) => {
      const t = processTree(a.pid);
      return [t.agent, ...t.workers];
    });
  }

  /**
   * The source side's established TCP connections to the target's :15008 (in n1-p1's netns, where
   * both the tunnel's pooled honest sessions and the fuzzer dial from): each is one fd at the
   * destination that is the peer's to close, not the destination's.
   */
  sourceSessions(): number {
    const out = execFileSync(
      'nsenter',
      [`--net=${this.source.netnsPath}`, 'ss', '-Htn', 'state', 'established', 'dst', `${this.target.ip}:${PORT_INBOUND_HBONE}`],
      { encoding: 'utf8' },
    );
    return out.split('\n').filter((l) => l.trim()).length;
  }

  /** Open fds of the destination agent and its workers. */
  destinationFds(): number {
    const t = processTree(this.destination.pid);
    return fdCount([t.agent, ...t.workers]);
  }

  /**
   * Every open fd of the destination agent and its workers, one line each: `pid/fd → target`, and
   * for a socket the `ss` line that holds it (looked up in the agent's netns and the destination
   * pod's). A failed fd check prints the lines that appeared since a snapshot, naming what outlived it.
   */
  destinationFdLines(): string[] {
    const t = processTree(this.destination.pid);
    const pids = [t.agent, ...t.workers];
    const bySocket = new Map<string, string>();
    for (const ns of [`/proc/${t.agent}/ns/net`, this.topo.pod(2, 1).netnsPath]) {
      let out = '';
      try {
        out = execFileSync('nsenter', [`--net=${ns}`, 'ss', '-Hanpe'], {
          encoding: 'utf8',
          maxBuffer: 64 << 20,
          stdio: ['ignore', 'pipe', 'ignore'],
        });
      } catch {
        continue;
      }
      for (const line of out.split('\n')) {
        const ino = /ino:(\d+)/.exec(line)?.[1];
        if (ino) bySocket.set(ino, line.replace(/\s+/g, ' ').replace(/ users:.*$/, ''));
      }
    }
    const lines: string[] = [];
    for (const pid of pids) {
      let fds: string[] = [];
      try {
        fds = fs.readdirSync(`/proc/${pid}/fd`);
      } catch {
        continue;
      }
      for (const fd of fds) {
        let target = '?';
        try {
          target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          continue;
        }
        const ino = /^socket:\[(\d+)\]$/.exec(target)?.[1];
        const role = pid === t.agent ? 'agent' : 'worker';
        lines.push(
          `${role} ${pid}/${fd} → ${target}${ino ? ` ${bySocket.get(ino) ?? '(in no listed netns, or closed and still held)'}` : ''}`,
        );
      }
    }
    return lines;
  }

  /** Agents, workers and the rest of the bed; then nothing of it may remain. */
  destroy(): Promise<void> {
    return this.cleanup.run();
  }
}

/**
 * Keeps the last error-level lines and worker exits an agent (and its
 * workers, which share its stdout and stderr) printed: the evidence of a
 * crash. Other lines are read and dropped so the pipes never fill.
 */
function keepProblems(agent: Agent): void {
  const keep = (line: string): void => {
    if (line.includes('"level":40')) {
      try {
        const o = JSON.parse(line) as { msg?: string; reason?: string };
        const key = `${o.msg ?? '?'}${o.reason ? ` (${o.reason})` : ''}`;
        agent.warnings[key] = (agent.warnings[key] ?? 0) + 1;
      } catch {
        /* not JSON */
      }
    }
    if (!/"level":(5|6)\d|worker exited|Error|^\s+at /.test(line)) return;
    agent.problems.push(line.length > 4000 ? `${line.slice(0, 4000)}…` : line);
    if (agent.problems.length > 200) agent.problems.splice(0, agent.problems.length - 200);
  };
  readline.createInterface({ input: must(agent.child.stdout, "the agent's stdout pipe") }).on('line', keep);
  readline.createInterface({ input: must(agent.child.stderr, "the agent's stderr pipe") }).on('line', keep);
}
