// Where a benchmark suite's results go: bench/results/<suite>-<ISO date>.json (git-ignored) with
// the machine's description, and the committed bench/results/<suite>-latest.md.
import fs from 'node:fs';
import os from 'node:os';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { writeTextAtomic } from '../src/node/atomic-write.ts';

/** The adapter and CPUs the run had, and the load average at its start and now. */
export function machineRecord(gpu: GpuContext, loadAtStart: number[]): Record<string, unknown> {
  return {
    adapter: `${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.description || gpu.info.device}`,
    adapterInfo: gpu.info,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    loadavg: { start: loadAtStart, end: os.loadavg() },
  };
}

/** Writes the JSON record and, when `md` is given, the latest-run markdown. */
export function writeResults(
  suite: string,
  startedAt: Date,
  record: Record<string, unknown>,
  md: string | undefined,
): void {
  fs.mkdirSync('bench/results', { recursive: true });
  const file = `bench/results/${suite}-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`;
  writeTextAtomic(file, JSON.stringify(record, null, 2));
  console.log(`wrote ${file}`);
  if (md === undefined) return;
  writeTextAtomic(`bench/results/${suite}-latest.md`, md);
  console.log(`wrote bench/results/${suite}-latest.md`);
}
