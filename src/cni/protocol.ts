// What the CNI plugin (./plugin.ts, run by the kubelet's container runtime
// for every pod sandbox) and the node agent (src/roots/cni.ts) say to each
// other over the agent's unix socket: one JSON request per connection,
// ended by a newline, and one JSON reply. The plugin imports this file and
// nothing else of ambit, so that it starts fast: it runs inside the
// kubelet's pod creation, once per pod.

/** Where `ambit node` listens for the plugin by default (`--cni-socket`, the netconf's `socket`). */
export const DEFAULT_CNI_SOCKET = '/var/run/ambit/cni.sock';

/** A request is a few hundred bytes; anything past this is not a plugin talking. */
export const MAX_REQUEST_BYTES = 64 * 1024;

export interface CniPodRef {
  namespace: string;
  name: string;
  /** The Kubernetes pod uid (K8S_POD_UID): how the pod's cgroup is named. */
  uid: string;
}

export interface CniRequest {
  command: 'ADD' | 'DEL' | 'CHECK';
  /** CNI_CONTAINERID: the sandbox; DEL names the pod by it when CNI_ARGS are missing. */
  containerId: string;
  /** CNI_NETNS: the sandbox's network namespace (a path). */
  netns: string;
  /** Empty when the runtime gave no K8S_POD_* arguments (a DEL may come without). */
  pod?: CniPodRef;
  /** The pod's addresses, from the chained plugins' prevResult. */
  addresses: string[];
}

/**
 * `enrolled`: capture of the pod is on (ADD, CHECK); `unenrolled`: off (DEL). `skip`: the pod
 * is not in the mesh; it starts untouched. `error`: the pod is in the mesh
 * but could not be enrolled; ADD must fail so no container runs uncaptured.
 */
export type CniReply =
  | { result: 'enrolled'; workload: string }
  | { result: 'unenrolled'; workload: string }
  | { result: 'skip'; reason: string }
  | { result: 'error'; code: string; message: string; hint?: string };

/**
 * The agent's last word on which pods of its node are in the mesh, kept
 * beside the socket: when the agent cannot be reached the plugin reads it
 * to tell a mesh pod (ADD fails) from one outside the mesh (ADD passes).
 */
export interface CniMembers {
  node: string;
  written: string;
  pods: { namespace: string; name: string; addresses: string[] }[];
}

/** The members file of a socket: /var/run/ambit/cni.sock → /var/run/ambit/cni.members.json. */
export const membersFileOf = (socket: string): string => `${socket.replace(/\.sock$/, '')}.members.json`;

/** Parses and checks one request line; throws an Error naming the field otherwise. */
export function parseRequest(line: string): CniRequest {
  const o = JSON.parse(line) as Record<string, unknown>;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error('request is not a JSON object');
  const { command, containerId, netns, pod, addresses } = o;
  if (command !== 'ADD' && command !== 'DEL' && command !== 'CHECK')
    throw new Error(`command ${JSON.stringify(command)} is not ADD, DEL or CHECK`);
  if (typeof containerId !== 'string' || !containerId || containerId.length > 256)
    throw new Error('containerId must be a non-empty string (CNI_CONTAINERID)');
  if (typeof netns !== 'string' || netns.length > 4096) throw new Error('netns must be a path (CNI_NETNS)');
  if (!Array.isArray(addresses) || addresses.length > 16 || !addresses.every((a) => typeof a === 'string' && a.length <= 64))
    throw new Error('addresses must be a list of at most 16 addresses');
  let ref: CniPodRef | undefined;
  if (pod !== undefined) {
    const p = pod as Record<string, unknown>;
    const field = (k: string): string => {
      const v = p?.[k];
      if (typeof v !== 'string' || v.length > 253) throw new Error(`pod.${k} must be a string of at most 253 characters`);
      return v;
    };
    ref = { namespace: field('namespace'), name: field('name'), uid: field('uid') };
  }
  return { command, containerId, netns, pod: ref, addresses: addresses as string[] };
}
