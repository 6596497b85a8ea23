// SubmitPacer: sleeps for a part of the fastest recent run before mapping, never after the
// first (compiling) run alone, and not at all when disabled; without a recent run it probes a
// readback buffer (a fake here: a map that resolves once its work is done, and that unmap()
// aborts before) until the work is done, leaving it unmapped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { SubmitPacer } from '../src/kernels/submit-pacer.ts';

/** Records a run that took `ms` (as if submitted `ms` ago and mapped now). */
const record = (pacer: SubmitPacer, ms: number) => pacer.done(performance.now() - ms);

async function sleptMs(pacer: SubmitPacer, sinceSubmitMs = 0): Promise<number> {
  const t0 = performance.now();
  await pacer.beforeMap(t0 - sinceSubmitMs);
  return performance.now() - t0;
}

describe('SubmitPacer', () => {
  it('does not sleep before it has a run past the first (the first compiles pipelines)', async () => {
    const pacer = new SubmitPacer({ enabled: true });
    expect(await sleptMs(pacer)).toBeLessThan(5);
    record(pacer, 3000); // a first run with seconds of compiling must not set the pace
    expect(await sleptMs(pacer)).toBeLessThan(5);
  });

  it('sleeps a fraction of the fastest recent run, less the time already past since submit', async () => {
    const pacer = new SubmitPacer({ enabled: true, fraction: 0.5, slackMs: 0 });
    record(pacer, 10);
    record(pacer, 400); // slow outlier
    record(pacer, 120);
    record(pacer, 80); // the fastest of the recent runs: sleep 0.5 · 80 = 40 ms
    const slept = await sleptMs(pacer);
    expect(slept).toBeGreaterThanOrEqual(38);
    expect(slept).toBeLessThan(40 + 60); // timers fire late on a loaded machine, never early
    // 30 ms already past since submit: 10 ms left.
    const rest = await sleptMs(pacer, 30);
    expect(rest).toBeGreaterThanOrEqual(8);
    expect(rest).toBeLessThan(40);
  });

  it('forgets runs older than the last four', async () => {
    const pacer = new SubmitPacer({ enabled: true, fraction: 0.5, slackMs: 0 });
    record(pacer, 1);
    record(pacer, 2); // fast, but pushed out by the four below
    for (const ms of [200, 200, 200, 200]) record(pacer, ms);
    expect(await sleptMs(pacer)).toBeGreaterThanOrEqual(98);
  });

  it('never sleeps when disabled', async () => {
    const pacer = new SubmitPacer({ enabled: false });
    for (const ms of [50, 50, 50]) record(pacer, ms);
    expect(await sleptMs(pacer)).toBeLessThan(5);
  });
});

/** A stand-in for a MAP_READ buffer whose submitted work is done `ms` after now. */
function bufferDoneIn(ms: number, failWith?: Error) {
  const doneAt = performance.now() + ms;
  const log = { maps: 0, aborts: 0, mapped: false };
  let pending: { reject: (error: unknown) => void; timer: ReturnType<typeof setTimeout> } | undefined;
  const buffer = {
    mapAsync: () => {
      log.maps++;
      if (pending || log.mapped) return Promise.reject(new Error('mapAsync on a buffer mapped or pending'));
      return new Promise<void>((resolve, reject) => {
        if (failWith) return reject(failWith);
        const timer = setTimeout(
          () => {
            pending = undefined;
            log.mapped = true;
            resolve();
          },
          Math.max(0, doneAt - performance.now()),
        );
        pending = { reject, timer };
      });
    },
    unmap: () => {
      if (pending) {
        clearTimeout(pending.timer);
        pending.reject(new DOMException('unmapped before the map completed', 'AbortError'));
        pending = undefined;
        log.aborts++;
      }
      log.mapped = false;
    },
  };
  return { buffer: buffer as unknown as GPUBuffer, log };
}

describe('SubmitPacer without a recent run', () => {
  // GPUMapMode, which the probe maps with, is a global once a context exists.
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('probes the readback buffer until the work is done, aborting the maps before, and leaves it unmapped', async () => {
    const pacer = new SubmitPacer({ enabled: true });
    const { buffer, log } = bufferDoneIn(120);
    const t0 = performance.now();
    await pacer.beforeMap(t0, buffer);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(119);
    expect(log.aborts).toBeGreaterThan(0);
    expect(log.maps).toBe(log.aborts + 1);
    expect(log.mapped).toBe(false);
  });

  it('also probes after the first run, until a run is recorded; then sleeps on its time and leaves the buffer alone', async () => {
    const pacer = new SubmitPacer({ enabled: true });
    record(pacer, 3000); // the first run: not recorded
    const second = bufferDoneIn(30);
    await pacer.beforeMap(performance.now(), second.buffer);
    expect(second.log.maps).toBeGreaterThan(1);
    record(pacer, 40);
    const third = bufferDoneIn(30);
    await pacer.beforeMap(performance.now(), third.buffer);
    expect(third.log.maps).toBe(0);
  });

  it('passes on a failure that is not its own abort (a lost device)', async () => {
    const pacer = new SubmitPacer({ enabled: true });
    const { buffer } = bufferDoneIn(50, new DOMException('device lost', 'OperationError'));
    await expect(pacer.beforeMap(performance.now(), buffer)).rejects.toThrow('device lost');
  });

  it('does not probe when disabled', async () => {
    const pacer = new SubmitPacer({ enabled: false });
    const { buffer, log } = bufferDoneIn(50);
    await pacer.beforeMap(performance.now(), buffer);
    expect(log.maps).toBe(0);
  });
});
