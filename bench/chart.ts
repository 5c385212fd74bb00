// The comparison's chart as a self-contained SVG (no dependencies): left,
// request/response latency p50/p90/p99 at 1,000 req/s grouped by mode;
// right, the mesh processes' total memory against pods per node, one line
// per mode, both axes logarithmic so that every mode stays readable.
import { MESH_MODES, MODE_LABEL, MODES, type Mode } from './modes';

export interface ChartData {
  title: string;
  subtitle: string;
  latency: Record<Mode, { p50: number; p90: number; p99: number }>;
  memory: { mode: Mode; k: number; mib: number }[];
}

const COLOR: Record<Mode, string> = { nomesh: '#7f7f7f', ambient: '#1f77b4', sidecar: '#ff7f0e', stunnel: '#2ca02c' };
const SHADE = { p50: 0.4, p90: 0.7, p99: 1 } as const;
const W = 1000;
const H = 460;
const TOP = 90;
const BOTTOM = 390;

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const num = (v: number): string =>
  v === 0 ? '0' : v >= 100 ? Math.round(v).toLocaleString('en-US') : v >= 10 ? v.toFixed(0) : v.toFixed(1);
const text = (x: number, y: number, s: string, attrs = ''): string =>
  `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;

/** A round axis maximum and its tick step for values up to max. */
function niceAxis(max: number): { top: number; step: number } {
  const raw = Math.max(max, 1) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag; // raw < 10 × mag by the choice of mag
  return { top: Math.ceil(max / step) * step || step, step };
}

function latencyPanel(d: ChartData, x0: number, x1: number): string[] {
  const out: string[] = [];
  const { top, step } = niceAxis(Math.max(...MODES.map((m) => d.latency[m].p99).filter(Number.isFinite)));
  const y = (v: number): number => BOTTOM - (v / top) * (BOTTOM - TOP);
  out.push(text((x0 + x1) / 2, TOP - 30, 'Request/response latency at 1,000 req/s (µs)', 'text-anchor="middle" font-weight="bold"'));
  for (let v = 0; v <= top + 1e-9; v += step) {
    out.push(`<line x1="${x0}" x2="${x1}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(text(x0 - 6, y(v) + 4, num(v), 'text-anchor="end" font-size="11"'));
  }
  const group = (x1 - x0) / MODES.length;
  const bar = group / 4.5;
  MODES.forEach((mode, i) => {
    const gx = x0 + i * group + (group - 3 * bar) / 2;
    (['p50', 'p90', 'p99'] as const).forEach((p, k) => {
      const v = d.latency[mode][p];
      if (!Number.isFinite(v)) return;
      const bx = gx + k * bar;
      out.push(
        `<rect x="${bx.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(bar - 2).toFixed(1)}" height="${(BOTTOM - y(v)).toFixed(1)}"` +
          ` fill="${COLOR[mode]}" fill-opacity="${SHADE[p]}"><title>${esc(`${MODE_LABEL[mode]} ${p}: ${num(v)} µs`)}</title></rect>`,
      );
      out.push(text(bx + bar / 2 - 1, y(v) - 4, num(v), 'text-anchor="middle" font-size="10"'));
    });
    out.push(text(x0 + (i + 0.5) * group, BOTTOM + 18, MODE_LABEL[mode], 'text-anchor="middle" font-size="12"'));
  });
  out.push(`<line x1="${x0}" x2="${x1}" y1="${BOTTOM}" y2="${BOTTOM}" stroke="#333"/>`);
  (['p50', 'p90', 'p99'] as const).forEach((p, k) => {
    const lx = x0 + k * 70;
    out.push(
      `<rect x="${lx}" y="${BOTTOM + 34}" width="12" height="12" fill="#444" fill-opacity="${SHADE[p]}"/>`,
      text(lx + 16, BOTTOM + 44, p, 'font-size="11"'),
    );
  });
  return out;
}

function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) ticks.push(10 ** e);
  return ticks;
}

