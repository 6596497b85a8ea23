// A long-lived fuzz worker (a child process of the pool): opens the GPU once, then runs the
// seeds the parent sends, one at a time, reporting each stage so a crash or hang is placed.
import fs from 'node:fs';
import type { GpuContext } from '../../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../../src/node/index.ts';
import { checkpointCorpus, modelCorpus, type Target } from './corpus.ts';
import { runSeed, type Outcome, type SeedContext } from './target.ts';

export interface SeedRequest {
  seed: number;
  target: Target;
}

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'stage'; seed: number; stage: string }
  | { type: 'done'; outcome: Outcome; peakRssBytes: number };

const options = JSON.parse(process.env.GRAFT_FUZZ_WORKER ?? '{}') as { diff?: boolean; fullLight?: boolean };
const send = (m: WorkerMessage) => process.send!(m);

const ctx: SeedContext = {
  models: modelCorpus(),
  checkpoints: checkpointCorpus(),
  diff: options.diff,
  fullLight: options.fullLight,
};
let gpu: GpuContext | undefined;
const queue: SeedRequest[] = [];
let busy = false;

process.on('message', (m: SeedRequest) => {
  queue.push(m);
  void drain();
});
send({ type: 'ready' });

async function drain(): Promise<void> {
  if (busy) return;
  busy = true;
  while (queue.length > 0) {
    const { seed, target } = queue.shift()!;
    if (target === 'models' && (!gpu || gpu.lost)) {
      gpu?.dispose();
      gpu = await createNodeGpuContext();
    }
    ctx.gpu = gpu;
    ctx.onStage = (stage) => send({ type: 'stage', seed, stage });
    resetPeakRss();
    const outcome = await runSeed(seed, target, ctx);
    send({ type: 'done', outcome, peakRssBytes: peakRss() });
  }
  busy = false;
}

/** Linux resets the peak (VmHWM) when "5" is written to clear_refs: each seed gets its own peak. */
function resetPeakRss(): void {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    // not Linux: the peak is the process's so far
  }
}

function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // fall through
  }
  return process.memoryUsage().rss;
}
