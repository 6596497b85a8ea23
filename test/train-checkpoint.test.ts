// Checkpoints: the binary format round trip, the architecture fingerprint, every error a damaged
// or foreign file must produce, and saves that survive SIGKILL at any moment.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import { setBatchSize } from '../src/graph/surgery/index.ts';
import { loadCheckpoint, saveCheckpoint } from '../src/node/checkpoint-files.ts';
import { readBytes } from '../src/node/files.ts';
import {
  architectureFingerprint,
  CHECKPOINT_MAGIC,
  CheckpointError,
  checkFingerprint,
  crc32,
  deserializeCheckpoint,
  graphWeights,
  restoreGraphWeights,
  serializeCheckpoint,
  type Checkpoint,
} from '../src/train/checkpoint.ts';
import { resolveConfig } from '../src/train/optimizers.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';

/** conv → BN → relu → global pool → flatten → fc: every kind of initializer a checkpoint carries. */
function tinyNet(options: { classes?: number; stride?: number; fcName?: string } = {}): Graph {
  const { classes = 10, stride = 1, fcName = 'fc' } = options;
  const g = new Graph();
  g.inputs = [{ name: 'image', dtype: 'float32', shape: [2, 3, 8, 8] }];
  g.values.set('image', { name: 'image', dtype: 'float32', shape: [2, 3, 8, 8] });
  const b = new GraphBuilder(g, 7);
  const w = b.weight('conv.weight', [4, 3, 3, 3], 'he');
  const bias = b.weight('conv.bias', [4], 'glorot');
  const conv = b.op('Conv', ['image', w, bias], {
    kernel_shape: [3, 3],
    pads: [1, 1, 1, 1],
    strides: [stride, stride],
  });
  const bn = b.op(
    'BatchNormalization',
    [
      conv,
      b.weight('bn.weight', [4], 'ones'),
      b.weight('bn.bias', [4], 'glorot'),
      b.weight('bn.running_mean', [4], 'glorot', false),
      b.weight('bn.running_var', [4], 'ones', false),
    ],
    { epsilon: { float: 1e-5 } },
  );
  const pooled = b.op('GlobalAveragePool', [b.op('Relu', [bn])]);
  const flat = b.op('Flatten', [pooled], { axis: 1 });
  const y = b.op(
    'Gemm',
    [flat, b.weight(`${fcName}.weight`, [classes, 4], 'glorot'), b.weight(`${fcName}.bias`, [classes], 'glorot')],
    { transB: 1 },
  );
  g.outputs = [{ name: y, dtype: 'float32', shape: [2, classes] }];
  return g;
}

function sampleCheckpoint(): Checkpoint {
  const graph = tinyNet();
  const weights = graphWeights(graph);
  weights.set('odd', { dims: [7, 11, 13], data: randomFloat32Array(7 * 11 * 13, 1) });
  weights.set('scalar', { dims: [], data: new Float32Array([Math.PI]) });
  weights.set('empty', { dims: [0, 3], data: new Float32Array(0) });
  const slots = new Map(
    [...weights].map(([name, w], i) => [
      name,
      {
        exp_avg: randomFloat32Array(w.data.length, 10 + i),
        exp_avg_sq: randomFloat32Array(w.data.length, 50 + i).map(Math.abs),
      },
    ]),
  );
  return {
    fingerprint: architectureFingerprint(graph),
    weights,
    optimizer: { type: 'adamw', step: 1234, config: resolveConfig({ type: 'adamw', lr: 3e-4, clipNorm: 1 }), slots },
    step: 1234,
    epoch: 4,
    rng: { seed: 42, draws: 987654321, name: 'mulberry32 ✓' },
    schedule: { type: 'cosine', lr: 0.01, totalSteps: 5000, warmup: { steps: 100 } },
    extra: { classes: ['cat', 'dog'], bestTop1: 0.875 },
  };
}

