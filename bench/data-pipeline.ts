// Decode + preprocess throughput: Debian darknet's JPEGs through the image loader at a given
// input size (torchvision preprocessing), sharp (libjpeg-turbo) against jpeg-js, on the main
// thread and in worker pools. measureDataPipeline() returns rows; run this file for a table:
//   npx tsx bench/data-pipeline.ts [--size 224] [--images 56] [--workers 1,2] [--epochs 2] [--json]
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { evalTransform } from '../src/data/index.ts';
import { decodeImageFile, defaultWorkerCount, openImageFolder, type JpegDecoder } from '../src/data/node/index.ts';
import { preprocessPreset } from '../src/graph/model-metadata.ts';

export interface DataPipelineRow {
  readonly decoder: JpegDecoder;
  /** 0: decoded on the calling thread, one image at a time, no pool. */
  readonly workers: number;
  readonly size: number;
  readonly images: number;
  readonly seconds: number;
  readonly imagesPerSecond: number;
  /** imagesPerSecond divided by the threads that did the work. */
  readonly perThread: number;
  /** CPU time of the whole process (all threads) over the timed part. */
  readonly cpuSeconds: number;
  /** Images per CPU-second: the per-core rate, much less sensitive to other load than wall time. */
  readonly imagesPerCpuSecond: number;
}

export interface DataPipelineOptions {
  /** Network input size; preprocessing is torchvision's at that size (default 224). */
  readonly size?: number;
  /** Images per timed epoch, cycling through the photographs (default 56: darknet's 7 × 8). */
  readonly images?: number;
  /** Pool sizes to time (default 1 and one per core). */
  readonly workers?: readonly number[];
  /** Timed epochs per row, after one warm-up epoch that starts the workers (default 2). */
  readonly epochs?: number;
  readonly decoders?: readonly JpegDecoder[];
  readonly photos?: string;
}

const DARKNET = '/usr/share/darknet/data';

export async function measureDataPipeline(options: DataPipelineOptions = {}): Promise<DataPipelineRow[]> {
  const size = options.size ?? 224;
  const count = options.images ?? 56;
  const epochs = options.epochs ?? 2;
  const pools = options.workers ?? [...new Set([1, defaultWorkerCount()])];
  const decoders = options.decoders ?? ['sharp', 'jpeg-js'];
  const photoDir = options.photos ?? DARKNET;
  if (!existsSync(photoDir))
    throw new Error(`data-pipeline bench: ${photoDir} is missing; install it with sudo bash scripts/setup-system.sh`);
  const photos = readdirSync(photoDir)
    .filter((f) => /\.jpe?g$/i.test(f))
    .sort()
    .map((f) => join(photoDir, f));
  if (photos.length === 0) throw new Error(`data-pipeline bench: no JPEGs in ${photoDir}`);
  const spec = preprocessPreset('torchvision', size);
  const root = mkdtempSync(join(tmpdir(), 'graft-bench-data-'));
  try {
    mkdirSync(join(root, 'photos'));
    const files = Array.from({ length: count }, (_, i) => {
      const dst = join(root, 'photos', `${String(i).padStart(4, '0')}.jpg`);
      copyFileSync(photos[i % photos.length], dst);
      return dst;
    });
    const rows: DataPipelineRow[] = [];
    let cpuStart = process.cpuUsage();
    let start = 0;
    const begin = () => {
      cpuStart = process.cpuUsage();
      start = performance.now();
    };
    const row = (decoder: JpegDecoder, workers: number): DataPipelineRow => {
      const seconds = (performance.now() - start) / 1000;
      const cpu = process.cpuUsage(cpuStart);
      const cpuSeconds = (cpu.user + cpu.system) / 1e6;
      const images = count * epochs;
      const ips = images / seconds;
      return {
        decoder,
        workers,
        size,
        images,
        seconds,
        imagesPerSecond: ips,
        perThread: ips / Math.max(1, workers),
        cpuSeconds,
        imagesPerCpuSecond: images / cpuSeconds,
      };
    };
    for (const decoder of decoders) {
      // The calling thread alone: what one core does with no pool overhead.
      const transform = evalTransform(spec);
      await transform(await decodeImageFile(files[0], { jpeg: decoder }), () => 0);
      begin();
      for (let e = 0; e < epochs; e++)
        for (const f of files) transform(await decodeImageFile(f, { jpeg: decoder }), () => 0);
      rows.push(row(decoder, 0));
      for (const workers of pools) {
        const source = await openImageFolder(root, { preprocess: spec, workers, jpeg: decoder });
        try {
          for await (const _ of source.batches(0, { batchSize: 8 })) void _; // starts the workers
          begin();
          for (let e = 1; e <= epochs; e++)
            for await (const _ of source.batches(e, { batchSize: 8, shuffle: true })) void _;
          rows.push(row(decoder, workers));
        } finally {
          await source.close();
        }
      }
    }
    return rows;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

export function formatDataPipelineTable(rows: readonly DataPipelineRow[]): string {
  const lines = [
    '| decoder | threads | input | images | seconds | images/s | images/s per thread | images per CPU-second |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const threads = r.workers === 0 ? 'main thread' : `${r.workers} worker${r.workers > 1 ? 's' : ''}`;
    lines.push(
      `| ${r.decoder} | ${threads} | ${r.size} | ${r.images} | ${r.seconds.toFixed(2)} | ${r.imagesPerSecond.toFixed(1)} | ` +
        `${r.perThread.toFixed(1)} | ${r.imagesPerCpuSecond.toFixed(1)} |`,
    );
  }
  return lines.join('\n');
}

const HELP = `usage: npx tsx bench/data-pipeline.ts [--size N] [--images N] [--workers A,B] [--epochs N] [--json]
Times decoding + torchvision preprocessing of Debian darknet's JPEGs (sharp vs jpeg-js,
main thread and worker pools) and prints a table (or JSON rows with --json).`;

async function main(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(HELP);
    return;
  }
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${flag} needs a value`);
    return v;
  };
  const int = (flag: string): number | undefined => {
    const v = value(flag);
    if (v === undefined) return undefined;
    if (!/^[1-9]\d*$/.test(v)) throw new Error(`${flag} must be a positive integer, got '${v}'`);
    return Number(v);
  };
  const known = new Set(['--size', '--images', '--workers', '--epochs', '--json']);
  const unknown = argv.filter((a, i) => a.startsWith('--') && !known.has(a) && !known.has(argv[i - 1]));
  if (unknown.length) throw new Error(`unknown option ${unknown[0]}; see --help`);
  const workersText = value('--workers');
  const workers = workersText?.split(',').map((w) => {
    if (!/^[1-9]\d*$/.test(w))
      throw new Error(`--workers takes positive integers separated by commas, got '${workersText}'`);
    return Number(w);
  });
  const rows = await measureDataPipeline({
    size: int('--size'),
    images: int('--images'),
    epochs: int('--epochs'),
    workers,
  });
  console.log(argv.includes('--json') ? JSON.stringify(rows, null, 2) : formatDataPipelineTable(rows));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((e: Error) => {
    console.error(`data-pipeline bench: ${e.message}`);
    process.exit(1);
  });
}
