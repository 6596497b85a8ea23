// Dependency-free SVG charts for the CLI and the demo: learning curves (lineChart), confusion
// matrices (heatmap) and grouped bars (barChart). Each returns a standalone SVG document string.
// Ticks carry their data value (data-value) so readers and tests can recover the axis mapping.

export interface LineSeries {
  name: string;
  points: readonly (readonly [number, number])[];
  dashed?: boolean;
  color?: string;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly LineSeries[];
  /** Fixed y range (e.g. [0, 1] for accuracy); default: the data's range, rounded to ticks. */
  yRange?: readonly [number, number];
  width?: number;
  height?: number;
}

export interface HeatmapOptions {
  title: string;
  rowLabels: readonly string[];
  colLabels: readonly string[];
  /** values[row][col]; rows × cols. */
  values: readonly (readonly number[])[];
  /** Text in each cell; default: the number with up to 3 significant digits. */
  format?: (value: number) => string;
  xLabel?: string;
  yLabel?: string;
}

export interface BarChartOptions {
  title: string;
  /** One cluster of bars per group (e.g. per transfer case). */
  groups: readonly string[];
  /** One bar per series in each group; values[i] belongs to groups[i]. */
  series: readonly { name: string; values: readonly number[]; color?: string }[];
  yLabel?: string;
  yRange?: readonly [number, number];
  /** Text above each bar; default: the number with up to 3 significant digits. */
  format?: (value: number) => string;
}

const PALETTE = [
  '#1f77b4',
  '#d62728',
  '#2ca02c',
  '#ff7f0e',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf',
];
const FONT = 'font-family="sans-serif"';

export function escapeXml(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** Round numbers for coordinates: 2 decimals, no "-0". */
function n(v: number): string {
  const r = Math.round(v * 100) / 100;
  return String(Object.is(r, -0) ? 0 : r);
}

function short(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v !== 0 && (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3)) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

/** "Nice" ticks (1, 2, 5 × 10^k steps) covering [lo, hi]; lo/hi are widened to the outer ticks. */
export function niceTicks(lo: number, hi: number, target = 5): { lo: number; hi: number; ticks: number[] } {
  if (!Number.isFinite(lo) || !Number.isFinite(hi))
    throw new RangeError(`plot: axis range [${lo}, ${hi}] is not finite`);
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const first = Math.floor(lo / step + 1e-9) * step;
  const last = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; first + i * step <= last + step * 1e-9; i++) ticks.push(Number((first + i * step).toPrecision(12)));
  return { lo: ticks[0], hi: ticks[ticks.length - 1], ticks };
}

interface Frame {
  left: number;
  top: number;
  width: number;
  height: number;
}