function expectSameCheckpoint(got: Checkpoint, want: Checkpoint): void {
  expect(got.fingerprint).toEqual(want.fingerprint);
  expect([got.step, got.epoch]).toEqual([want.step, want.epoch]);
  expect(got.rng).toEqual(want.rng);
  expect(got.schedule).toEqual(want.schedule);
  expect(got.extra).toEqual(want.extra);
  expect([...got.weights.keys()]).toEqual([...want.weights.keys()]);
  for (const [name, w] of want.weights) {
    const g = got.weights.get(name)!;
    expect(g.dims, name).toEqual(w.dims);
    expect(
      Buffer.from(g.data.buffer, g.data.byteOffset, g.data.byteLength).equals(
        Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength),
      ),
      name,
    ).toBe(true);
  }
  expect(got.optimizer?.type).toBe(want.optimizer?.type);
  expect(got.optimizer?.step).toBe(want.optimizer?.step);
  expect(got.optimizer?.config).toEqual(want.optimizer?.config);
  for (const [name, slots] of want.optimizer?.slots ?? []) {
    expect([...got.optimizer!.slots.get(name)!.exp_avg!]).toEqual([...slots.exp_avg!]);
    expect([...got.optimizer!.slots.get(name)!.exp_avg_sq!]).toEqual([...slots.exp_avg_sq!]);
  }
}

const folder = mkdtempSync(join(tmpdir(), 'graft-checkpoint-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

function errorOf(fn: () => unknown): CheckpointError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    return e as CheckpointError;
  }
  throw new Error('expected a CheckpointError, nothing was thrown');
}

describe('checkpoint format', () => {
  it('round-trips weights, optimizer state, step, epoch, rng and schedule', () => {
    const ck = sampleCheckpoint();
    const bytes = serializeCheckpoint(ck);
    const back = deserializeCheckpoint(bytes);
    expectSameCheckpoint(back, ck);
    for (const w of back.weights.values()) expect(w.data.byteOffset % 4).toBe(0);
    // Deterministic: the same checkpoint gives the same bytes.
    expect(Buffer.from(serializeCheckpoint(ck)).equals(Buffer.from(bytes))).toBe(true);
  });

  it('lays out the header, metadata, aligned tensors and a CRC-32 trailer as documented', () => {
    const ck = sampleCheckpoint();
    const bytes = serializeCheckpoint(ck);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe(CHECKPOINT_MAGIC);
    expect(view.getUint32(8, true)).toBe(1);
    expect(view.getUint32(12, true)).toBe(32);
    expect(Number(view.getBigUint64(16, true))).toBe(bytes.length);
    const jsonLength = view.getUint32(24, true);
    const meta = JSON.parse(new TextDecoder().decode(bytes.subarray(32, 32 + jsonLength)));
    for (const t of meta.tensors) expect(t.offset % 4).toBe(0);
    const odd = meta.tensors.find((t: { name: string; kind: string }) => t.name === 'odd' && t.kind === 'weight');
    expect(view.getFloat32(odd.offset + 4 * 5, true)).toBe(ck.weights.get('odd')!.data[5]);
    // The trailer is zlib's CRC-32 of everything before it.
    expect(view.getUint32(bytes.length - 4, true)).toBe(zlibCrc32(bytes.subarray(0, bytes.length - 4)));
  });

  it('computes CRC-32 as zlib does', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    const rng = mulberry32(5);
    for (const n of [0, 1, 7, 8, 9, 1000, 65_537]) {
      const data = Uint8Array.from({ length: n }, () => Math.floor(rng() * 256));
      expect(crc32(data), `${n} bytes`).toBe(zlibCrc32(data));
    }
  });

  it('restores weights into a graph, keeping trainable flags', () => {
    const ck = sampleCheckpoint();
    const graph = tinyNet();
    const fc = ck.weights.get('fc.weight')!;
    fc.data = fc.data.map((x) => x + 1);
    const mine = new Map([...ck.weights].filter(([n]) => graph.initializers.has(n)));
    expect(restoreGraphWeights(graph, mine)).toBe(mine.size);
    expect(graph.initializers.get('fc.weight')!.value.data).toBe(fc.data);
    expect(graph.initializers.get('bn.running_mean')!.trainable).toBe(false);
    expect(graph.initializers.get('conv.weight')!.trainable).toBe(true);
    expect(() => restoreGraphWeights(tinyNet({ classes: 3 }), mine)).toThrow(
      /weight 'fc.weight' is \[10, 4\] in the checkpoint but \[3, 4\] in the model/,
    );
    expect(() => restoreGraphWeights(graph, ck.weights)).toThrow(/has weight 'odd', which the model lacks/);
  });
});

