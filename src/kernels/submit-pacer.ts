// Waiting for a submit without spinning the JS thread on a CPU adapter.
//
// dawn.node completes a pending mapAsync (or onSubmittedWorkDone) by re-queueing its event
// processing with setImmediate until the work is done, so the JS thread runs at 100 % for the
// whole wait. On a software adapter (lavapipe) the GPU work runs on the same CPU cores: on a
// 2-core machine the spinning thread takes a third of them from lavapipe's two workers. A pacer
// sleeps on a timer (nothing of Dawn pending, so nothing spins) for most of the time this work
// took on its last runs, and only then maps: the spin covers the tail alone.
//
// Before there is such a time (the first runs of a plan), it probes instead: it starts the map
// and, when the work is not done within a millisecond, aborts it (unmap() rejects a pending map
// with an AbortError, and dawn.node stops spinning) and sleeps before the next try, for a
// twentieth of the time waited so far (2–50 ms). The first run of a VGG-16 on lavapipe then
// computes on both cores instead of sharing one with the spinning thread, for a result at most
// one sleep late.

/** Runs remembered: the estimate is the fastest of them, so one slow run does not oversleep. */
const HISTORY = 4;
/** How long a probing map may spin before it is aborted, ms. */
const PROBE_SPIN_MS = 1;
/** The sleep between probes: this part of the time since submit, within [min, max] ms. */
const PROBE_SLEEP = { fraction: 1 / 20, minMs: 2, maxMs: 50 };

export interface SubmitPacerOptions {
  /** Sleep at all (default: on a software adapter under Node, where dawn.node spins). */
  enabled: boolean;
  /** Part of the estimated time slept (default 0.8); the rest is waited for by mapping. */
  fraction?: number;
  /** Taken off the sleep for timers that fire late (default 1 ms). */
  slackMs?: number;
}

export class SubmitPacer {
  readonly #recent: number[] = [];
  #seenFirst = false;
  readonly #options: Required<SubmitPacerOptions>;

  constructor(options: SubmitPacerOptions) {
    this.#options = { fraction: 0.8, slackMs: 1, ...options };
  }

  /** On for software adapters under Node (dawn.node); off elsewhere: a browser's mapAsync does
   * not spin the page's thread, nor does Deno's, and a real GPU does not share the CPU. */
  static forAdapter(software: boolean): SubmitPacer {
    // Deno sets process.versions.node too, but its WebGPU is wgpu, which neither spins nor lets
    // unmap() abort a pending map ("Buffer is not mapped").
    const dawnNode = typeof process !== 'undefined' && process.versions?.node !== undefined && !('Deno' in globalThis);
    return new SubmitPacer({ enabled: software && dawnNode });
  }

  /**
   * Call right after submit (submittedAt: performance.now() just before it); resolves when it
   * is time to map the results. `probe`, a MAP_READ buffer the submit copies into (left
   * unmapped), lets it wait for a run it has no time for by probing (see the top of the file);
   * without it such a run is mapped at once.
   */
  async beforeMap(submittedAt: number, probe?: GPUBuffer): Promise<void> {
    if (!this.#options.enabled) return;
    if (this.#recent.length === 0) {
      if (probe) await probeUntilDone(probe, submittedAt);
      return;
    }
    const expected = Math.min(...this.#recent);
    const ms = expected * this.#options.fraction - this.#options.slackMs - (performance.now() - submittedAt);
    if (ms >= 1) await sleep(ms);
  }

  /** Call once the results are mapped: records how long this run took (not the first: lavapipe
   * compiles pipelines at their first dispatch, which can take seconds). */
  done(submittedAt: number): void {
    if (!this.#seenFirst) {
      this.#seenFirst = true;
      return;
    }
    this.#recent.push(performance.now() - submittedAt);
    if (this.#recent.length > HISTORY) this.#recent.shift();
  }
}

/** Resolves once the work submitted before it is done, `buffer` (MAP_READ, unmapped) mapped by
 * tries that are aborted while the work runs; it is left unmapped. */
async function probeUntilDone(buffer: GPUBuffer, submittedAt: number): Promise<void> {
  for (;;) {
    let aborted = false;
    const mapped = buffer.mapAsync(GPUMapMode.READ).then(
      () => true,
      (error: unknown) => {
        // Only our own abort means "not yet"; any other failure (a lost device) is the caller's.
        if (aborted && (error as { name?: string } | null)?.name === 'AbortError') return false;
        throw error;
      },
    );
    const settled = await Promise.race([mapped, sleep(PROBE_SPIN_MS).then(() => undefined)]);
    // Not yet: abort the map (it rejects with an AbortError, or resolved just now).
    if (settled === undefined) {
      aborted = true;
      buffer.unmap();
    }
    if (await mapped) {
      buffer.unmap();
      return;
    }
    const waited = performance.now() - submittedAt;
    await sleep(Math.min(PROBE_SLEEP.maxMs, Math.max(PROBE_SLEEP.minMs, waited * PROBE_SLEEP.fraction)));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
