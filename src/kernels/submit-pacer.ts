// Waiting for a submit without spinning the JS thread on a CPU adapter.
//
// dawn.node completes a pending mapAsync (or onSubmittedWorkDone) by re-queueing its event
// processing with setImmediate until the work is done, so the JS thread runs at 100 % for the
// whole wait. On a software adapter (lavapipe) the GPU work runs on the same CPU cores: on a
// 2-core machine the spinning thread takes a third of them from lavapipe's two workers. A pacer
// sleeps on a timer (nothing of Dawn pending, so nothing spins) for most of the time this work
// took on its last runs, and only then maps: the spin covers the tail alone.

/** Runs remembered: the estimate is the fastest of them, so one slow run does not oversleep. */
const HISTORY = 4;

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
   * not spin the page's thread, and a real GPU does not share the CPU. */
  static forAdapter(software: boolean): SubmitPacer {
    const node = typeof process !== 'undefined' && process.versions?.node !== undefined;
    return new SubmitPacer({ enabled: software && node });
  }

  /** Call right after submit (submittedAt: performance.now() just before it); resolves when it
   * is time to map the results. */
  async beforeMap(submittedAt: number): Promise<void> {
    if (!this.#options.enabled || this.#recent.length === 0) return;
    const expected = Math.min(...this.#recent);
    const ms = expected * this.#options.fraction - this.#options.slackMs - (performance.now() - submittedAt);
    if (ms >= 1) await new Promise((resolve) => setTimeout(resolve, ms));
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
