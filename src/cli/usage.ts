// What each `ambit` command accepts, printed by --help and after a mistake.
import { limitUsage } from './limit-flags';

const LIMITS = `  timeouts and caps of the tunnel (durations: 500ms, 10s, 5m, 1h):
${limitUsage('    ')}`;

export const NODE_USAGE = `usage:
  ambit node --config FILE --node NAME [flags]           standalone: the mesh from a YAML file
  ambit node --xds HOST:PORT --xds-root FILE --node NAME [flags]   state and certificates from a control plane

  --config FILE            mesh configuration (YAML); re-read when it changes
  --node NAME              this node's name in the mesh
  --pods-cgroup DIR        cgroup v2 directory holding the pods (standalone)
  --pin-dir DIR            bpffs directory for ambit's pins
  --tunnel hbone|plain     hbone (default): mutual TLS; plain: unencrypted TCP relay, to measure the datapath
  --workers N              tunnel worker processes (default: one per CPU the agent may use (affinity, cgroup cpu.max); 0: in the agent)
  --drain-seconds S        on SIGTERM, how long open connections may finish (default 25)
  --probe-sources LIST     plaintext from these reaches pods without policy, for kubelet probes under STRICT:
                           node (default): a socket of this host's network namespace; IP addresses: trusted
                           on the address alone (e.g. node,169.254.7.127 behind an SNAT rule); none: nothing
  --cni                    enrol new pods when the ambit-cni plugin asks, on /var/run/ambit/cni.sock
  --cni-socket PATH        the same on another socket (as the plugin's netconf "socket" says)
  with --xds:
  --xds-root FILE          the control plane's root certificate
  --xds-token FILE         bearer token (re-read on every call)
  --xds-server-name NAME   name to verify the control plane's certificate against
  --xds-max-message-bytes N   largest xDS response accepted (default 67108864: 64 MiB)
  --pods FILE | --kubernetes [--kube-api URL] [--proc DIR]   where this node's pods are found
  --trust-domain TD        (default cluster.local)
  --cluster-id ID          sent to the CA
${LIMITS}`;

export const SIDECAR_USAGE = `usage:
  ambit sidecar --config FILE --workload UID [flags]     the tunnel for one pod

  --config FILE            mesh configuration (YAML); re-read when it changes
  --workload UID           the pod this sidecar serves
  --pods-cgroup DIR        cgroup v2 directory holding the pod
  --workers N              tunnel worker processes (default 0: in this process)
  --pin-dir DIR            bpffs directory for ambit's pins
  --tunnel hbone|plain     hbone (default) or plain
  --drain-seconds S        on SIGTERM, how long open connections may finish (default 25)
${LIMITS}`;

export const WAYPOINT_USAGE = `usage:
  ambit waypoint --config FILE --name NAME --namespace NS [flags]   the L7 proxy of services that opt in
  ambit waypoint --xds HOST:PORT --xds-root FILE --xds-token FILE --name NAME --namespace NS [flags]
                                             routes, policies, mesh and certificate from \`ambit control-plane\`

  --config FILE            mesh configuration (YAML) with its routes:; re-read when it changes
  --xds HOST:PORT          the control plane's xDS (instead of --config); ready after the first sync
  --xds-root FILE          the control plane's root certificate
  --xds-token FILE         the waypoint's bearer token (controlPlane.tokens waypoint: NS/NAME, or its projected token)
  --xds-server-name NAME   name to verify the control plane's certificate against
  --ca-address HOST:PORT   the CA service (default: the --xds address)
  --trust-domain TD        trust domain of the waypoint and of workloads that do not say theirs (default cluster.local)
  --name NAME              the waypoint Gateway's name (also its service account: its identity)
  --namespace NS           the Gateway's namespace
  --listen IP:PORT         HBONE listener (default 0.0.0.0:15008)
  --admin-port N           admin endpoint on 127.0.0.1 (default 15000)
  --stats-port N           Prometheus /metrics (default 15020)
  --ready-port N           /healthz/ready (default 15021)
  --drain-seconds S        on SIGTERM, how long open connections may finish (default 25)
${LIMITS}`;

export const CONTROL_PLANE_USAGE = `usage:
  ambit control-plane --config FILE [flags]    delta xDS and the CA for node agents

  --config FILE            control plane configuration (YAML); re-read when it changes
  --listen HOST:PORT       (default 0.0.0.0:15012)
  --server-ip IP           an address nodes dial, for the server certificate (repeatable)
  --server-name DNS        a name nodes dial, for the server certificate (repeatable)
  --kubernetes [--kube-api URL]   take workloads and services from the API server; TokenReview for nodes
  --xds-max-response-bytes N   larger updates go in several responses (default 1048576: 1 MiB)`;

