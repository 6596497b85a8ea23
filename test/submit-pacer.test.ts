// SubmitPacer: sleeps for a part of the fastest recent run before mapping, never after the
// first (compiling) run alone, and not at all when disabled.
import { describe, expect, it } from 'vitest';
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
