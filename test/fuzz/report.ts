// The fuzz table: one line per class with its count and a few seeds to replay, the untyped
// errors grouped by their message, the differential verdicts when --diff ran.
import type { FuzzReport, SeedClass, SeedResult } from './pool.ts';

const CLASSES: SeedClass[] = ['typed', 'accepted', 'untyped', 'hang', 'crash', 'memory', 'ort-failure'];
const SHOWN = 8;

export function formatReport(report: FuzzReport, replay: (r: SeedResult) => string): string {
  const lines: string[] = [];
  const o = report.options;
  lines.push(
    `fuzz: seeds ${o.seedStart ?? 0}…${(o.seedStart ?? 0) + o.seeds - 1}${o.only ? ` (${o.only})` : ''}, ` +
      `${o.jobs ?? 1} workers, ${report.seconds.toFixed(1)} s, ${report.seedsPerSecond.toFixed(2)} seeds/s, ` +
      `peak RSS of a finished seed ${(report.peakRssBytes / 2 ** 20).toFixed(0)} MiB`,
  );
  lines.push('');
  lines.push('| class | count | seeds |');
  lines.push('|---|---:|---|');
  lines.push(`| tried | ${report.counts.tried} | |`);
  for (const c of CLASSES) {
    const seeds = report.results.filter((r) => r.class === c).map((r) => r.seed);
    lines.push(
      `| ${c} | ${report.counts[c]} | ${seeds.slice(0, SHOWN).join(' ')}${seeds.length > SHOWN ? ' …' : ''} |`,
    );
  }
  if (o.diff) {
    lines.push('');
    lines.push('| differential (onnxruntime-node CPU) | count | seeds |');
    lines.push('|---|---:|---|');
    for (const d of [
      'answers-differ',
      'we-accept-ort-refuses',
      'ort-accepts-we-refuse',
      'known-deviation',
      'ort-lacks-kernel',
      'agree',
      'both-refuse',
    ] as const) {
      const seeds = report.results.filter((r) => r.diff === d).map((r) => r.seed);
      const defect = d === 'answers-differ' || d === 'we-accept-ort-refuses' ? ' (defect)' : '';
      lines.push(
        `| ${d}${defect} | ${seeds.length} | ${seeds.slice(0, SHOWN).join(' ')}${seeds.length > SHOWN ? ' …' : ''} |`,
      );
    }
  }
  const problems = report.results.filter(
    (r) =>
      ['untyped', 'hang', 'crash', 'memory'].includes(r.class) ||
      r.diff === 'answers-differ' ||
      r.diff === 'we-accept-ort-refuses',
  );
  if (problems.length > 0) {
    lines.push('');
    lines.push('Problems, grouped (first seed of each, and how to replay it):');
    const groups = new Map<string, SeedResult[]>();
    for (const r of problems) {
      const what =
        r.diff === 'answers-differ' || r.diff === 'we-accept-ort-refuses'
          ? `${r.diff}: ${r.diffDetail ?? ''}`
          : (r.error ?? '');
      const key = `${r.class} @${r.stage}: ${signature(what)}`;
      groups.set(key, [...(groups.get(key) ?? []), r]);
    }
    for (const [key, rs] of [...groups].sort((a, b) => b[1].length - a[1].length)) {
      lines.push(`  ${rs.length}× ${key}`);
      lines.push(`      e.g. seed ${rs[0].seed} (${rs[0].base ?? rs[0].target}): ${replay(rs[0])}`);
    }
  }
  return lines.join('\n');
}

/** A message with its numbers and quoted names blanked, so one defect is one group. */
export function signature(message: string): string {
  return message
    .replace(/'[^']*'/g, "'…'")
    .replace(/\([^()]*\)/g, '(…)')
    .replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi, 'N')
    .slice(0, 140);
}