describe('architecture fingerprint', () => {
  it('is stable across clones and batch sizes', () => {
    const g = tinyNet();
    const f = architectureFingerprint(g);
    expect(f.hash).toMatch(/^[0-9a-f]{16}$/);
    expect(architectureFingerprint(g.clone()).hash).toBe(f.hash);
    expect(architectureFingerprint(tinyNet()).hash).toBe(f.hash);
    expect(architectureFingerprint(setBatchSize(g, 32)).hash).toBe(f.hash);
    expect(f.parameters.find((p) => p.name === 'fc.weight')).toEqual({ name: 'fc.weight', dims: [10, 4] });
  });

  it('names the first differing parameter, or says the layers differ', () => {
    const base = architectureFingerprint(tinyNet());
    const wider = architectureFingerprint(tinyNet({ classes: 1000 }));
    expect(wider.hash).not.toBe(base.hash);
    expect(errorOf(() => checkFingerprint(base, wider)).message).toMatch(
      /different architecture: parameter 'fc.weight' is \[10, 4\] in the checkpoint but \[1000, 4\] in the model/,
    );

    const renamed = architectureFingerprint(tinyNet({ fcName: 'classifier' }));
    expect(errorOf(() => checkFingerprint(base, renamed)).message).toMatch(
      /the model's parameter 'classifier.weight' \[10, 4\] is not in the checkpoint/,
    );

    const strided = architectureFingerprint(tinyNet({ stride: 2 }));
    expect(strided.hash).not.toBe(base.hash);
    const e = errorOf(() => checkFingerprint(base, strided));
    expect(e.problem).toBe('architecture');
    expect(e.message).toMatch(/every parameter matches, but the layers differ/);

    const extra = tinyNet();
    new GraphBuilder(extra).weight('aux.weight', [2, 2], 'glorot');
    expect(errorOf(() => checkFingerprint(architectureFingerprint(extra), base)).message).toMatch(
      /the checkpoint has parameter 'aux.weight' \[2, 2\], which the model lacks/,
    );
  });
});

