// A tunnel worker's certificates: pushed by the agent, which owns the keys'
// lifecycle and talks to the CA; one missing or expired is asked for over
// IPC. The agent answers with the certificate or with why it has none, and
// a worker never waits longer than certificateWaitMs either way: a CA
// outage fails new connections fast with AMBIT_E_CA instead of holding them.
import { EventEmitter } from 'node:events';
import { AmbitError } from '../errors';
import type { CertProvider, WorkloadCert } from '../identity/cert-manager';
import type { FromWorker, WireCert } from './ipc';

interface Waiter {
  resolve: (c: WorkloadCert) => void;
  reject: (err: Error) => void;
}

export class RemoteCerts extends EventEmitter implements CertProvider {
  private readonly certs = new Map<string, WorkloadCert>();
  /** Callers waiting per identity, and the one timer bounding their wait. */
  private readonly waiting = new Map<string, { waiters: Waiter[]; timer: NodeJS.Timeout }>();

  constructor(
    private readonly send: (m: FromWorker) => void,
    private readonly waitMs: () => number,
    private readonly now: () => number = Date.now,
  ) {
    super();
  }

  fetch(identity: string): Promise<WorkloadCert> {
    const c = this.certs.get(identity);
    if (c && c.notAfter.getTime() > this.now()) return Promise.resolve(c);
    return new Promise((resolve, reject) => {
      const pending = this.waiting.get(identity);
      if (pending) return void pending.waiters.push({ resolve, reject });
      const ms = this.waitMs();
      const timer = setTimeout(
        () =>
          this.fail(
            identity,
            new AmbitError(
              'AMBIT_E_CA',
              `no certificate for ${identity} from the agent within ${ms} ms (certificateWaitMs)`,
              "the agent may be overloaded or its CA slow; see the agent's log",
            ),
          ),
        ms,
      );
      this.waiting.set(identity, { waiters: [{ resolve, reject }], timer });
      this.send({ t: 'cert?', identity });
    });
  }

  get(identity: string): WorkloadCert | undefined {
    return this.certs.get(identity);
  }

  put(w: WireCert): void {
    const c: WorkloadCert = { ...w, notBefore: new Date(w.notBefore), notAfter: new Date(w.notAfter) };
    this.certs.set(c.identity, c);
    const pending = this.waiting.get(c.identity);
    this.waiting.delete(c.identity);
    if (pending) {
      clearTimeout(pending.timer);
      for (const w of pending.waiters) w.resolve(c);
    }
    this.emit('updated', c.identity, c);
  }

  /** The agent could not get a certificate for identity: everyone waiting for it fails now. */
  failed(identity: string, message: string): void {
    this.fail(identity, new AmbitError('AMBIT_E_CA', message));
  }

  private fail(identity: string, err: AmbitError): void {
    const pending = this.waiting.get(identity);
    if (!pending) return;
    this.waiting.delete(identity);
    clearTimeout(pending.timer);
    for (const w of pending.waiters) w.reject(err);
  }
}
