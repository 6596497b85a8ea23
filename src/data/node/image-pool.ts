// A pool of worker threads that decode and preprocess image files off the main thread. Tasks
// run first-come first-served, two in flight per worker so a worker never idles on the message
// round trip. A worker holds the process open only while it has work: idle workers are unref'd,
// so a pool someone forgot to close does not hang the process, and close() terminates them all.
// A worker that dies fails every pending task with its error and closes the pool.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { PreprocessSpec } from '../../graph/model-metadata.ts';
import { DataError } from '../errors.ts';
import type { Augment } from '../preprocess.ts';
import type { JpegDecoder } from './decode-native.ts';

export interface PoolTask {
  readonly id: number;
  readonly path: string;
  readonly jpeg: JpegDecoder;
  readonly spec: PreprocessSpec;
  /** Training transform with this augmentation; absent: the evaluation transform. */
  readonly augment?: Augment;
  /** Seeds the transform's generator. */
  readonly seed: number;
}

export type PoolReply =
  | {
      readonly id: number;
      readonly ok: true;
      readonly data: Float32Array;
      readonly width: number;
      readonly height: number;
    }
  | { readonly id: number; readonly ok: false; readonly reason: string };

export type PoolResult = Omit<Extract<PoolReply, { ok: true }>, 'id'> | Omit<Extract<PoolReply, { ok: false }>, 'id'>;

const PER_WORKER = 2;

export function defaultWorkerCount(): number {
  return Math.max(1, availableParallelism());
}

export class ImagePool {
  readonly size: number;
  private readonly workers: Worker[] = [];
  private readonly inFlight = new Map<Worker, Map<number, Pending>>();
  private readonly queue: { task: PoolTask; pending: Pending; owner?: object }[] = [];
  private nextId = 0;
  private failure: Error | undefined;
  private closed = false;

  constructor(size: number = defaultWorkerCount()) {
    if (!Number.isInteger(size) || size < 1) throw new DataError(`workers must be a positive integer, got ${size}`);
    this.size = size;
  }

  /**
   * Decodes and transforms one file; a file that fails is a result with ok: false, not a
   * rejection. `owner` groups tasks for cancel().
   */
  run(task: Omit<PoolTask, 'id'>, owner?: object): Promise<PoolResult> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new DataError('the image loader was closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ task: { ...task, id: this.nextId++ }, pending: { resolve, reject }, owner });
      this.dispatch();
    });
  }

  /** Drops `owner`'s tasks that no worker has started (a consumer stopped early); they reject. */
  cancel(owner: object): void {
    const cancelled = new DataError('cancelled: the consumer stopped');
    for (let i = this.queue.length - 1; i >= 0; i--) {
      if (this.queue[i].owner === owner) this.queue.splice(i, 1)[0].pending.reject(cancelled);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new DataError('the image loader was closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      const worker = this.freeWorker();
      if (!worker) return;
      const { task, pending } = this.queue.shift()!;
      const tasks = this.inFlight.get(worker)!;
      if (tasks.size === 0) worker.ref();
      tasks.set(task.id, pending);
      worker.postMessage(task);
    }
  }

  private freeWorker(): Worker | undefined {
    let best: Worker | undefined;
    for (const w of this.workers) {
      const n = this.inFlight.get(w)!.size;
      if (n < PER_WORKER && (!best || n < this.inFlight.get(best)!.size)) best = w;
    }
    if (best && this.inFlight.get(best)!.size === 0) return best;
    if (this.workers.length < this.size) return this.spawn();
    return best;
  }

  private spawn(): Worker {
    const worker = workerThread();
    worker.unref();
    this.workers.push(worker);
    this.inFlight.set(worker, new Map());
    worker.on('message', (reply: PoolReply) => {
      const tasks = this.inFlight.get(worker);
      const pending = tasks?.get(reply.id);
      if (!tasks || !pending) return;
      tasks.delete(reply.id);
      if (tasks.size === 0) worker.unref();
      const { id: _id, ...result } = reply;
      pending.resolve(result);
      this.dispatch();
    });
    worker.on('error', (e) => this.fail(new DataError(`image loader worker failed: ${e.message}`, { cause: e })));
    worker.on('exit', (code) => {
      if (!this.closed) this.fail(new DataError(`image loader worker exited unexpectedly (code ${code})`));
    });
    return worker;
  }

  private fail(error: Error): void {
    if (this.failure || this.closed) return;
    this.failure = error;
    this.closed = true;
    this.failAll(error);
    for (const w of this.workers) void w.terminate();
    this.workers.length = 0;
  }

  private failAll(error: Error): void {
    for (const { pending } of this.queue.splice(0)) pending.reject(error);
    for (const tasks of this.inFlight.values()) {
      for (const pending of tasks.values()) pending.reject(error);
      tasks.clear();
    }
  }
}

interface Pending {
  resolve(result: PoolResult): void;
  reject(error: Error): void;
}

/** Compiled sources (dist/) start image-worker.js directly; TypeScript sources through a tsx bootstrap. */
function workerThread(): Worker {
  const fromSources = import.meta.url.endsWith('.ts');
  return new Worker(new URL(fromSources ? './image-worker-entry.mjs' : './image-worker.js', import.meta.url));
}
