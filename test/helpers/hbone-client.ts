// A hand-driven HBONE client for root tests that play a peer: mutual TLS
// with a certificate from the test's CA, from inside any netns, then CONNECT
// streams the test can answer, reset or leave hanging as it likes.
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import http2 from 'node:http2';
import tls from 'node:tls';
import { connectFromNetns } from '../../src/datapath/netns';
import { type BuiltinCa, EC_ALG, toPem } from '../../src/identity/builtin-ca';
import { must } from './must';
import { TIME_SCALE } from './proc';
import { type Outcome, outcomeOfError } from './refusal';

export interface ClientCert {
  cert: string;
  key: string;
}

export async function certFor(ca: BuiltinCa, identity: string): Promise<ClientCert> {
  const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await ca.issue(keys.publicKey, identity);
  return { cert, key: toPem(Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), 'PRIVATE KEY') };
}

/** An HTTP/2 session over mutual TLS to ip:15008, dialed from inside netnsPath; resolves once connected. */
export function openSession(netnsPath: string, ip: string, cert: ClientCert, timeoutMs = 5000): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const tcp = connectFromNetns(netnsPath, ip, 15008, { allowHalfOpen: false });
    const session = http2.connect(`https://${ip}:15008`, {
      createConnection: () =>
        tls.connect({ socket: tcp, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', rejectUnauthorized: false, ...cert }),
    });
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`no HBONE session to ${ip} in ${timeoutMs * TIME_SCALE} ms`));
    }, timeoutMs * TIME_SCALE);
    session.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    session.once('connect', () => {
      clearTimeout(timer);
      resolve(session);
    });
  });
}

/**
 * Sends CONNECT; resolves with its outcome (`status N` and the stream, `rst
 * N`, `goaway` when the session takes no new streams, `timeout`; see
 * Outcome). Never rejects.
 */
export function connect(
  session: http2.ClientHttp2Session,
  authority: string,
  headers: http2.OutgoingHttpHeaders = {},
  timeoutMs = 5000,
): Promise<{ outcome: Outcome; stream?: http2.ClientHttp2Stream }> {
  let stream: http2.ClientHttp2Stream;
  try {
    stream = session.request({ ':method': 'CONNECT', ':authority': authority, ...headers }, { endStream: false });
  } catch (err) {
    return Promise.resolve({ outcome: outcomeOfError(err as Error) });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      resolve({ outcome: 'timeout' });
    }, timeoutMs * TIME_SCALE);
    const done = (outcome: Outcome, s?: http2.ClientHttp2Stream): void => {
      clearTimeout(timer);
      resolve({ outcome, stream: s });
    };
    stream.on('error', (err) => done(streamOutcome(stream, err)));
    stream.once('close', () => done(`rst ${stream.rstCode}`));
    stream.once('response', (h) => done(`status ${h[':status']}`, stream));
  });
}

/** A CONNECT that must be answered 200: resolves with its open stream; fails naming the outcome otherwise. */
export async function connectOk(
  session: http2.ClientHttp2Session,
  authority: string,
  headers: http2.OutgoingHttpHeaders = {},
  what = `CONNECT ${authority}`,
): Promise<http2.ClientHttp2Stream> {
  const r = await connect(session, authority, headers);
  assert.equal(r.outcome, 'status 200', what);
  return must(r.stream, `${what}: its stream`);
}

/** A stream's error: a reset by the peer is its RST_STREAM code; the rest as for any error. */
function streamOutcome(stream: http2.ClientHttp2Stream, err: Error): Outcome {
  return (err as NodeJS.ErrnoException).code === 'ERR_HTTP2_STREAM_ERROR' ? `rst ${stream.rstCode}` : outcomeOfError(err);
}

/**
 * A whole HBONE attempt from inside netnsPath: TCP to ip:15008, TLS with
 * clientTls, HTTP/2, one CONNECT to authority. Resolves with what the peer
 * saw first (see Outcome): `status N`, a TLS `alert …`, `reset`, `closed`
 * (the session ended with no answer), `rst N`, or `timeout` after
 * timeoutMs. Never rejects; the session is destroyed either way.
 */
export function attempt(
  netnsPath: string,
  ip: string,
  clientTls: tls.ConnectionOptions,
  authority: string,
  timeoutMs = 5000,
): Promise<Outcome> {
  return new Promise((resolve) => {
    const tcp = connectFromNetns(netnsPath, ip, 15008, { allowHalfOpen: false });
    const session = http2.connect(`https://${ip}:15008`, {
      createConnection: () =>
        tls.connect({ socket: tcp, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', rejectUnauthorized: false, ...clientTls }),
    });
    const timer = setTimeout(() => done('timeout'), timeoutMs * TIME_SCALE);
    let settled = false;
    const done = (o: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve(o);
    };
    session.on('error', (err) => done(outcomeOfError(err)));
    session.on('close', () => done('closed'));
    const req = session.request({ ':method': 'CONNECT', ':authority': authority }, { endStream: false });
    req.on('response', (h) => done(`status ${h[':status']}`));
    req.on('error', (err) => done(streamOutcome(req, err)));
  });
}

/** CONNECT and, in the same tick, RST_STREAM with the given code: the server sees both together. */
export function connectAndReset(session: http2.ClientHttp2Session, authority: string, code: number): void {
  const stream = session.request({ ':method': 'CONNECT', ':authority': authority }, { endStream: false });
  stream.on('error', () => undefined);
  stream.close(code);
}

/** Reads the first line the app behind an open CONNECT stream sends (podapp whoami does). */
export function firstLine(stream: http2.ClientHttp2Stream, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(
      () => reject(new Error(`no line in ${timeoutMs * TIME_SCALE} ms (got ${JSON.stringify(buf)})`)),
      timeoutMs * TIME_SCALE,
    );
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      stream.off('data', onData);
      resolve(buf.slice(0, nl));
    };
    stream.on('data', onData);
  });
}

/** Writes text and resolves with the echo (podapp whoami echoes after its first line). */
export async function echo(stream: http2.ClientHttp2Stream, text: string): Promise<string> {
  const line = firstLine(stream);
  stream.write(`${text}\n`);
  return line;
}
