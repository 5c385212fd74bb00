// Command-line parsing that answers an operator, not a developer: --help
// prints the command's usage and exits 0; a mistake (unknown flag, missing
// or malformed value) is one line naming the flag, then the usage, exit 2.
// node:util's parseArgs throws TypeErrors with a stack for these; they are
// turned into UsageErrors here.
import { type ParseArgsConfig, parseArgs } from 'node:util';

/** A mistake on the command line: printed as one line plus the usage, exit 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Asked for help: the usage goes to stdout and the process exits 0. */
export class HelpRequested extends Error {
  constructor(readonly usage: string) {
    super('help');
    this.name = 'HelpRequested';
  }
}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses argv against options plus --help/-h. Positionals are refused
 * unless allowed: a stray word is more likely a forgotten `--` than intent.
 */
export function parseFlags<O extends Options>(argv: string[], options: O, usage: string, allowPositionals = false) {
  // --help wins over any other mistake on the line: the operator is asking how to fix it.
  if (argv.includes('--help') || argv.includes('-h')) throw new HelpRequested(usage);
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    throw new UsageError(explain(err as NodeJS.ErrnoException, options), usage);
  }
}

/** One line for a parseArgs error, naming the flag. */
function explain(err: NodeJS.ErrnoException, options: Options): string {
  const quoted = /'([^']+)'/.exec(err.message)?.[1];
  const flag = quoted?.split(/[\s=]/)[0] ?? '';
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      const near = closest(flag.replace(/^-+/, ''), Object.keys(options));
      return `unknown flag ${flag}${near ? ` (did you mean --${near}?)` : ''}`;
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const name = flag.replace(/^-+/, '');
      const spec = options[name] ?? Object.values(options).find((o) => o.short === name);
      return spec?.type === 'boolean' ? `${flag} takes no value` : `${flag} needs a value (one starting with - is written ${flag}=VALUE)`;
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument ${JSON.stringify(quoted ?? '')}; flags are --name value`;
    default:
      return err.message.split('\n', 1)[0] ?? err.message;
  }
}

/** The option name within two edits of typed, if one is. */
function closest(typed: string, names: string[]): string | undefined {
  let best: { name: string; d: number } | undefined;
  for (const name of names) {
    const d = editDistance(typed, name);
    if (d <= 2 && (!best || d < best.d)) best = { name, d };
  }
  return best?.name;
}

function editDistance(a: string, b: string): number {
  // Cells outside the rows (never read) count as unreachable.
  const at = (row: number[], j: number): number => row[j] ?? Number.POSITIVE_INFINITY;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(at(prev, j) + 1, at(row, j - 1) + 1, at(prev, j - 1) + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return at(prev, b.length);
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
/** Node's timers overflow past 2^31-1 ms (then fire at once); a day is more than any wait here needs. */
export const MAX_DURATION_MS = 24 * 3_600_000;

/**
 * A duration as Go and Istio write them: 500ms, 10s, 5m, 1h, 1m30s, 1.5s.
 * A bare number is refused: 10 could be seconds or milliseconds.
 */
export function parseDuration(flag: string, value: string, usage: string): number {
  const v = value.trim();
  const parts = [...v.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  const consumed = parts.map((p) => p[0]).join('');
  if (!v || consumed !== v) {
    const hint = /^\d+(\.\d+)?$/.test(v) ? `; add a unit, e.g. ${v}s or ${v}ms` : '';
    throw new UsageError(`${flag} ${JSON.stringify(value)} is not a duration like 500ms, 10s, 5m or 1h${hint}`, usage);
  }
  // The pattern matched every part, so each has a number and a known unit.
  const ms = Math.round(parts.reduce((sum, [, n, unit]) => sum + Number(n) * (UNIT_MS[unit ?? ''] ?? Number.NaN), 0));
  if (ms <= 0)
    throw new UsageError(
      `${flag} ${JSON.stringify(value)} must be longer than 0 (a wait without a deadline is what this flag exists to prevent)`,
      usage,
    );
  if (ms > MAX_DURATION_MS) throw new UsageError(`${flag} ${JSON.stringify(value)} is longer than the maximum of 24h`, usage);
  return ms;
}

/** A whole number within [min, max]; fallback when the flag is absent. */
export function parseCount(flag: string, value: string | undefined, fallback: number, usage: string, min = 0, max = 1_000_000): number {
  if (value === undefined) return fallback;
  const n = Number(value.trim());
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag} ${JSON.stringify(value)} is not a whole number from ${min} to ${max}`, usage);
  }
  return n;
}

/** The verb, or --help for the whole group; anything else is a usage error. */
export function verbOf(argv: string[], verbs: string[], group: string, usage: string): string {
  const [verb] = argv;
  if (verb === undefined || verb === '--help' || verb === '-h') {
    if (verb === undefined) throw new UsageError(`${group} needs one of: ${verbs.join(', ')}`, usage);
    throw new HelpRequested(usage);
  }
  if (!verbs.includes(verb)) throw new UsageError(`unknown ${group} command ${JSON.stringify(verb)}; one of: ${verbs.join(', ')}`, usage);
  return verb;
}