export const CA_INIT_USAGE = `usage:
  ambit ca init --dir DIR      create the built-in CA's root in DIR (readable by root only)`;

export const CA_ISSUE_USAGE = `usage:
  ambit ca issue --dir DIR --identity spiffe://TD/ns/NS/sa/SA --out OUTDIR [--ttl SECONDS (default 86400)]
                               write cert.pem, key.pem and root.pem for one identity`;

export const CA_USAGE = `${CA_INIT_USAGE}\n${CA_ISSUE_USAGE.replace(/^usage:\n/, '')}`;

export const DATAPATH_PROBE_USAGE = `usage:
  ambit datapath probe [--pin-dir DIR]            check the kernel, mounts and privileges ambit needs`;
export const DATAPATH_STATUS_USAGE = `usage:
  ambit datapath status [--pin-dir DIR] [--json] [--admin HOST:PORT]
                                                  what is attached and pinned, enrolled pods, counters, and the
                                                  pods pending enrolment with why (asked of the agent at --admin,
                                                  default 127.0.0.1:15000)`;
export const DATAPATH_CLEANUP_USAGE = `usage:
  ambit datapath cleanup [--pin-dir DIR]          remove ambit's pins (detaches its programs)`;

export const DATAPATH_USAGE = [DATAPATH_PROBE_USAGE, DATAPATH_STATUS_USAGE, DATAPATH_CLEANUP_USAGE]
  .map((u, i) => (i ? u.replace(/^usage:\n/, '') : u))
  .join('\n');

export const CONFIG_USAGE = `usage:
  ambit config workloads|services|policies|certificates|connections [flags]
                           what a running node holds, read from its admin endpoint

  --admin HOST:PORT        the node's admin endpoint (default 127.0.0.1:15000; it listens on
                           localhost only: run this on the node, in its network namespace)
  -o, --output FORMAT      table (default), json or yaml (every field of each row)
  -n, --namespace NS       only rows of namespace NS (certificates: of identities in NS)
  --node NAME              workloads: only those placed on node NAME

  workloads     NAMESPACE POD-NAME ADDRESS NODE PROTOCOL DATAPLANE STATE (enrolled, waiting, failed on this node)
  services      NAMESPACE SERVICE-NAME SERVICE-VIP PORTS (port:targetPort) ENDPOINTS
  policies      NAMESPACE POLICY-NAME ACTION SCOPE DRY-RUN RULES
  certificates  CERTIFICATE-NAME TYPE (leaf, intermediate, root) STATUS VALID NOT-AFTER NOT-BEFORE SERIAL
  connections   NAMESPACE POD DIRECTION SOURCE SOURCE-IDENTITY DESTINATION SERVICE PROTOCOL PEER AGE
                TO-DST TO-SRC (bytes each way) [WORKER]: the connections open now`;

export const CNI_USAGE = `usage:
  ambit cni install [--conf-dir DIR] [--bin-dir DIR] [--socket PATH] [--node-bin PATH]
                           put ambit-cni into DIR (default /opt/cni/bin) and at the end of the plugins
                           of the first conflist in --conf-dir (default /etc/cni/net.d); idempotent
  ambit cni uninstall [--conf-dir DIR] [--bin-dir DIR]
                           take both out again

  --socket PATH            the agent's --cni-socket, when not /var/run/ambit/cni.sock
  --node-bin PATH          Node.js as the host sees it (default: the one running this command)`;

export const VERSION_USAGE = `usage:
  ambit --version | ambit version     the version of ambit and of Node.js`;

export const WORKER_USAGE = `usage:
  ambit worker                 a tunnel worker; started by \`ambit node\` over IPC, not by hand`;

export const USAGE = `usage:
  ambit node --config FILE --node NAME [flags]
  ambit node --xds HOST:PORT --xds-root FILE --node NAME [flags]
  ambit sidecar --config FILE --workload UID [flags]
  ambit waypoint --config FILE --name NAME --namespace NS [flags]
  ambit waypoint --xds HOST:PORT --xds-root FILE --name NAME --namespace NS [flags]
  ambit control-plane --config FILE [flags]
  ambit ca init|issue …
  ambit datapath probe|status|cleanup [--pin-dir DIR] [--json]
  ambit cni install|uninstall [--conf-dir DIR] [--bin-dir DIR]
  ambit config workloads|services|policies|certificates|connections [-o table|json|yaml] [flags]
  ambit --version
  ambit COMMAND --help     the flags of one command`;
