// One access-log line per completed connection, on each side, with the
// field names of Istio's ztunnel (src.*, dst.*, direction, bytes_sent,
// bytes_recv, duration, error) and the connection id both nodes share.
import type { Logger } from './log';

export type AccessEntry = Record<string, unknown>;

/** Starts timing a connection; the returned function logs its line. */
export function accessLog(log: Logger, entry: AccessEntry): (fields: AccessEntry) => void {
  const started = process.hrtime.bigint();
  return (fields) => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    log.info({ ...entry, ...fields, duration: `${ms.toFixed(3)}ms` }, 'connection complete');
  };
}
