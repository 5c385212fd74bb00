// Turns the comparison's raw results into medians with their spread, ratios
// to no mesh, the stated goals (met / not met) and Markdown tables.
import { MESH_MODES, MODE_LABEL, MODES, type Mode, type Raw } from './modes';
import { fmt, median } from './util';

export type RawByMode = Record<Mode, Record<string, Raw[]>>;
type Kind = 'latency' | 'rate' | 'cpu';
interface Metric {
  key: string;
  label: string;
  measure: string;
  field: string;
  kind: Kind;
}

export const METRICS: Metric[] = [
  { key: 'p50_100', label: 'latency p50 at 100 req/s (µs)', measure: 'rr100', field: 'p50_us', kind: 'latency' },
  { key: 'p90_100', label: 'latency p90 at 100 req/s (µs)', measure: 'rr100', field: 'p90_us', kind: 'latency' },
  { key: 'p99_100', label: 'latency p99 at 100 req/s (µs)', measure: 'rr100', field: 'p99_us', kind: 'latency' },
  { key: 'p50_1000', label: 'latency p50 at 1,000 req/s (µs)', measure: 'rr1000', field: 'p50_us', kind: 'latency' },
  { key: 'p90_1000', label: 'latency p90 at 1,000 req/s (µs)', measure: 'rr1000', field: 'p90_us', kind: 'latency' },
  { key: 'p99_1000', label: 'latency p99 at 1,000 req/s (µs)', measure: 'rr1000', field: 'p99_us', kind: 'latency' },
  { key: 'conn', label: 'new connections per second', measure: 'conn', field: 'per_s', kind: 'rate' },
  { key: 'stream', label: 'single-stream throughput (MiB/s)', measure: 'stream', field: 'mib_per_s', kind: 'rate' },
  { key: 'streams', label: '8-stream throughput (MiB/s)', measure: 'streams', field: 'mib_per_s', kind: 'rate' },
  { key: 'cpu_rr', label: 'mesh CPU s per 1,000 requests (rr at 1,000 req/s)', measure: 'rr1000', field: 'cpu_s_per_1k', kind: 'cpu' },
  { key: 'cpu_conn', label: 'mesh CPU s per 1,000 new connections', measure: 'conn', field: 'cpu_s_per_1k', kind: 'cpu' },
];

export interface Summary {
  key: string;
  metric: string;
  kind: Kind;
  median: Record<Mode, number>;
  spread: Record<Mode, { min: number; max: number }>;
  values: Record<Mode, number[]>;
}

export function summarise(raw: RawByMode): Summary[] {
  return METRICS.map((m) => {
    const values = Object.fromEntries(MODES.map((mode) => [mode, (raw[mode][m.measure] ?? []).map((r) => Number(r[m.field]))])) as Record<
      Mode,
      number[]
    >;
    const med = Object.fromEntries(MODES.map((mode) => [mode, median(values[mode])])) as Record<Mode, number>;
    const spread = Object.fromEntries(
      MODES.map((mode) => [mode, { min: Math.min(...values[mode]), max: Math.max(...values[mode]) }]),
    ) as Record<Mode, { min: number; max: number }>;
    return { key: m.key, metric: m.label, kind: m.kind, median: med, spread, values };
  });
}

/** Total RSS of the mesh processes after warm-up, per mode and pods per node. */
export interface MemoryPoint {
  mode: Mode;
  k: number;
  processes: number;
  rssReadyMiB: number;
  rssMiB: number;
  startS: number;
  warmupFailed: number;
}

export interface Goal {
  metric: string;
  text: string;
  measured: string;
  met: boolean;
}

/** The medians of one metric (a key of METRICS). */
export function mediansOf(summary: Summary[], key: string): Record<Mode, number> {
  const row = summary.find((x) => x.key === key);
  if (!row) throw new Error(`no metric ${key} in the summary (known: ${summary.map((x) => x.key).join(', ')})`);
  return row.median;
}

