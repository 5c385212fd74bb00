// What the node agent and the waypoint both need before dialing the
// control plane: its root certificate, read with an error that says which
// flag and which file, and the address this process reports as its own.
// Only node built-ins here: the agent imports it before it knows whether
// gRPC will be loaded at all.
import fs from 'node:fs';
import os from 'node:os';
import { AmbitError } from '../errors';

/** The PEM at --xds-root, or AMBIT_E_CONFIG naming the file and why. */
export function readXdsRoot(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `cannot read --xds-root ${file}: ${(err as NodeJS.ErrnoException).code}`,
      "give the control plane's root certificate (PEM): <ca.dir>/root-cert.pem of `ambit control-plane`",
    );
  }
}

/** The first non-internal IPv4 address of this host or pod. */
export function firstIpv4(): string | undefined {
  return Object.values(os.networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
}

/** The address reported to the control plane: INSTANCE_IP (the downward API's pod IP) when set. */
export function instanceIp(): string {
  return process.env.INSTANCE_IP ?? firstIpv4() ?? '127.0.0.1';
}
