// One attempt of one request to one endpoint: a CONNECT stream over the
// waypoint's pooled HBONE sessions to the endpoint's :15008, then the
// request in the protocol it came in (HTTP/1.1 on a keep-alive connection
// of keepalive.ts, or an HTTP/2 session of its own inside the stream), so
// every request is balanced on its own even when the client keeps one
// connection open. The
// outcome is a value in retry.ts's vocabulary, never an exception: a
// backend that answers garbage is a reset with a protocol error (502 UPE),
// one that cannot be reached a connect failure (UF).
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import { jsDuplex } from './js-duplex';
import type { AttemptOutcome } from './retry';

export type Headers = Record<string, string | string[] | undefined>;

/** What goes to the endpoint: the request after routing and filters, its body already read. */
export interface OutgoingRequest {
  method: string;
  target: string;
  /** Host (HTTP/1.1) or :authority (HTTP/2). */
  host: string;
  headers: Headers;
  body: Buffer;
  h2: boolean;
}

export interface UpstreamResponse {
  status: number;
  /** grpc-status of a trailers-only answer, or from the trailers once the body ended. */
  grpcStatus?: number;
  headers: Headers;
  body: Readable;
  /** The trailers once the body has ended (HTTP/2 only; empty otherwise). */
  trailers: () => Headers;
  /** Ends the attempt's stream (the response was abandoned). */
  abort: () => void;
}

export type AttemptResult =
  | (Extract<AttemptOutcome, { kind: 'response' }> & { response: UpstreamResponse })
  | (Exclude<AttemptOutcome, { kind: 'response' }> & { detail?: string; protocolError?: boolean });

/** Headers that describe one hop's connection, not the request (RFC 9110 §7.6.1); HTTP/2 forbids them. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
]);

/** The end-to-end headers of a message: hop-by-hop ones, those `connection` names, and pseudo-headers removed. */
export function endToEnd(h: Readonly<Headers>): Headers {
  const named = new Set(
    String(h.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: Headers = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || k.startsWith(':') || HOP_BY_HOP.has(k) || named.has(k)) continue;
    // HTTP/2 allows te only as "trailers" (gRPC sends it); HTTP/1.1 keeps it as it came.
    if (k === 'te' && String(v).toLowerCase() !== 'trailers') continue;
    out[k] = v;
  }
  return out;
}

const grpcStatusOf = (v: unknown): number | undefined => {
  const n = typeof v === 'string' && /^\d{1,2}$/.test(v) ? Number(v) : undefined;
  return n;
};

/** Sends the request over an open CONNECT stream and resolves with the endpoint's answer or why there is none. */
export function sendOver(stream: Duplex, req: OutgoingRequest): Promise<AttemptResult> {
  return req.h2 ? sendH2(stream, req) : sendH1(stream, req);
}

function sendH1(stream: Duplex, req: OutgoingRequest): Promise<AttemptResult> {
  return sendH1Via(req, {
    // node:http's corked writes straight to an HTTP/2 stream garble the request head (js-duplex.ts).
    options: { createConnection: () => jsDuplex(stream) as net.Socket },
    keepAlive: false,
    destroy: () => stream.destroy(),
  });
}

/** How an HTTP/1.1 attempt gets its connection, and what its failures mean. */
export interface H1Via {
  /** createConnection (a stream of its own) or agent (keepalive.ts), and whatever the agent keys on. */
  options: http.RequestOptions;
  /** Whether the connection may carry further requests after this one. */
  keepAlive: boolean;
  /** Ends the connection (the attempt failed or its answer was abandoned). */
  destroy: () => void;
  /** A failure before any answer in the pool's terms (a connect failure, a refused stream), else a reset. */
  classify?: (err: NodeJS.ErrnoException, out: http.ClientRequest) => AttemptResult | undefined;
}

/** Sends an HTTP/1.1 request over the connection `via` gives and resolves with the answer or why there is none. */
export function sendH1Via(req: OutgoingRequest, via: H1Via): Promise<AttemptResult> {
  return new Promise((resolve) => {
    let answered = false;
    const out = http.request({
      method: req.method,
      path: req.target,
      headers: {
        ...endToEnd(req.headers),
        host: req.host,
        connection: via.keepAlive ? 'keep-alive' : 'close',
        'content-length': String(req.body.length),
      },
      setHost: false,
      ...via.options,
    });
    out.on('error', (err: NodeJS.ErrnoException) => {
      via.destroy();
      out.destroy();
      if (answered) return;
      answered = true;
      resolve(
        via.classify?.(err, out) ?? {
          kind: 'reset',
          detail: err.code ?? err.message,
          protocolError: err.code?.startsWith('HPE_') ?? false,
        },
      );
    });
    out.on('response', (res) => {
      answered = true;
      res.on('error', () => undefined);
      resolve({
        kind: 'response',
        status: res.statusCode ?? 502,
        response: {
          status: res.statusCode ?? 502,
          headers: res.headers,
          body: res,
          trailers: () => res.trailers,
          abort: () => {
            out.destroy();
            via.destroy();
          },
        },
      });
    });
    out.end(req.body);
  });
}

function sendH2(stream: Duplex, req: OutgoingRequest): Promise<AttemptResult> {
  return new Promise((resolve) => {
    let answered = false;
    const settle = (r: AttemptResult): void => {
      if (answered) return;
      answered = true;
      resolve(r);
    };
    const session = http2.connect(`http://${req.host}`, { createConnection: () => stream as net.Socket });
    session.on('error', () => undefined);
    const fail = (err?: NodeJS.ErrnoException): void => {
      session.destroy();
      stream.destroy();
      settle({ kind: 'reset', detail: err?.code ?? err?.message ?? 'closed', protocolError: err?.code === 'ERR_HTTP2_ERROR' });
    };
    session.once('close', () => fail());
    let s: http2.ClientHttp2Stream;
    try {
      s = session.request(
        { ...endToEnd(req.headers), ':method': req.method, ':path': req.target, ':authority': req.host, ':scheme': 'http' },
        { endStream: false },
      );
    } catch (err) {
      return void fail(err as NodeJS.ErrnoException);
    }
    let trailers: Headers = {};
    s.on('trailers', (t) => {
      trailers = t as Headers;
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (s.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) {
        session.destroy();
        stream.destroy();
        return settle({ kind: 'refused-stream', detail: 'REFUSED_STREAM' });
      }
      fail(err);
    });
    s.once('close', () => {
      session.close();
      if (!answered) fail();
    });
    s.once('response', (h) => {
      const status = Number(h[':status']) || 502;
      const grpcStatus = grpcStatusOf(h['grpc-status']);
      settle({
        kind: 'response',
        status,
        ...(grpcStatus === undefined ? {} : { grpcStatus }),
        response: {
          status,
          ...(grpcStatus === undefined ? {} : { grpcStatus }),
          headers: h as Headers,
          body: s,
          trailers: () => trailers,
          abort: () => {
            s.close(http2.constants.NGHTTP2_CANCEL);
            session.destroy();
            stream.destroy();
          },
        },
      });
    });
    s.end(req.body);
  });
}

/** The gRPC status a trailer block carries, if any. */
export const grpcStatusFrom = (t: Readonly<Headers>): number | undefined => grpcStatusOf(t['grpc-status']);
