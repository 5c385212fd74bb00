// The C/OpenSSL reference pair of the comparison: Debian's stunnel4, one
// process per pod. In the client pod, stunnel listens on 127.0.0.1 in plain
// TCP (one service per benchmark port) and opens a new TLS 1.3 connection
// per client connection to the stunnel of the server pod, which delivers to
// the app on 127.0.0.1. No pooling, and resumption is off on both sides
// (sessionResume = no, NO_TICKET): every connection is a full handshake
// with client certificates, as ambit's own TLS settings also never resume.
// The same two TLS 1.3 suites as ambit are allowed, and certificates come
// from the same built-in CA (`ambit ca issue`). stunnel only checks the
// chain (verifyChain); ambit additionally checks the peer's SPIFFE id.
// Logging is at warning, like the ambit processes, so no per-connection
// log lines are written.
import fs from 'node:fs';
import path from 'node:path';
import { CLI } from '../test/helpers/fixture';
import { sh } from '../test/helpers/proc';
import type { TestPod } from '../test/helpers/topology';
import { PORTS } from './server';

export type Measure = keyof typeof PORTS;
/** In the client pod: 127.0.0.1:(port + CLIENT_OFFSET) is the plain entry of each service. */
export const CLIENT_OFFSET = 10_000;
/** In the server pod: 0.0.0.0:(port + SERVER_OFFSET) accepts the TLS side. */
export const SERVER_OFFSET = 11_000;
const SUITES = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256'; // as src/identity/tls.ts

export const stunnelIdentity = (pod: TestPod): string => `spiffe://cluster.local/ns/default/sa/stunnel-${pod.node.name}-${pod.name}`;

/** Issues the pod's certificate from the run's CA into dir (cert.pem, key.pem, root.pem); reuses an earlier one. */
export async function issueCert(caDir: string, dir: string, pod: TestPod): Promise<void> {
  if (fs.existsSync(path.join(dir, 'root.pem'))) return;
  await sh(process.execPath, [CLI, 'ca', 'issue', '--dir', caDir, '--identity', stunnelIdentity(pod), '--out', dir]);
}

function globalSection(certDir: string): string[] {
  return [
    'foreground = yes',
    'syslog = no',
    'pid =',
    'debug = warning',
    // Service-level defaults for every service below.
    `cert = ${path.join(certDir, 'cert.pem')}`,
    `key = ${path.join(certDir, 'key.pem')}`,
    `CAfile = ${path.join(certDir, 'root.pem')}`,
    'verifyChain = yes',
    'requireCert = yes',
    'sslVersionMin = TLSv1.3',
    `ciphersuites = ${SUITES}`,
    'sessionResume = no',
    'options = NO_TICKET',
  ];
}

/** The client pod's stunnel: plain on 127.0.0.1, TLS to the server pod. */
export function clientConfig(certDir: string, serverIp: string): string {
  const services = (Object.keys(PORTS) as Measure[]).flatMap((m) => [
    '',
    `[${m}]`,
    'client = yes',
    `accept = 127.0.0.1:${PORTS[m] + CLIENT_OFFSET}`,
    `connect = ${serverIp}:${PORTS[m] + SERVER_OFFSET}`,
  ]);
  return `${[...globalSection(certDir), ...services].join('\n')}\n`;
}

/** The server pod's stunnel: TLS in, plain to the app on 127.0.0.1. */
export function serverConfig(certDir: string): string {
  const services = (Object.keys(PORTS) as Measure[]).flatMap((m) => [
    '',
    `[${m}]`,
    `accept = 0.0.0.0:${PORTS[m] + SERVER_OFFSET}`,
    `connect = 127.0.0.1:${PORTS[m]}`,
  ]);
  return `${[...globalSection(certDir), ...services].join('\n')}\n`;
}
