// The fuzz driver: a pool of long-lived worker processes (Dawn starts once per worker), each
// seed under a watchdog and an RSS cap; a worker that hangs, crashes or outgrows the cap is
// killed, its seed classified, and a fresh worker takes its place.
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Target } from './corpus.ts';
import type { DiffVerdict, Outcome } from './target.ts';
import type { SeedRequest, WorkerMessage } from './worker.ts';

export interface FuzzOptions {
  seeds: number;
  seedStart?: number;
  jobs?: number;
  diff?: boolean;
  only?: Target;
  fullLight?: boolean;
  /** Watchdog per seed (default 60 s: a light model's create and run on a software adapter). */
  timeoutMs?: number;
  /** A worker above this resident size is killed and its seed counted as over the cap (default 4 GiB). */
  rssCapBytes?: number;
  /** V8 heap limit of each worker (--max-old-space-size, MiB; default 2048). */
  heapMb?: number;
  onOutcome?: (o: SeedResult, done: number) => void;
}

/** 'ort-failure': onnxruntime (diff mode) crashed, hung or outgrew the cap on a mutant: not ours. */
export type SeedClass = 'typed' | 'accepted' | 'untyped' | 'hang' | 'crash' | 'memory' | 'ort-failure';

export interface SeedResult {
  seed: number;
  target: Target;
  class: SeedClass;
  stage: string;
  base?: string;
  steps?: string[];
  error?: string;
  diff?: DiffVerdict;
  diffDetail?: string;
  peakRssBytes: number;
  outcome?: Outcome;
}

export interface FuzzReport {
  options: Omit<FuzzOptions, 'onOutcome'>;
  seconds: number;
  seedsPerSecond: number;
  peakRssBytes: number;
  counts: Record<SeedClass | 'tried', number>;
  diff: Partial<Record<DiffVerdict, number>>;
  results: SeedResult[];
}

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker.ts');
const STARTUP_MS = 180_000;

/** Which engine path a seed exercises when no --only is given: one seed in five is a checkpoint. */
export function targetOf(seed: number, only?: Target): Target {
  return only ?? (seed % 5 === 4 ? 'checkpoints' : 'models');
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const start = options.seedStart ?? 0;
  const jobs = Math.max(1, options.jobs ?? 1);
  const timeoutMs = options.timeoutMs ?? 60_000;
  const rssCap = options.rssCapBytes ?? 4 * 2 ** 30;
  const pending: number[] = Array.from({ length: options.seeds }, (_, i) => start + i);
  const results: SeedResult[] = [];
  const t0 = performance.now();

  await new Promise<void>((resolve, reject) => {
    let live = 0;
    const finish = () => {
      if (live === 0 && pending.length === 0) resolve();
    };
    const record = (r: SeedResult) => {
      results.push(r);
      options.onOutcome?.(r, results.length);
    };
    const spawn = () => {
      if (pending.length === 0) return finish();
      live++;
      const child: ChildProcess = fork(WORKER, [], {
        execArgv: ['--import', 'tsx', `--max-old-space-size=${options.heapMb ?? 2048}`],
        env: {
          ...process.env,
          GRAFT_FUZZ_WORKER: JSON.stringify({ diff: options.diff, fullLight: options.fullLight }),
        },
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
      let current: { seed: number; stage: string; polledRss: number } | undefined;
      let killedAs: SeedClass | undefined;
      let watchdog: NodeJS.Timeout | undefined;
      const arm = (ms: number, as: SeedClass) => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => kill(as), ms);
      };
      const kill = (as: SeedClass) => {
        killedAs = as;
        child.kill('SIGKILL');
      };
      const poll = setInterval(() => {
        const rss = residentBytes(child.pid);
        if (current && rss > current.polledRss) current.polledRss = rss;
        if (current && rss > rssCap) kill('memory');
      }, 50);
      const next = () => {
        const seed = pending.shift();
        if (seed === undefined) {
          // Dawn's instance keeps a worker alive: end it once its queue is empty.
          child.kill('SIGTERM');
          return;
        }
        current = { seed, stage: 'start', polledRss: 0 };
        arm(timeoutMs, 'hang');
        child.send({ seed, target: targetOf(seed, options.only) } satisfies SeedRequest);
      };
      arm(STARTUP_MS, 'hang');
      child.on('message', (m: WorkerMessage) => {
        if (m.type === 'ready') next();
        else if (m.type === 'stage' && current) current.stage = m.stage;
        else if (m.type === 'done') {
          const o = m.outcome;
          record({
            seed: o.seed,
            target: o.target,
            class: o.verdict,
            stage: o.stage,
            base: o.base,
            steps: o.steps,
            error: o.error && `${o.error.name}: ${o.error.message}`,
            diff: o.diff,
            diffDetail: o.diffDetail,
            peakRssBytes: Math.max(m.peakRssBytes, current?.polledRss ?? 0),
            outcome: o,
          });
          current = undefined;
          next();
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(watchdog);
        clearInterval(poll);
        live--;
        if (current) {
          const cls = current.stage === 'ort' ? 'ort-failure' : (killedAs ?? 'crash');
          const kind = killedAs ?? 'crash';
          const why =
            kind === 'hang'
              ? `no answer within ${timeoutMs} ms`
              : kind === 'memory'
                ? `resident size above ${rssCap} bytes`
                : `worker exited (code ${code}, signal ${signal}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`;
          record({
            seed: current.seed,
            target: targetOf(current.seed, options.only),
            class: cls,
            stage: current.stage,
            error: why,
            peakRssBytes: current.polledRss,
          });
          current = undefined;
        } else if (killedAs === 'hang' && pending.length > 0 && results.length === 0) {
          // A worker that never started: give up rather than loop.
          pending.length = 0;
          reject(new Error(`fuzz worker did not start within ${STARTUP_MS} ms: ${stderr}`));
          return;
        }
        if (pending.length > 0) spawn();
        else finish();
      });
    };
    for (let j = 0; j < Math.min(jobs, pending.length); j++) spawn();
  });

  const seconds = (performance.now() - t0) / 1000;
  results.sort((a, b) => a.seed - b.seed);
  const counts = {
    tried: results.length,
    typed: 0,
    accepted: 0,
    untyped: 0,
    hang: 0,
    crash: 0,
    memory: 0,
    'ort-failure': 0,
  };
  const diff: FuzzReport['diff'] = {};
  for (const r of results) {
    counts[r.class]++;
    if (r.diff) diff[r.diff] = (diff[r.diff] ?? 0) + 1;
  }
  const { onOutcome: _, ...rest } = options;
  return {
    options: rest,
    seconds,
    seedsPerSecond: results.length / seconds,
    // Seeds killed at the cap are counted as 'memory', not as the peak of a seed that finished.
    peakRssBytes: Math.max(0, ...results.filter((r) => r.outcome).map((r) => r.peakRssBytes)),
    counts,
    diff,
    results,
  };
}

function residentBytes(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}
