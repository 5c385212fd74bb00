// One pino logger for the process; components take a child with their name.
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level = process.env.AMBIT_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid } });
}
