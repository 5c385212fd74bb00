// How `ambit config …` prints rows: a kubectl-style table (headers in caps,
// columns padded with three spaces, no borders), or the rows themselves as
// JSON or YAML for scripts. The table is for eyes: a missing value is `-`
// and control characters are replaced, so a name from the mesh state cannot
// move the cursor or recolour the terminal.
import YAML from 'yaml';

export const OUTPUT_FORMATS = ['table', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** A table column: its header (caps) and how a row shows in it. */
export interface Column<R> {
  header: string;
  value: (row: R) => unknown;
}

const GAP = '   ';

/** One cell's text: `-` for nothing, lists joined with commas, control characters as `?`. */
export function cell(v: unknown): string {
  if (v === undefined || v === null || v === '') return '-';
  if (Array.isArray(v)) return v.length ? v.map(cell).join(',') : '-';
  return String(v).replace(/\p{Cc}/gu, '?');
}

export function renderTable<R>(columns: readonly Column<R>[], rows: readonly R[]): string {
  const cells = rows.map((r) => columns.map((c) => cell(c.value(r))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]?.length ?? 0)));
  const line = (texts: string[]): string =>
    texts
      .map((t, i) => t.padEnd(widths[i] ?? 0))
      .join(GAP)
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n');
}

/** The rows in the format asked for; JSON and YAML carry every field of a row, typed. */
export function render<R>(format: OutputFormat, columns: readonly Column<R>[], rows: readonly R[]): string {
  if (format === 'json') return JSON.stringify(rows, null, 2);
  if (format === 'yaml') return YAML.stringify(rows).trimEnd();
  return renderTable(columns, rows);
}

/** An age as kubectl writes it: 45s, 3m12s, 25m, 5h20m, 3d. */
export function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60 ? `${s % 60}s` : ''}`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return `${h}h${m % 60 ? `${m % 60}m` : ''}`;
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

/** A byte count in binary units: 512B, 1.5KiB, 3.2MiB. */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v}B` : `${v < 10 ? v.toFixed(1) : Math.round(v)}${units[u]}`;
}
