// Messages between the agent and its tunnel workers (Node IPC, JSON). The
// agent owns state, certificates and the listening sockets; a worker gets a
// duplicate of each pod socket as a handle alongside a `pod` message and
// serves it. Certificates cross the pipe in PEM: a worker's keys, like the
// agent's, live in memory only.
import type { ListenerRole } from '../datapath/ports';
import type { MeshConfig } from '../state/types';
import type { ConnectionInfo } from './connections';
import type { TunnelLimits } from './limits';
import type { ProbeSources } from './node-origin';
import type { TunnelMode } from './tunnel';

/** A certificate as it travels (dates as ISO strings). */
export interface WireCert {
  identity: string;
  chainPem: string;
  keyPem: string;
  rootsPem: string;
  notBefore: string;
  notAfter: string;
}

export type ToWorker =
  | {
      t: 'init';
      pinDir: string;
      mode: TunnelMode;
      config: MeshConfig;
      logLevel: string;
      limits: Partial<TunnelLimits>;
      probeSources?: ProbeSources;
    }
  | { t: 'config'; config: MeshConfig }
  | { t: 'cert'; cert: WireCert }
  /** The answer to `cert?` when the agent has no certificate to give (the CA failed): the worker's waiters fail with AMBIT_E_CA. */
  | { t: 'certFailed'; identity: string; message: string }
  | { t: 'pod'; uid: string; podId: number; identity: string; netns: string; role: ListenerRole }
  | { t: 'unpod'; uid: string }
  | { t: 'drain'; deadlineMs: number }
  | { t: 'metrics'; id: number }
  /** The connections the worker carries now (GET /connections). */
  | { t: 'connections'; id: number }
  | { t: 'log'; level: string };

export type FromWorker =
  | { t: 'ready' }
  | { t: 'serving'; uid: string }
  /** The worker closed its copies of a pod's sockets (after `unpod`). */
  | { t: 'released'; uid: string }
  | { t: 'cert?'; identity: string }
  | { t: 'metrics'; id: number; data: unknown }
  /** At most MAX_LISTED rows; total counts them all. */
  | { t: 'connections'; id: number; connections: ConnectionInfo[]; total: number }
  | { t: 'drained'; left: number };
