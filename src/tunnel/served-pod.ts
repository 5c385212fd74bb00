// A pod as the tunnel serves it: who it is, where it lives, and servers
// accepting on its three listening sockets.
import type net from 'node:net';
import type { Netns } from '../datapath/netns';
import type { PerRole } from '../datapath/ports';
import type { Workload } from '../state/types';

/** Besides who it is, one server per listener role (ROLES). */
export interface ServedPod extends Readonly<PerRole<net.Server>> {
  readonly workload: Workload;
  readonly podId: number;
  readonly identity: string;
  readonly netns: Netns;
}
