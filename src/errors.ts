// Errors that leave the process carry a stable code (grep-able in logs and
// docs) and a hint that names the likely fix. Expected per-connection
// outcomes (no original destination, refused upstream) are values, not
// exceptions: see src/tunnel.
export type ErrorCode =
  | 'AMBIT_E_KERNEL' // kernel lacks a feature
  | 'AMBIT_E_PRIVILEGE' // missing capability
  | 'AMBIT_E_MOUNT' // bpffs or cgroup2 not mounted
  | 'AMBIT_E_BPF_LOAD' // object open/load/verifier
  | 'AMBIT_E_BPF_ATTACH' // link create/pin/update
  | 'AMBIT_E_BPF_MAP' // map update/lookup
  | 'AMBIT_E_PIN_INCOMPATIBLE'
  | 'AMBIT_E_NETNS' // setns/socket inside a pod netns
  | 'AMBIT_E_ENROL' // pod facts invalid or conflicting
  | 'AMBIT_E_CONFIG' // configuration file invalid
  | 'AMBIT_E_CA' // the CA refused or answered wrongly
  | 'AMBIT_E_XDS' // the control plane's stream failed or sent something invalid
  | 'AMBIT_E_AUTH' // a node's bearer token or requested identity was refused
  | 'AMBIT_E_ADMIN' // a node's admin endpoint could not be reached or did not answer as ambit does (`ambit config`)
  | 'AMBIT_E_INTERNAL'; // a fault of ambit's own (a bug): an error that carried no code

export class AmbitError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly hint?: string,
  ) {
    super(hint ? `${message} (hint: ${hint})` : message);
    this.name = 'AmbitError';
  }
}
