// The node agent's end of the CNI socket: one request per connection, one
// reply, then close. The socket is root's alone (mode 0600: whoever may talk
// to it may have a pod's netns entered and its cgroup captured). A peer that
// sends too much, too slowly or not JSON is answered with an error and cut
// off; no more than a few requests are served at once and the rest are
// turned away at once, so a stuck peer costs a slot for a bounded time and
// never the agent's memory.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { AmbitError, type ErrorCode } from '../errors';
import { type CniReply, type CniRequest, MAX_REQUEST_BYTES, parseRequest } from './protocol';

export interface CniServerOptions {
  socket: string;
  /** Decides and carries out one request. */
  handle: (req: CniRequest) => Promise<CniReply>;
  /** Requests served at once (default 4); more are answered "busy". */
  maxInFlight?: number;
  /** How long a peer has to send its whole request (default 5 s). */
  readTimeoutMs?: number;
  /** How long a request may take to be carried out before the peer is answered with an error (default 60 s). */
  handleTimeoutMs?: number;
  /** Told of every request and its reply, and of peers turned away. */
  log: (fields: Record<string, unknown>, msg: string) => void;
}

export class CniServer {
  private inFlight = 0;

  private constructor(
    private readonly server: net.Server,
    private readonly opts: CniServerOptions,
  ) {}

  static async listen(opts: CniServerOptions): Promise<CniServer> {
    const dir = path.dirname(opts.socket);
    if (!fs.existsSync(dir)) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    removeStaleSocket(opts.socket);
    const srv = new CniServer(net.createServer(), opts);
    srv.server.on('connection', (s) => srv.serve(s));
    // The socket file is created by bind() inside listen(), synchronously: with
    // this umask it never exists with a mode wider than 0600, even for an instant.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        srv.server.once('error', reject);
        srv.server.listen(opts.socket, () => {
          srv.server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    fs.chmodSync(opts.socket, 0o600);
    return srv;
  }

  close(): void {
    this.server.close();
    try {
      fs.unlinkSync(this.opts.socket);
    } catch {
      /* already gone */
    }
  }

  private serve(s: net.Socket): void {
    s.on('error', () => undefined);
    const max = this.opts.maxInFlight ?? 4;
    if (this.inFlight >= max) {
      this.opts.log({ inFlight: this.inFlight }, 'CNI request turned away: too many at once');
      return void s.end(reply({ result: 'error', code: 'AMBIT_E_CNI', message: `the agent is serving ${max} CNI requests already` }));
    }
    this.inFlight++;
    s.once('close', () => this.inFlight--);
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (r: CniReply, fields: Record<string, unknown> = {}): void => {
      if (done) return;
      done = true;
      clearTimeout(readTimer);
      if (r.result === 'error') this.opts.log({ ...fields, code: r.code, err: r.message }, 'CNI request failed');
      s.end(reply(r));
      // A peer that never reads its reply must not keep the slot.
      setTimeout(() => s.destroy(), 1000).unref();
    };
    const readTimer = setTimeout(
      () =>
        finish({
          result: 'error',
          code: 'AMBIT_E_CNI',
          message: `no complete request within ${(this.opts.readTimeoutMs ?? 5000) / 1000} s`,
        }),
      this.opts.readTimeoutMs ?? 5000,
    );
    s.on('data', (d: Buffer) => {
      if (done) return;
      buf = Buffer.concat([buf, d]);
      const nl = buf.indexOf(10);
      if (nl < 0 && buf.length <= MAX_REQUEST_BYTES) return;
      if (nl < 0 || nl > MAX_REQUEST_BYTES)
        return finish({ result: 'error', code: 'AMBIT_E_CNI', message: `request longer than ${MAX_REQUEST_BYTES} bytes` });
      clearTimeout(readTimer);
      s.pause();
      let req: CniRequest;
      try {
        req = parseRequest(buf.subarray(0, nl).toString('utf8'));
      } catch (err) {
        return finish({ result: 'error', code: 'AMBIT_E_CNI', message: `invalid request: ${(err as Error).message}` });
      }
      const limit = this.opts.handleTimeoutMs ?? 60_000;
      const slow = setTimeout(
        () =>
          finish(
            { result: 'error', code: 'AMBIT_E_ENROL', message: `enrolment not done within ${limit / 1000} s` },
            { containerId: req.containerId },
          ),
        limit,
      );
      this.opts.handle(req).then(
        (r) => {
          clearTimeout(slow);
          finish(r, { command: req.command, pod: req.pod, containerId: req.containerId });
        },
        (err: Error & { code?: ErrorCode; hint?: string }) => {
          clearTimeout(slow);
          finish(
            { result: 'error', code: err.code ?? 'AMBIT_E_INTERNAL', message: err.message, hint: err.hint },
            { command: req.command, pod: req.pod, containerId: req.containerId },
          );
        },
      );
    });
    s.on('end', () => {
      if (!done && buf.indexOf(10) < 0) finish({ result: 'error', code: 'AMBIT_E_CNI', message: 'request ended without a newline' });
    });
  }
}

const reply = (r: CniReply): string => `${JSON.stringify(r)}\n`;

/** A socket file left by an agent that is gone is replaced; anything else at that path is not touched. */
function removeStaleSocket(p: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return;
  }
  if (!st.isSocket())
    throw new AmbitError('AMBIT_E_CONFIG', `--cni-socket ${p} exists and is not a socket`, 'give --cni-socket a free path');
  fs.unlinkSync(p);
}