function svgOpen(minWidth: number, height: number, title: string): string[] {
  // 16 px sans-serif runs about 8.5 px a character: never cut the title off.
  const width = Math.max(minWidth, Math.ceil(title.length * 8.5) + 40);
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="white"/>`,
    `<text x="${n(width / 2)}" y="22" text-anchor="middle" font-size="16" ${FONT}>${escapeXml(title)}</text>`,
  ];
}

/** Y axis with ticks and a rotated label; returns the data → pixel map. */
function yAxis(out: string[], f: Frame, lo: number, hi: number, ticks: number[], label: string): (y: number) => number {
  const map = (y: number) => f.top + f.height - ((y - lo) / (hi - lo)) * f.height;
  for (const t of ticks) {
    const py = n(map(t));
    out.push(
      `<g class="y-tick" data-value="${t}"><line x1="${n(f.left - 5)}" y1="${py}" x2="${n(f.left + f.width)}" y2="${py}" stroke="#ddd"/>` +
        `<text x="${n(f.left - 8)}" y="${py}" dy="0.35em" text-anchor="end" font-size="11" ${FONT}>${escapeXml(short(t))}</text></g>`,
    );
  }
  out.push(`<line x1="${n(f.left)}" y1="${n(f.top)}" x2="${n(f.left)}" y2="${n(f.top + f.height)}" stroke="black"/>`);
  const cy = n(f.top + f.height / 2);
  out.push(
    `<text x="16" y="${cy}" transform="rotate(-90 16 ${cy})" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(label)}</text>`,
  );
  return map;
}

function legend(
  out: string[],
  x: number,
  y: number,
  entries: { name: string; color: string; dashed?: boolean; bar?: boolean }[],
): void {
  entries.forEach((e, i) => {
    const ly = y + i * 18;
    const mark = e.bar
      ? `<rect x="${n(x)}" y="${n(ly - 6)}" width="20" height="12" fill="${e.color}"/>`
      : `<line x1="${n(x)}" y1="${n(ly)}" x2="${n(x + 20)}" y2="${n(ly)}" stroke="${e.color}" stroke-width="2"${e.dashed ? ' stroke-dasharray="6 4"' : ''}/>`;
    out.push(
      `<g class="legend">${mark}<text x="${n(x + 26)}" y="${n(ly)}" dy="0.35em" font-size="12" ${FONT}>${escapeXml(e.name)}</text></g>`,
    );
  });
}

/** Lines through (x, y) points, one per series, with axes, ticks and a legend at the right. */
export function lineChart(o: LineChartOptions): string {
  const width = o.width ?? 720;
  const height = o.height ?? 420;
  const all = o.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xt = niceTicks(xs.length ? Math.min(...xs) : 0, xs.length ? Math.max(...xs) : 1);
  const yt = o.yRange
    ? niceTicks(o.yRange[0], o.yRange[1])
    : niceTicks(ys.length ? Math.min(...ys) : 0, ys.length ? Math.max(...ys) : 1);
  const f: Frame = { left: 64, top: 40, width: width - 64 - 170, height: height - 40 - 52 };
  const out = svgOpen(width, height, o.title);
  const my = yAxis(out, f, yt.lo, yt.hi, yt.ticks, o.yLabel);
  const mx = (x: number) => f.left + ((x - xt.lo) / (xt.hi - xt.lo)) * f.width;
  for (const t of xt.ticks) {
    const px = n(mx(t));
    out.push(
      `<g class="x-tick" data-value="${t}"><line x1="${px}" y1="${n(f.top + f.height)}" x2="${px}" y2="${n(f.top + f.height + 5)}" stroke="black"/>` +
        `<text x="${px}" y="${n(f.top + f.height + 18)}" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(short(t))}</text></g>`,
    );
  }
  out.push(
    `<line x1="${n(f.left)}" y1="${n(f.top + f.height)}" x2="${n(f.left + f.width)}" y2="${n(f.top + f.height)}" stroke="black"/>`,
  );
  out.push(
    `<text x="${n(f.left + f.width / 2)}" y="${n(height - 12)}" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(o.xLabel)}</text>`,
  );
  const entries = o.series.map((s, i) => ({
    name: s.name,
    color: s.color ?? PALETTE[i % PALETTE.length],
    dashed: s.dashed,
  }));
  o.series.forEach((s, i) => {
    // Points outside a fixed yRange are clamped to the frame rather than drawn over the legend.
    const pts = s.points
      .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
      .map(([x, y]) => `${n(mx(x))},${n(Math.min(f.top + f.height, Math.max(f.top, my(y))))}`);
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    out.push(`<g class="series" data-name="${escapeXml(s.name)}">`);
    out.push(`<polyline fill="none" stroke="${entries[i].color}" stroke-width="2"${dash} points="${pts.join(' ')}"/>`);
    for (const p of pts) {
      const [cx, cy] = p.split(',');
      out.push(`<circle cx="${cx}" cy="${cy}" r="2.5" fill="${entries[i].color}"/>`);
    }
    out.push(`</g>`);
  });
  legend(out, f.left + f.width + 16, f.top + 10, entries);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Blue shades from white (0) to dark (the largest value); white text on dark cells. */
function shade(t: number): { fill: string; text: string } {
  const c = (a: number, b: number) => Math.round(a + (b - a) * t);
  return { fill: `rgb(${c(247, 8)},${c(251, 48)},${c(255, 107)})`, text: t > 0.55 ? 'white' : 'black' };
}

/** A matrix of coloured cells with the value written in each (confusion matrices: rows = true class). */
export function heatmap(o: HeatmapOptions): string {
  const rows = o.rowLabels.length;
  const cols = o.colLabels.length;
  if (o.values.length !== rows || o.values.some((r) => r.length !== cols)) {
    throw new RangeError(`heatmap: values must be ${rows}×${cols} (rowLabels × colLabels)`);
  }
  const format = o.format ?? short;
  const longest = Math.max(1, ...o.rowLabels.map((l) => l.length));
  const colLongest = Math.max(1, ...o.colLabels.map((l) => l.length));
  const cell = Math.max(28, Math.min(64, Math.floor(640 / Math.max(rows, cols))));
  const left = 40 + Math.min(200, longest * 7);
  const top = 48 + Math.min(160, colLongest * 6);
  const width = left + cols * cell + 24;
  const height = top + rows * cell + 40;
  const max = Math.max(0, ...o.values.flat().filter(Number.isFinite));
  const out = svgOpen(width, height, o.title);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = o.values[r][c];
      const s = shade(max > 0 && Number.isFinite(v) ? Math.max(0, v) / max : 0);
      const x = left + c * cell;
      const y = top + r * cell;
      out.push(
        `<g class="cell" data-row="${r}" data-col="${c}" data-value="${v}"><rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${s.fill}" stroke="#ccc"/>` +
          `<text x="${n(x + cell / 2)}" y="${n(y + cell / 2)}" dy="0.35em" text-anchor="middle" font-size="${cell >= 40 ? 12 : 9}" fill="${s.text}" ${FONT}>${escapeXml(format(v))}</text></g>`,
      );
    }
  }
  o.rowLabels.forEach((l, r) => {
    out.push(
      `<text x="${left - 6}" y="${n(top + r * cell + cell / 2)}" dy="0.35em" text-anchor="end" font-size="11" ${FONT}>${escapeXml(l)}</text>`,
    );
  });
  o.colLabels.forEach((l, c) => {
    const x = n(left + c * cell + cell / 2);
    out.push(
      `<text x="${x}" y="${top - 6}" transform="rotate(-45 ${x} ${top - 6})" font-size="11" ${FONT}>${escapeXml(l)}</text>`,
    );
  });
  const cy = n(top + (rows * cell) / 2);
  out.push(
    `<text x="14" y="${cy}" transform="rotate(-90 14 ${cy})" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(o.yLabel ?? 'true class')}</text>`,
  );
  out.push(
    `<text x="${n(left + (cols * cell) / 2)}" y="${n(height - 12)}" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(o.xLabel ?? 'predicted class')}</text>`,
  );
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Grouped vertical bars: for each group one bar per series, with its value above it. */
export function barChart(o: BarChartOptions): string {
  for (const s of o.series) {
    if (s.values.length !== o.groups.length)
      throw new RangeError(`barChart: series '${s.name}' has ${s.values.length} values for ${o.groups.length} groups`);
  }
  const format = o.format ?? short;
  const values = o.series.flatMap((s) => s.values).filter(Number.isFinite);
  const yt = o.yRange ? niceTicks(o.yRange[0], o.yRange[1]) : niceTicks(Math.min(0, ...values), Math.max(0, ...values));
  // Group labels wrap after ':' and ',' so that long ones do not run into their neighbours.
  const labelLines = o.groups.map((g) => g.split(/(?<=[:,])\s+/));
  const longest = Math.max(0, ...labelLines.flat().map((l) => l.length));
  const groupWidth = Math.max(60, 24 * o.series.length + 24, Math.ceil(longest * 6.6) + 16);
  const f: Frame = { left: 64, top: 40, width: groupWidth * Math.max(1, o.groups.length), height: 300 };
  const width = f.left + f.width + 170;
  const height = f.top + f.height + 44 + 13 * Math.max(1, ...labelLines.map((l) => l.length));
  const out = svgOpen(width, height, o.title);
  const my = yAxis(out, f, yt.lo, yt.hi, yt.ticks, o.yLabel ?? '');
  const colors = o.series.map((s, i) => s.color ?? PALETTE[i % PALETTE.length]);
  const barWidth = (groupWidth - 24) / Math.max(1, o.series.length);
  const base = my(Math.max(yt.lo, Math.min(yt.hi, 0)));
  o.groups.forEach((_, gi) => {
    const gx = f.left + gi * groupWidth + 12;
    o.series.forEach((s, si) => {
      const v = s.values[gi];
      if (!Number.isFinite(v)) return;
      const py = Math.min(f.top + f.height, Math.max(f.top, my(v)));
      const x = gx + si * barWidth;
      out.push(
        `<g class="bar" data-group="${gi}" data-series="${si}" data-value="${v}"><rect x="${n(x)}" y="${n(Math.min(py, base))}" width="${n(barWidth - 2)}" height="${n(Math.abs(base - py))}" fill="${colors[si]}"/>` +
          `<text x="${n(x + (barWidth - 2) / 2)}" y="${n(Math.min(py, base) - 4)}" text-anchor="middle" font-size="10" ${FONT}>${escapeXml(format(v))}</text></g>`,
      );
    });
    const cx = n(gx + (groupWidth - 24) / 2);
    const lines = labelLines[gi]
      .map((l, k) => `<tspan x="${cx}" dy="${k === 0 ? 0 : 13}">${escapeXml(l)}</tspan>`)
      .join('');
    out.push(
      `<text x="${cx}" y="${n(f.top + f.height + 18)}" text-anchor="middle" font-size="11" ${FONT}>${lines}</text>`,
    );
  });
  out.push(`<line x1="${n(f.left)}" y1="${n(base)}" x2="${n(f.left + f.width)}" y2="${n(base)}" stroke="black"/>`);
  legend(
    out,
    f.left + f.width + 16,
    f.top + 10,
    o.series.map((s, i) => ({ name: s.name, color: colors[i], bar: true })),
  );
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Charts from this module one above the other in one SVG document (loss over accuracy, say). */
export function stackCharts(svgs: readonly string[]): string {
  let y = 0;
  let width = 0;
  const parts = svgs.map((svg) => {
    const open = /^(?:<\?xml[^>]*>\s*)?<svg [^>]*width="([\d.]+)" height="([\d.]+)"[^>]*>/.exec(svg);
    if (!open || !svg.trimEnd().endsWith('</svg>'))
      throw new RangeError('stackCharts: expects SVG documents made by this module');
    const inner = svg.slice(open[0].length, svg.lastIndexOf('</svg>'));
    const part = `<g transform="translate(0 ${y})">${inner}</g>`;
    y += Number(open[2]);
    width = Math.max(width, Number(open[1]));
    return part;
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}">\n${parts.join('\n')}\n</svg>\n`;
}
