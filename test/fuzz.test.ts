// The fuzzer in the suite: a fixed seed range (so a failure names seeds to replay) through the
// worker pool; any crash, hang, memory blow-up or untyped exception fails, as does (for the
// differential subset) an accepted mutant that answers differently from onnxruntime.
import { describe, expect, it } from 'vitest';
import { checkpointCorpus, checkpointMutant, modelCorpus, modelMutant } from './fuzz/corpus.ts';
import { runFuzz, type FuzzReport } from './fuzz/pool.ts';
import { formatReport } from './fuzz/report.ts';
import { firstDifference, isTyped } from './fuzz/target.ts';
import { deserializeCheckpoint } from '../src/train/checkpoint.ts';
import { ModelError } from '../src/graph/errors.ts';
import { CheckpointError } from '../src/train/checkpoint.ts';
import { GpuDeviceLostError } from '../src/kernels/errors.ts';

const replay = (r: { seed: number; target: string }) => `npm run fuzz -- --replay ${r.seed} --only ${r.target}`;

function problems(report: FuzzReport): string[] {
  return report.results
    .filter((r) => !['typed', 'accepted', 'ort-failure'].includes(r.class) || r.diff === 'answers-differ')
    .map(
      (r) => `${r.class}${r.diff ? ` (${r.diff}: ${r.diffDetail})` : ''} seed ${r.seed} @${r.stage}: ${r.error ?? ''}`,
    );
}

describe('fuzz', () => {
  it('a seed names one mutant: the same bytes every time, different seeds different mutants', () => {
    const models = modelCorpus();
    const checkpoints = checkpointCorpus();
    for (const seed of [0, 1, 17, 123456]) {
      expect(modelMutant(seed, models).bytes).toEqual(modelMutant(seed, models).bytes);
      expect(checkpointMutant(seed, checkpoints).bytes).toEqual(checkpointMutant(seed, checkpoints).bytes);
    }
    const distinct = new Set(
      Array.from({ length: 50 }, (_, s) => Buffer.from(modelMutant(s, models).bytes).toString('base64')),
    );
    expect(distinct.size).toBeGreaterThan(45);
  });

  it("classifies the engine's error classes as typed and JavaScript's own as untyped", () => {
    expect(isTyped(new ModelError('x'))).toBe(true);
    expect(isTyped(new CheckpointError('corrupt', 'f', 'x'))).toBe(true);
    expect(isTyped(new GpuDeviceLostError('x', 'destroyed', ''))).toBe(true);
    for (const e of [new Error('x'), new TypeError('x'), new RangeError('x'), 'a string'])
      expect(isTyped(e)).toBe(false);
  });

  it('the differential check sees a value, a NaN or a shape that differs, and nothing else', () => {
    const t = (dims: number[], ...v: number[]) => ({ y: { dims, data: new Float32Array(v) } });
    expect(firstDifference(t([2], 1, NaN), t([2], 1 + 1e-5, NaN))).toBeUndefined();
    expect(firstDifference(t([2], 1, 2), t([2], 1, 2.1))).toBe('output y[1]: 2 vs onnxruntime 2.0999999046325684');
    expect(firstDifference(t([2], 1, 0.5), t([2], 1, NaN))).toMatch(/y\[1\]: 0.5 vs onnxruntime NaN/);
    expect(firstDifference(t([1, 2], 1, 2), t([2], 1, 2))).toMatch(/dims/);
    expect(firstDifference({}, t([1], 1))).toMatch(/we give none/);
  });

  it('checkpoint edits that recompute the CRC pass the checksum: the contents are what is tested', () => {
    const corpus = checkpointCorpus();
    let forged = 0;
    for (let seed = 0; seed < 300; seed++) {
      const m = checkpointMutant(seed, corpus);
      if (!m.steps.every((s) => s.endsWith('(CRC recomputed)'))) continue;
      forged++;
      try {
        deserializeCheckpoint(m.bytes, { source: `seed ${seed}` });
      } catch (e) {
        expect((e as CheckpointError).problem, `seed ${seed}: ${m.steps.join('; ')}: ${(e as Error).message}`).not.toBe(
          'checksum',
        );
      }
    }
    expect(forged).toBeGreaterThan(30);
  });

  it('the watchdog and the memory cap kill a worker and classify its seed', async () => {
    const hung = await runFuzz({ seeds: 2, seedStart: 7, jobs: 1, timeoutMs: 1 });
    expect(hung.results.map((r) => r.class)).toEqual(['hang', 'hang']);
    const big = await runFuzz({ seeds: 1, seedStart: 7, jobs: 1, rssCapBytes: 2 ** 20 });
    expect(big.results.map((r) => r.class)).toEqual(['memory']);
  });

  it('seeds 0…599: no crash, hang, memory blow-up or untyped exception', async () => {
    const report = await runFuzz({ seeds: 600, seedStart: 0, jobs: 2 });
    console.log(formatReport(report, replay));
    expect(report.counts.tried).toBe(600);
    expect(problems(report)).toEqual([]);
  });

  it('seeds 10000…10149 against onnxruntime: no accepted mutant answers differently', async () => {
    const report = await runFuzz({ seeds: 150, seedStart: 10_000, jobs: 2, diff: true, only: 'models' });
    console.log(formatReport(report, replay));
    expect(report.results.filter((r) => r.diff === 'answers-differ').map((r) => `${r.seed}: ${r.diffDetail}`)).toEqual(
      [],
    );
  });
});