export function goals(summary: Summary[], memory: MemoryPoint[]): Goal[] {
  const s = (key: string): Record<Mode, number> => mediansOf(summary, key);
  const p99 = s('p99_1000');
  const added = (mode: Mode): number => p99[mode] - p99.nomesh;
  const out: Goal[] = [
    {
      metric: 'p99_1000',
      text: "ambient added p99 ≤ 0.9× sidecar's (1,000 req/s)",
      measured: `ambient +${fmt(added('ambient'))} µs vs sidecar +${fmt(added('sidecar'))} µs (${(added('ambient') / added('sidecar')).toFixed(2)}×)`,
      met: added('ambient') <= 0.9 * added('sidecar'),
    },
  ];
  const kMax = Math.max(...memory.map((m) => m.k));
  const mem = (mode: Mode): number => memory.find((m) => m.mode === mode && m.k === kMax)?.rssMiB ?? NaN;
  if (memory.length) {
    out.push({
      metric: 'memory',
      text: `ambient mesh memory at K = ${kMax} ≤ 0.1× sidecar's${kMax === 50 ? '' : ' (goal stated for K = 50)'}`,
      measured: `${fmt(mem('ambient'))} MiB vs ${fmt(mem('sidecar'))} MiB (${(mem('ambient') / mem('sidecar')).toFixed(3)}×)`,
      met: mem('ambient') <= 0.1 * mem('sidecar'),
    });
  }
  const conn = s('conn');
  out.push({
    metric: 'conn',
    text: "ambient new connections/s ≥ 2× stunnel's",
    measured: `${fmt(conn.ambient)}/s vs ${fmt(conn.stunnel)}/s (${(conn.ambient / conn.stunnel).toFixed(2)}×)`,
    met: conn.ambient >= 2 * conn.stunnel,
  });
  const stream = s('stream');
  out.push({
    metric: 'stream',
    text: "ambient single-stream throughput ≥ 0.5× stunnel's",
    measured: `${fmt(stream.ambient)} vs ${fmt(stream.stunnel)} MiB/s (${(stream.ambient / stream.stunnel).toFixed(2)}×)`,
    met: stream.ambient >= 0.5 * stream.stunnel,
  });
  return out;
}

function cell(s: Summary, mode: Mode): string {
  const v = s.median[mode];
  if (s.kind === 'cpu' || mode === 'nomesh') return fmt(v);
  const ratio = `${(v / s.median.nomesh).toFixed(2)}×`;
  if (s.kind === 'rate') return `${fmt(v)} (${ratio})`;
  const add = v - s.median.nomesh;
  return `${fmt(v)} (${ratio}, ${add >= 0 ? '+' : '−'}${fmt(Math.abs(add))})`;
}

const verdict = (g: Goal): string => `**${g.met ? 'met' : 'not met'}**: ${g.text}; ${g.measured}`;

export function mainTable(summary: Summary[], gs: Goal[]): string {
  const rows = summary.map((s) => {
    const goal = gs
      .filter((g) => g.metric === s.key)
      .map(verdict)
      .join('; ');
    const spread = MODES.filter((m) => !(s.kind === 'cpu' && m === 'nomesh'))
      .map((m) => `${MODE_LABEL[m]} ${fmt(s.spread[m].min)}–${fmt(s.spread[m].max)}`)
      .join(', ');
    return `| ${s.metric} | ${MODES.map((m) => cell(s, m)).join(' | ')} | ${goal} | ${spread} |`;
  });
  return [
    `| metric | ${MODES.map((m) => MODE_LABEL[m]).join(' | ')} | goal | spread (min–max) |`,
    `|---|${MODES.map(() => '---:').join('|')}|---|---|`,
    ...rows,
  ].join('\n');
}

export function memoryTable(memory: MemoryPoint[], gs: Goal[]): string {
  const ks = [...new Set(memory.map((m) => m.k))].sort((a, b) => a - b);
  const at = (mode: Mode, k: number): MemoryPoint | undefined => memory.find((m) => m.mode === mode && m.k === k);
  const rows = MESH_MODES.map(
    (mode) =>
      `| ${MODE_LABEL[mode]} | ${ks
        .map((k) => {
          const p = at(mode, k);
          return p ? `${fmt(p.rssMiB)} MiB (${p.processes} proc, ready ${fmt(p.rssReadyMiB)} MiB, up in ${p.startS.toFixed(1)} s)` : '–';
        })
        .join(' | ')} |`,
  );
  const ratio = `| ambient / sidecar | ${ks.map((k) => ((at('ambient', k)?.rssMiB ?? NaN) / (at('sidecar', k)?.rssMiB ?? NaN)).toFixed(3)).join(' | ')} |`;
  const goal = gs
    .filter((g) => g.metric === 'memory')
    .map((g) => `\n\ngoal: ${verdict(g)}`)
    .join('');
  return (
    [
      `| mode | ${ks.map((k) => `K = ${k}`).join(' | ')} |`,
      `|---|${ks.map(() => '---:').join('|')}|`,
      `| no mesh | ${ks.map(() => '0').join(' | ')} |`,
      ...rows,
      ratio,
    ].join('\n') + goal
  );
}
