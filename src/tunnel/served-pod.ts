// A pod as the tunnel serves it: who it is, where it lives, and servers
// accepting on its three listening sockets.
import type net from 'node:net';
import type { Netns } from '../agent/netns';
import type { Workload } from '../state/types';

export interface ServedPod {
  readonly workload: Workload;
  readonly podId: number;
  readonly identity: string;
  readonly netns: Netns;
  readonly outbound: net.Server;
  readonly inboundPlain: net.Server;
  readonly inboundHbone: net.Server;
}
