// REPORT.svg: the headline figures as two horizontal bar charts, hand-written
// SVG (no dependency), readable on GitHub's light background:
//   - speed-up vs baseline (baseline / value), log scale, bars from x1;
//   - fraction of the ceiling reached (ceiling / value), 0-100%.
import type { Figure } from './lib.ts';
import { fmt, fmtQuantity } from './lib.ts';

export interface ChartMeta {
  /** Second title line: date, machine, load. */
  subtitle: string;
}

const FONT = "-apple-system, 'Segoe UI', Helvetica, Arial, 'DejaVu Sans', sans-serif";
const ROW_H = 27;
const BAR_H = 14;
const PAD = 24;
/** Average glyph width of the label font at 13 px; generous, so that long labels never overlap the bars. */
const CHAR_W = 6.8;
const VALUE_W = 92;
const SPEED_W = 320;
const GAP = 40;
const CEIL_W = 200;
const COLORS = {
  text: '#1f2328',
  muted: '#59636e',
  grid: '#d1d9e0',
  band: '#f6f8fa',
  faster: '#1a7f37',
  slower: '#cf222e',
  ceiling: '#0969da',
  track: '#e6eaef',
};

export function renderChart(figures: readonly Figure[], meta: ChartMeta): string {
  // One column: the bench's name (on its first row) left-aligned, the figure's title right-aligned.
  const chars = figures.map(
    (f, i) => f.title.length + (i === 0 || figures[i - 1]!.bench !== f.bench ? f.bench.length + 3 : 0),
  );
  const x0 = PAD + Math.ceil(Math.max(...chars, 30) * CHAR_W); // right edge of the labels
  const speedX = x0 + VALUE_W + 16;
  const ceilX = speedX + SPEED_W + GAP;
  const width = ceilX + CEIL_W + PAD + 40;
  const top = 104; // first row's top
  const height = top + figures.length * ROW_H + 74;

  // Log scale over whole decades, always including x1 and at least 0.1..10.
  const speedups = figures.flatMap((f) => (f.baseline ? [f.baseline.ratio] : []));
  const lo = Math.min(-1, Math.floor(Math.log10(Math.min(...speedups, 1))));
  const hi = Math.max(1, Math.ceil(Math.log10(Math.max(...speedups, 1))));
  const sx = (r: number): number => speedX + ((Math.log10(r) - lo) / (hi - lo)) * SPEED_W;
  const cx = (f: number): number => ceilX + Math.min(1, Math.max(0, f)) * CEIL_W;

  const out: string[] = [];
  const text = (x: number, y: number, content: string, attrs: Record<string, string | number> = {}): void => {
    const a = Object.entries({ fill: COLORS.text, 'font-size': 13, ...attrs })
      .map(([k, v]) => `${k}="${esc(String(v))}"`)
      .join(' ');
    out.push(`<text x="${r1(x)}" y="${r1(y)}" ${a}>${esc(content)}</text>`);
  };
  const line = (x1: number, y1: number, x2: number, y2: number, stroke: string, extra = ''): void => {
    out.push(
      `<line x1="${r1(x1)}" y1="${r1(y1)}" x2="${r1(x2)}" y2="${r1(y2)}" stroke="${stroke}" ${extra}/>`,
    );
  };
  const rect = (x: number, y: number, w: number, h: number, fill: string, title?: string): void => {
    const body = title ? `<title>${esc(title)}</title>` : '';
    out.push(
      `<rect x="${r1(x)}" y="${r1(y)}" width="${r1(Math.max(0, w))}" height="${r1(h)}" fill="${fill}">${body}</rect>`,
    );
  };

  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${esc(FONT)}">`,
  );
  rect(0, 0, width, height, '#ffffff');
  text(PAD, 30, 'cachecast benchmarks: headline figures', { 'font-size': 20, 'font-weight': 600 });
  text(PAD, 54, meta.subtitle, { fill: COLORS.muted });

  // Panel headers.
  const headY = top - 30;
  text(speedX, headY, 'speed-up vs baseline', { 'font-weight': 600 });
  text(speedX, headY + 15, 'baseline / value, log scale; > x1: faster or smaller', {
    fill: COLORS.muted,
    'font-size': 12,
  });
  text(ceilX, headY, 'fraction of the ceiling', { 'font-weight': 600 });
  text(ceilX, headY + 15, 'ceiling / value; 100%: the best possible', {
    fill: COLORS.muted,
    'font-size': 12,
  });
  text(x0 + VALUE_W, headY + 15, 'value', { 'text-anchor': 'end', fill: COLORS.muted, 'font-size': 12 });

  // Alternate bands per bench.
  let bandOn = false;
  for (let i = 0; i < figures.length; i++) {
    const f = figures[i]!;
    if (i > 0 && figures[i - 1]!.bench !== f.bench) bandOn = !bandOn;
    if (bandOn) rect(PAD - 6, top + i * ROW_H, width - 2 * PAD + 12, ROW_H, COLORS.band);
  }

  // Grids.
  const bottom = top + figures.length * ROW_H;
  for (let d = lo; d <= hi; d++) {
    const x = sx(10 ** d);
    line(x, top - 4, x, bottom, d === 0 ? COLORS.muted : COLORS.grid, d === 0 ? 'stroke-width="1.5"' : '');
    text(x, bottom + 16, `x${fmtTick(10 ** d)}`, {
      'text-anchor': 'middle',
      fill: COLORS.muted,
      'font-size': 12,
    });
  }
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const x = cx(f);
    line(x, top - 4, x, bottom, f === 1 ? COLORS.muted : COLORS.grid, f === 1 ? 'stroke-width="1.5"' : '');
    text(x, bottom + 16, `${f * 100}%`, { 'text-anchor': 'middle', fill: COLORS.muted, 'font-size': 12 });
  }

  // Rows.
  for (let i = 0; i < figures.length; i++) {
    const f = figures[i]!;
    const y = top + i * ROW_H;
    const mid = y + ROW_H / 2;
    const baseY = mid + 4;
    if (i === 0 || figures[i - 1]!.bench !== f.bench) {
      text(PAD, baseY, f.bench, { fill: COLORS.muted, 'font-size': 12 });
    }
    text(x0, baseY, f.title, { 'text-anchor': 'end' });
    text(x0 + VALUE_W, baseY, fmtQuantity(f.value, f.unit), {
      'text-anchor': 'end',
      'font-variant-numeric': 'tabular-nums',
    });

    if (f.baseline) {
      const r = f.baseline.ratio;
      const a = sx(1);
      const b = sx(r);
      const fill = r >= 1 ? COLORS.faster : COLORS.slower;
      rect(
        Math.min(a, b),
        mid - BAR_H / 2,
        Math.max(1, Math.abs(b - a)),
        BAR_H,
        fill,
        `${f.baseline.label}: ${fmtQuantity(f.baseline.value, f.unit)}`,
      );
      // Label outside the bar's end; for a slower-than-baseline bar, left of it.
      if (r >= 1) text(b + 5, baseY, `x${fmt(r)}`, { fill });
      else text(b - 5, baseY, `x${fmt(r)}`, { fill, 'text-anchor': 'end' });
    } else {
      text(sx(1) + 6, baseY, 'no baseline', { fill: COLORS.muted, 'font-size': 12, 'font-style': 'italic' });
    }

    if (f.ceiling) {
      const frac = 1 / f.ceiling.ratio;
      rect(ceilX, mid - BAR_H / 2, CEIL_W, BAR_H, COLORS.track);
      rect(
        ceilX,
        mid - BAR_H / 2,
        cx(frac) - ceilX,
        BAR_H,
        COLORS.ceiling,
        `${f.ceiling.label}: ${fmtQuantity(f.ceiling.value, f.unit)}`,
      );
      text(ceilX + CEIL_W + 6, baseY, `${fmtPct(frac)}`, { fill: COLORS.ceiling });
    } else {
      text(ceilX + 6, baseY, 'no ceiling', { fill: COLORS.muted, 'font-size': 12, 'font-style': 'italic' });
    }
  }

  const footY = bottom + 40;
  text(
    PAD,
    footY,
    'Every figure is lower-is-better (time, bytes). Baseline: what a user would otherwise do; ceiling: the best possible for the same work.',
    { fill: COLORS.muted, 'font-size': 12 },
  );
  text(
    PAD,
    footY + 16,
    'Each ratio compares figures measured in the same run (machine noise hits both alike; above 100%: within noise of the ceiling). Every figure and label: REPORT.md.',
    { fill: COLORS.muted, 'font-size': 12 },
  );
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function fmtTick(n: number): string {
  return n >= 1000 ? n.toLocaleString('en-US') : String(n);
}

function fmtPct(f: number): string {
  const pct = f * 100;
  return `${pct >= 10 ? pct.toFixed(0) : pct.toFixed(1)}%`;
}

function r1(n: number): string {
  return (Math.round(n * 10) / 10).toString();
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