describe('checkpoint files', () => {
  const ck = sampleCheckpoint();

  it('saves atomically and loads back, checking the architecture when asked', () => {
    const path = join(folder, 'good.ck');
    const size = saveCheckpoint(path, ck);
    expect(readBytes(path).length).toBe(size);
    expectSameCheckpoint(loadCheckpoint(path), ck);
    expectSameCheckpoint(loadCheckpoint(path, architectureFingerprint(tinyNet())), ck);
    expect(readdirSync(folder).filter((f) => f.endsWith('.tmp'))).toEqual([]);

    const e = errorOf(() => loadCheckpoint(path, architectureFingerprint(tinyNet({ classes: 1000 }))));
    expect(e.problem).toBe('architecture');
    expect(e.message).toContain(path);
    expect(e.message).toMatch(/parameter 'fc.weight' is \[10, 4\] in the checkpoint but \[1000, 4\] in the model/);
  });

  it('reports a truncated file with the bytes expected and found', () => {
    const bytes = serializeCheckpoint(ck);
    const path = join(folder, 'truncated.ck');
    writeFileSync(path, bytes.subarray(0, bytes.length - 1000));
    const e = errorOf(() => loadCheckpoint(path));
    expect(e.problem).toBe('truncated');
    expect(e.message).toBe(
      `checkpoint ${path}: truncated: the header says ${bytes.length} bytes, found ${bytes.length - 1000} (an interrupted copy or download?)`,
    );

    writeFileSync(path, bytes.subarray(0, 20));
    expect(errorOf(() => loadCheckpoint(path)).message).toMatch(/truncated: found 20 bytes, the header alone is 32/);
    writeFileSync(path, new Uint8Array(0));
    expect(errorOf(() => loadCheckpoint(path)).problem).toBe('truncated');
  });

  it('refuses a file that is not a checkpoint', () => {
    const path = join(folder, 'model.onnx');
    writeFileSync(
      path,
      Uint8Array.from([0x08, 0x07, 0x12, 0x07, 0x70, 0x79, 0x74, 0x6f, 0x72, 0x63, 0x68, 0, 0, 0, 0, 0]),
    );
    const e = errorOf(() => loadCheckpoint(path));
    expect(e.problem).toBe('not-a-checkpoint');
    expect(e.message).toMatch(
      new RegExp(`^checkpoint ${path}: not an onnx-graft checkpoint .*looks like an ONNX model`),
    );
    writeFileSync(path, 'GRAFTCK2 and more bytes than a header has');
    expect(errorOf(() => loadCheckpoint(path)).problem).toBe('not-a-checkpoint');
    // A prefix of the magic is the start of a checkpoint, cut short.
    writeFileSync(path, 'GRAFT');
    expect(errorOf(() => loadCheckpoint(path)).problem).toBe('truncated');
  });

  it('detects damage anywhere with the checksum', () => {
    const bytes = serializeCheckpoint(ck);
    const view = new DataView(bytes.buffer);
    const jsonLength = view.getUint32(24, true);
    for (const at of [40, 32 + jsonLength + 100, bytes.length - 5]) {
      const damaged = bytes.slice();
      damaged[at] ^= 0x10;
      const path = join(folder, `damaged-${at}.ck`);
      writeFileSync(path, damaged);
      const e = errorOf(() => loadCheckpoint(path));
      expect(e.problem, `byte ${at}`).toBe('checksum');
      expect(e.message).toMatch(/checksum mismatch: stored CRC-32 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}/);
    }
  });

  it('refuses another format version and a missing file', () => {
    const bytes = serializeCheckpoint(ck);
    new DataView(bytes.buffer).setUint32(8, 2, true);
    expect(errorOf(() => deserializeCheckpoint(bytes, { source: 'x.ck' })).message).toMatch(
      /^checkpoint x.ck: format version 2; this onnx-graft reads version 1 \(written by a newer onnx-graft\)/,
    );
    const missing = join(folder, 'nope.ck');
    expect(errorOf(() => loadCheckpoint(missing)).message).toBe(`checkpoint ${missing}: no such file`);
  });

  it('leaves either no file or a complete checkpoint when the saving process is killed', async () => {
    const floats = 6_000_000; // 24 MB: a save takes long enough to be caught in the middle
    const module = resolve('src/node/checkpoint-files.ts');
    const child = (path: string) => `
      import { saveCheckpoint } from ${JSON.stringify(module)};
      const n = ${floats};
      const data = new Float32Array(n);
      const fingerprint = { hash: 'kill-test', parameters: [{ name: 'w', dims: [n] }] };
      process.stdout.write('ready\\n');
      for (let step = 1; ; step++) {
        data.fill(step);
        saveCheckpoint(${JSON.stringify(path)}, { fingerprint, weights: new Map([['w', { dims: [n], data }]]), step, epoch: 0 });
        process.stdout.write('saved ' + step + '\\n');
      }`;
    const rng = mulberry32(2024);
    const outcomes: string[] = [];
    for (let run = 0; run < 5; run++) {
      const path = join(folder, `killed-${run}.ck`);
      const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child(path)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let stderr = '';
      proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<NodeJS.Signals | null>((done) => proc.on('exit', (_code, signal) => done(signal)));
      await new Promise<void>((ready, fail) => {
        proc.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('ready\n')) ready();
        });
        proc.on('exit', () => fail(new Error(`child exited before it was ready: ${stderr}`)));
      });
      // Kill anywhere from before the first save completes to a few saves in.
      await new Promise((r) => setTimeout(r, rng() * 700));
      proc.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');
      const saved = [...out.matchAll(/saved (\d+)/g)].map((m) => Number(m[1]));
      // A temporary file left behind means the kill landed inside a write.
      const midWrite = readdirSync(folder).some((f) => f.startsWith(`.killed-${run}.ck.`) && f.endsWith('.tmp'));
      const lastReported = saved.length ? saved[saved.length - 1] : 0;
      if (!existsSync(path)) {
        expect(lastReported, 'a save was reported, yet no file').toBe(0);
        outcomes.push(`absent${midWrite ? ', killed mid-write' : ''}`);
        continue;
      }
      const loaded = loadCheckpoint(path);
      // The rename happens before "saved" is printed, so the file is that save or the one after.
      expect(loaded.step).toBeGreaterThanOrEqual(Math.max(1, lastReported));
      expect(loaded.step).toBeLessThanOrEqual(lastReported + 1);
      const data = loaded.weights.get('w')!.data;
      expect(data.length).toBe(floats);
      for (let i = 0; i < floats; i += 9973) expect(data[i]).toBe(loaded.step);
      expect(data[floats - 1]).toBe(loaded.step);
      outcomes.push(`step ${loaded.step} (last reported ${lastReported}${midWrite ? ', killed mid-write' : ''})`);
    }
    console.log(`kill test outcomes: ${outcomes.join('; ')}`);
  });
});