function memoryPanel(d: ChartData, x0: number, x1: number): string[] {
  const out: string[] = [];
  out.push(text((x0 + x1) / 2, TOP - 30, 'Memory of the mesh processes (total RSS, MiB)', 'text-anchor="middle" font-weight="bold"'));
  const pts = d.memory.filter((p) => p.mib > 0 && p.k > 0);
  if (!pts.length) return out;
  const ks = [...new Set(pts.map((p) => p.k))].sort((a, b) => a - b);
  const yt = logTicks(Math.min(...pts.map((p) => p.mib)), Math.max(...pts.map((p) => p.mib)));
  const [ylo, yhi] = [Math.log10(Math.min(...yt)), Math.log10(Math.max(...yt))];
  const y = (v: number): number => BOTTOM - ((Math.log10(v) - ylo) / (yhi - ylo || 1)) * (BOTTOM - TOP);
  const [klo, khi] = [Math.log10(Math.min(...ks)), Math.log10(Math.max(...ks))];
  const x = (k: number): number => (khi === klo ? (x0 + x1) / 2 : x0 + 20 + ((Math.log10(k) - klo) / (khi - klo)) * (x1 - x0 - 80));
  for (const v of yt) {
    out.push(`<line x1="${x0}" x2="${x1}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(text(x0 - 6, y(v) + 4, num(v), 'text-anchor="end" font-size="11"'));
  }
  for (const k of ks) out.push(text(x(k), BOTTOM + 18, String(k), 'text-anchor="middle" font-size="12"'));
  out.push(
    text((x0 + x1) / 2, BOTTOM + 36, 'pods per node (K mesh pods on each of 2 nodes; log scale)', 'text-anchor="middle" font-size="11"'),
  );
  out.push(`<line x1="${x0}" x2="${x1}" y1="${BOTTOM}" y2="${BOTTOM}" stroke="#333"/>`);
  MESH_MODES.forEach((mode, i) => {
    const line = pts.filter((p) => p.mode === mode).sort((a, b) => a.k - b.k);
    if (!line.length) return;
    out.push(
      `<polyline fill="none" stroke="${COLOR[mode]}" stroke-width="2" points="${line.map((p) => `${x(p.k).toFixed(1)},${y(p.mib).toFixed(1)}`).join(' ')}"/>`,
    );
    for (const p of line) {
      out.push(
        `<circle cx="${x(p.k).toFixed(1)}" cy="${y(p.mib).toFixed(1)}" r="3.5" fill="${COLOR[mode]}">` +
          `<title>${esc(`${MODE_LABEL[mode]}, K = ${p.k}: ${num(p.mib)} MiB`)}</title></circle>`,
      );
      // ambient's labels go under its points: at K = 1 it may sit on sidecar's.
      out.push(text(x(p.k) + 6, y(p.mib) + (mode === 'ambient' ? 14 : -6), num(p.mib), `font-size="10" fill="${COLOR[mode]}"`));
    }
    const lx = x0 + i * 90;
    out.push(
      `<rect x="${lx}" y="${BOTTOM + 48}" width="12" height="12" fill="${COLOR[mode]}"/>`,
      text(lx + 16, BOTTOM + 58, MODE_LABEL[mode], 'font-size="11"'),
    );
  });
  out.push(text(x1, BOTTOM + 58, 'no mesh: 0', 'text-anchor="end" font-size="11" fill="#7f7f7f"'));
  return out;
}

export function renderChart(d: ChartData): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}"` +
      ' font-family="Helvetica, Arial, sans-serif" font-size="13" fill="#222">',
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    text(W / 2, 24, d.title, 'text-anchor="middle" font-size="16" font-weight="bold"'),
    text(W / 2, 42, d.subtitle, 'text-anchor="middle" font-size="11" fill="#555"'),
    ...latencyPanel(d, 70, 470),
    ...memoryPanel(d, 570, 970),
    '</svg>',
    '',
  ].join('\n');
}
