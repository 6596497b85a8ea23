// A short soak (scripts/soak.ts runs the long one): 300 runs of one session, then 20 create/run/
// dispose cycles of a second session and a Trainer (one training step) on the same GpuContext.
// The context's live GPU buffers must come back to the first session's own after every cycle, and
// neither RSS nor GPU memory may grow from the second quarter of the samples to the last
// (medians; RSS within RSS_TOLERANCE, GPU bytes and buffer counts exactly).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { growthAfterWarmUp, runSoak, type SoakSample } from '../scripts/soak.ts';

describe('soak', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('300 runs and 20 session/trainer create-dispose cycles on one context: no growth after warm-up', async () => {
    const before = gpu.liveBuffers;
    const samples: SoakSample[] = await runSoak({ gpu, runs: 300, cycles: 20, sampleEvery: 3 });
    const runs = samples.filter((s) => s.phase === 'runs');
    const cycles = samples.filter((s) => s.phase === 'cycles');
    expect([runs.length, cycles.length]).toEqual([100, 20]);
    // The first session holds the same buffers at every run, and each cycle frees all it made.
    const held = runs[0].gpuBytes;
    expect(held).toBeGreaterThan(0);
    for (const s of [...runs, ...cycles]) expect([s.phase, s.n, s.gpuBytes]).toEqual([s.phase, s.n, held]);
    expect(growthAfterWarmUp(samples)).toEqual([]);
    // Everything freed once the first session is disposed too.
    expect(gpu.liveBuffers).toEqual(before);
  }, 120_000);

  it('the growth check flags a slope beyond the tolerance and ignores noise and warm-up', () => {
    const series = (f: (i: number) => number, gpu: (i: number) => number = () => 4096): SoakSample[] =>
      Array.from({ length: 40 }, (_, i) => ({
        phase: 'runs' as const,
        n: i + 1,
        rssBytes: f(i),
        heapBytes: 0,
        gpuBuffers: 3,
        gpuBytes: gpu(i),
      }));
    const MiB = 2 ** 20;
    // Warm-up in the first quarter, then ±8 MiB noise: fine.
    expect(growthAfterWarmUp(series((i) => (i < 10 ? i * 20 * MiB : 300 * MiB + ((i * 7) % 5) * 4 * MiB)))).toEqual([]);
    // 2 MiB per sample: 40 MiB between the quarters' medians, beyond 24 MiB.
    expect(growthAfterWarmUp(series((i) => 300 * MiB + i * 2 * MiB)).map((g) => g.metric)).toEqual(['rssBytes']);
    // One GPU buffer's bytes more at the end: flagged, there is no tolerance for GPU memory.
    expect(
      growthAfterWarmUp(
        series(
          () => 300 * MiB,
          (i) => (i < 30 ? 4096 : 8192),
        ),
      ).map((g) => g.metric),
    ).toEqual(['gpuBytes']);
  });
});
