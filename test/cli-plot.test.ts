// The SVG charts: well-formed XML (parsed by a small strict parser here), and every point, cell
// and bar placed where the axis ticks say its data value belongs.
import { describe, expect, it } from 'vitest';
import { barChart, heatmap, lineChart, niceTicks, stackCharts } from '../src/cli/plot.ts';
import { seededRandom } from '../src/graph/random.ts';

interface El {
  name: string;
  attrs: Record<string, string>;
  children: El[];
  text: string;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
function unescape(s: string): string {
  return s.replace(/&(\w+);/g, (m, e: string) => {
    if (!(e in ENTITIES)) throw new Error(`unknown entity ${m}`);
    return ENTITIES[e];
  });
}

/** Strict enough for our output: one root, matching tags, quoted attributes, known entities, no bare '<' or '&'. */
function parseXml(src: string): El {
  let i = 0;
  const body = src.replace(/^<\?xml[^?]*\?>\s*/, '');
  const root: El = { name: '#root', attrs: {}, children: [], text: '' };
  const stack: El[] = [root];
  const s = body;
  while (i < s.length) {
    if (s[i] === '<') {
      const end = s.indexOf('>', i);
      if (end < 0) throw new Error(`unterminated tag at ${i}`);
      const tag = s.slice(i + 1, end);
      i = end + 1;
      if (tag.startsWith('/')) {
        const open = stack.pop()!;
        if (open.name !== tag.slice(1).trim()) throw new Error(`</${tag.slice(1)}> closes <${open.name}>`);
        continue;
      }
      const selfClosing = tag.endsWith('/');
      const m = /^([\w:-]+)((?:\s+[\w:-]+="[^"<]*")*)\s*\/?$/.exec(tag);
      if (!m) throw new Error(`malformed tag <${tag}>`);
      const attrs: Record<string, string> = {};
      for (const a of m[2].matchAll(/([\w:-]+)="([^"]*)"/g)) {
        if (a[1] in attrs) throw new Error(`duplicate attribute ${a[1]}`);
        attrs[a[1]] = unescape(a[2]);
      }
      const el: El = { name: m[1], attrs, children: [], text: '' };
      stack[stack.length - 1].children.push(el);
      if (!selfClosing) stack.push(el);
    } else {
      const next = s.indexOf('<', i);
      const text = s.slice(i, next < 0 ? s.length : next);
      if (/&(?!\w+;)/.test(text)) throw new Error(`bare & in text`);
      stack[stack.length - 1].text += unescape(text);
      i = next < 0 ? s.length : next;
    }
  }
  if (stack.length !== 1) throw new Error(`unclosed <${stack[stack.length - 1].name}>`);
  const roots = root.children;
  if (roots.length !== 1 || roots[0].name !== 'svg') throw new Error('expected one <svg> root');
  if (root.text.trim() !== '') throw new Error('text outside the root');
  return roots[0];
}

function all(el: El, pred: (e: El) => boolean, out: El[] = []): El[] {
  if (pred(el)) out.push(el);
  for (const c of el.children) all(c, pred, out);
  return out;
}

function texts(el: El): string[] {
  return all(el, (e) => e.name === 'text').map((e) => e.text);
}

/** The linear map data → pixel recovered from the first and last tick of an axis. */
function axisMap(svg: El, cls: 'x-tick' | 'y-tick'): { map: (v: number) => number; ticks: number[] } {
  const ticks = all(svg, (e) => e.attrs.class === cls).map((g) => {
    const line = g.children.find((c) => c.name === 'line')!;
    return { v: Number(g.attrs['data-value']), px: Number(cls === 'x-tick' ? line.attrs.x1 : line.attrs.y1) };
  });
  const a = ticks[0];
  const b = ticks[ticks.length - 1];
  return { map: (v) => a.px + ((v - a.v) / (b.v - a.v)) * (b.px - a.px), ticks: ticks.map((t) => t.v) };
}

describe('plot', () => {
  it('niceTicks covers the range with 1-2-5 steps', () => {
    const rand = seededRandom(3);
    for (let k = 0; k < 200; k++) {
      const lo = (rand() - 0.5) * 10 ** Math.floor(rand() * 6 - 2);
      const hi = lo + rand() * 10 ** Math.floor(rand() * 6 - 2);
      const t = niceTicks(lo, hi);
      expect(t.lo).toBeLessThanOrEqual(lo + 1e-12);
      expect(t.hi).toBeGreaterThanOrEqual(hi - 1e-12);
      expect(t.ticks.length).toBeGreaterThanOrEqual(2);
      expect(t.ticks.length).toBeLessThanOrEqual(12);
      const step = t.ticks[1] - t.ticks[0];
      const mantissa = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
      expect([1, 2, 5, 10].some((m) => Math.abs(mantissa - m) < 1e-6)).toBe(true);
    }
  });

  it('lineChart is well-formed and places every point by its axes', () => {
    const rand = seededRandom(11);
    const series = [
      {
        name: 'train loss <a&b>',
        points: Array.from({ length: 9 }, (_, i) => [i + 1, 2 * rand() + 0.1] as [number, number]),
      },
      {
        name: "val loss 'x'",
        dashed: true,
        points: Array.from({ length: 9 }, (_, i) => [i + 1, 3 * rand()] as [number, number]),
      },
    ];
    const svg = parseXml(lineChart({ title: 'Loss & accuracy', xLabel: 'epoch', yLabel: 'loss', series }));
    expect(texts(svg)).toContain('Loss & accuracy');
    expect(texts(svg)).toContain('train loss <a&b>');
    const xs = axisMap(svg, 'x-tick');
    const ys = axisMap(svg, 'y-tick');
    const polylines = all(svg, (e) => e.name === 'polyline');
    expect(polylines).toHaveLength(2);
    expect(polylines[1].attrs['stroke-dasharray']).toBeDefined();
    expect(polylines[0].attrs['stroke-dasharray']).toBeUndefined();
    polylines.forEach((pl, si) => {
      const pts = pl.attrs.points.split(' ').map((p) => p.split(',').map(Number));
      expect(pts).toHaveLength(series[si].points.length);
      pts.forEach(([px, py], k) => {
        const [x, y] = series[si].points[k];
        expect(px).toBeCloseTo(xs.map(x), 1);
        expect(py).toBeCloseTo(ys.map(y), 1);
      });
    });
    // The data lies within the tick range, and the y axis points up.
    const ysAll = series.flatMap((s) => s.points.map((p) => p[1]));
    expect(Math.min(...ys.ticks)).toBeLessThanOrEqual(Math.min(...ysAll));
    expect(Math.max(...ys.ticks)).toBeGreaterThanOrEqual(Math.max(...ysAll));
    expect(ys.map(1)).toBeLessThan(ys.map(0));
  });

  it('lineChart honours a fixed yRange', () => {
    const svg = parseXml(
      lineChart({
        title: 't',
        xLabel: 'x',
        yLabel: 'y',
        yRange: [0, 1],
        series: [
          {
            name: 'acc',
            points: [
              [0, 0.25],
              [1, 0.5],
              [2, 0.75],
            ],
          },
        ],
      }),
    );
    const ys = axisMap(svg, 'y-tick');
    expect(ys.ticks[0]).toBe(0);
    expect(ys.ticks[ys.ticks.length - 1]).toBe(1);
    const pts = all(svg, (e) => e.name === 'polyline')[0]
      .attrs.points.split(' ')
      .map((p) => Number(p.split(',')[1]));
    expect(pts[1]).toBeCloseTo((ys.map(0) + ys.map(1)) / 2, 1);
  });

  it('heatmap writes each value in its cell, darkest at the maximum', () => {
    const rand = seededRandom(5);
    const labels = ['cat', 'dog', 'a<b'];
    const values = labels.map(() => labels.map(() => Math.floor(rand() * 20)));
    const svg = parseXml(
      heatmap({ title: 'confusion', rowLabels: labels, colLabels: labels, values, format: (v) => `${v}` }),
    );
    const cells = all(svg, (e) => e.attrs.class === 'cell');
    expect(cells).toHaveLength(9);
    const rects = cells.map((c) => c.children.find((e) => e.name === 'rect')!);
    const xs = [...new Set(rects.map((r) => Number(r.attrs.x)))].sort((a, b) => a - b);
    const ys = [...new Set(rects.map((r) => Number(r.attrs.y)))].sort((a, b) => a - b);
    let maxFill = '';
    const max = Math.max(...values.flat());
    for (const c of cells) {
      const r = Number(c.attrs['data-row']);
      const k = Number(c.attrs['data-col']);
      const rect = c.children.find((e) => e.name === 'rect')!;
      expect(Number(rect.attrs.x)).toBe(xs[k]);
      expect(Number(rect.attrs.y)).toBe(ys[r]);
      expect(c.children.find((e) => e.name === 'text')!.text).toBe(String(values[r][k]));
      if (values[r][k] === max) maxFill = rect.attrs.fill;
    }
    const darkness = (fill: string) =>
      fill
        .match(/\d+/g)!
        .map(Number)
        .reduce((a, b) => a + b);
    for (const rect of rects) expect(darkness(rect.attrs.fill)).toBeGreaterThanOrEqual(darkness(maxFill));
    expect(texts(svg)).toContain('a<b');
    expect(() => heatmap({ title: 'x', rowLabels: ['a'], colLabels: ['a', 'b'], values: [[1]] })).toThrow(/1×2/);
  });

  it('stackCharts puts charts one above the other in one well-formed document', () => {
    const a = lineChart({
      title: 'loss',
      xLabel: 'epoch',
      yLabel: 'loss',
      series: [
        {
          name: 'train',
          points: [
            [1, 2],
            [2, 1],
          ],
        },
      ],
    });
    const b = lineChart({
      title: 'accuracy',
      xLabel: 'epoch',
      yLabel: 'acc',
      height: 300,
      series: [
        {
          name: 'train',
          points: [
            [1, 0.5],
            [2, 0.7],
          ],
        },
      ],
    });
    const svg = parseXml(stackCharts([a, b]));
    expect(svg.attrs.height).toBe(String(420 + 300));
    const groups = svg.children.filter((e) => e.name === 'g');
    expect(groups.map((g) => g.attrs.transform)).toEqual(['translate(0 0)', 'translate(0 420)']);
    expect(texts(groups[1])).toContain('accuracy');
    expect(() => stackCharts(['<svg/>'])).toThrow(/expects SVG documents made by this module/);
  });

  it('barChart heights follow the y axis', () => {
    const rand = seededRandom(9);
    const groups = ['case 1', 'case 2', 'case 3', 'case 4'];
    const series = [
      { name: 'fine-tuned', values: groups.map(() => rand()) },
      { name: 'scratch', values: groups.map(() => rand()) },
    ];
    const svg = parseXml(barChart({ title: 'accuracy', groups, series, yRange: [0, 1], yLabel: 'val accuracy' }));
    const ys = axisMap(svg, 'y-tick');
    const bars = all(svg, (e) => e.attrs.class === 'bar');
    expect(bars).toHaveLength(8);
    for (const b of bars) {
      const v = series[Number(b.attrs['data-series'])].values[Number(b.attrs['data-group'])];
      const rect = b.children.find((e) => e.name === 'rect')!;
      expect(Number(rect.attrs.y)).toBeCloseTo(ys.map(v), 1);
      expect(Number(rect.attrs.y) + Number(rect.attrs.height)).toBeCloseTo(ys.map(0), 1);
    }
    expect(() => barChart({ title: 'x', groups: ['a', 'b'], series: [{ name: 's', values: [1] }] })).toThrow(
      /'s' has 1 values for 2 groups/,
    );
  });
});
