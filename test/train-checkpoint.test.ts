// Checkpoints: the safetensors round trip (and Python reading ours, and ours reading Python's),
// the previous format still loading, the architecture fingerprint, every error a damaged, forged
// or foreign file must produce, and saves that survive SIGKILL at any moment.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
  CheckpointError,
  checkFingerprint,
  deserializeCheckpoint,
  graphWeights,
  loadSafetensorsWeights,
  restoreGraphWeights,
  serializeCheckpoint,
  type ArchitectureFingerprint,
  type Checkpoint,
} from '../src/train/checkpoint.ts';
import { resolveConfig } from '../src/train/optimizers.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';
import { canonicalHeader, forgeCheckpoint, readSafetensorsHeader, withHeader } from './helpers/safetensors.ts';

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
  // The fingerprint lists every weight a checkpoint holds (a load checks them against it).
  for (const name of ['odd', 'scalar', 'empty']) {
    const w = weights.get(name)!;
    graph.setInitializer(name, { dtype: 'float32', dims: w.dims, data: w.data });
  }
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

  it('lays out safetensors: u64 header size, JSON header padded to 8, contiguous F32 tensors, string metadata', () => {
    const ck = sampleCheckpoint();
    const bytes = serializeCheckpoint(ck);
    const { headerSize, header } = readSafetensorsHeader(bytes);
    expect((8 + headerSize) % 8).toBe(0);
    const buffer = bytes.subarray(8 + headerSize);
    const meta = header.__metadata__ as Record<string, string>;
    for (const value of Object.values(meta)) expect(typeof value).toBe('string');
    expect(meta['graft.format']).toBe('onnx-graft checkpoint');
    expect(meta['graft.version']).toBe('2');
    expect([meta['graft.step'], meta['graft.epoch']]).toEqual(['1234', '4']);
    expect(JSON.parse(meta['graft.fingerprint'])).toEqual(ck.fingerprint);
    expect(JSON.parse(meta['graft.rng'])).toEqual(ck.rng);
    // Weights under their initializer names, moments under optimizer.<slot>/<name>, shaped as the weight.
    const entries = Object.entries(header).filter(([k]) => k !== '__metadata__') as [
      string,
      { dtype: string; shape: number[]; data_offsets: [number, number] },
    ][];
    expect(entries.map(([k]) => k)).toContain('conv.weight');
    expect(header['optimizer.exp_avg/odd']).toMatchObject({ dtype: 'F32', shape: [7, 11, 13] });
    const sorted = entries.map(([, e]) => e.data_offsets).sort((x, y) => x[0] - y[0]);
    let end = 0;
    for (const [begin, stop] of sorted) {
      expect(begin).toBe(end);
      end = stop;
    }
    expect(end).toBe(buffer.length);
    const odd = header.odd as { data_offsets: [number, number] };
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    expect(view.getFloat32(odd.data_offsets[0] + 4 * 5, true)).toBe(ck.weights.get('odd')!.data[5]);
    // The checksum is zlib's CRC-32 over the canonical header (its own entry left out), then the buffer.
    const canonical = new TextEncoder().encode(canonicalHeader(header));
    expect(meta['graft.crc32']).toBe(zlibCrc32(buffer, zlibCrc32(canonical)).toString(16).padStart(8, '0'));
  });

  it('is read by Python (json + numpy.frombuffer) with the same tensors and metadata', () => {
    const ck = sampleCheckpoint();
    const path = join(folder, 'for-python.safetensors');
    writeFileSync(path, serializeCheckpoint(ck));
    const script = `
import json, struct, sys, numpy as np
raw = open(sys.argv[1], 'rb').read()
(n,) = struct.unpack('<Q', raw[:8])
header = json.loads(raw[8:8 + n])
buf = raw[8 + n:]
out = {}
for name, e in header.items():
    if name == '__metadata__':
        continue
    b, end = e['data_offsets']
    a = np.frombuffer(buf[b:end], dtype='<f4').reshape(e['shape'])
    out[name] = {'shape': list(a.shape), 'sum': float(a.astype(np.float64).sum()), 'first': [float(x) for x in a.ravel()[:3]]}
print(json.dumps({'tensors': out, 'metadata': header['__metadata__']}))
`;
    const r = spawnSync('/usr/bin/python3', ['-c', script, path], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const seen = JSON.parse(r.stdout) as {
      tensors: Record<string, { shape: number[]; sum: number; first: number[] }>;
      metadata: Record<string, string>;
    };
    const want = new Map<string, Float32Array>([...ck.weights].map(([n, w]) => [n, w.data]));
    for (const [n, slots] of ck.optimizer!.slots) {
      want.set(`optimizer.exp_avg/${n}`, slots.exp_avg!);
      want.set(`optimizer.exp_avg_sq/${n}`, slots.exp_avg_sq!);
    }
    expect(Object.keys(seen.tensors).sort()).toEqual([...want.keys()].sort());
    for (const [name, data] of want) {
      const got = seen.tensors[name];
      const base = name.includes('/') ? name.slice(name.indexOf('/') + 1) : name;
      expect(got.shape, name).toEqual(ck.weights.get(base)!.dims);
      expect(got.first, name).toEqual([...data.subarray(0, 3)]);
      expect(got.sum, name).toBeCloseTo(
        data.reduce((a, b) => a + b, 0),
        3,
      );
    }
    expect(seen.metadata['graft.step']).toBe('1234');
    expect(JSON.parse(seen.metadata['graft.extra'])).toEqual(ck.extra);
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
    expectSameCheckpoint(loadCheckpoint(path, ck.fingerprint), ck);
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
      `checkpoint ${path}: truncated: the header describes ${bytes.length} bytes, found ${bytes.length - 1000} (an interrupted copy or download?)`,
    );
    writeFileSync(path, bytes.subarray(0, 20));
    expect(errorOf(() => loadCheckpoint(path)).message).toMatch(
      /truncated: the header alone is \d+ bytes, found 12 after the size/,
    );
    writeFileSync(path, bytes.subarray(0, 5));
    expect(errorOf(() => loadCheckpoint(path)).message).toMatch(/truncated: found 5 bytes, the header size alone is 8/);
    writeFileSync(path, new Uint8Array(0));
    expect(errorOf(() => loadCheckpoint(path)).problem).toBe('truncated');
    const trailing = join(folder, 'trailing.ck');
    writeFileSync(trailing, Buffer.concat([bytes, Buffer.from('x')]));
    expect(errorOf(() => loadCheckpoint(trailing)).message).toMatch(/but there are \d+: trailing data/);
  });

  it('refuses a file that is not a checkpoint', () => {
    const path = join(folder, 'model.onnx');
    writeFileSync(
      path,
      Uint8Array.from([0x08, 0x07, 0x12, 0x07, 0x70, 0x79, 0x74, 0x6f, 0x72, 0x63, 0x68, 0, 0, 0, 0, 0]),
    );
    const e = errorOf(() => loadCheckpoint(path));
    expect(e.problem).toBe('not-a-checkpoint');
    expect(e.message).toMatch(new RegExp(`^checkpoint ${path}: not a safetensors file: .*looks like an ONNX model`));
    writeFileSync(path, 'GRAFTCK2 and more bytes than a header has');
    expect(errorOf(() => loadCheckpoint(path)).problem).toBe('not-a-checkpoint');
    // A prefix of the version-1 magic is the start of a version-1 checkpoint, cut short.
    writeFileSync(path, 'GRAFT');
    expect(errorOf(() => loadCheckpoint(path)).problem).toBe('truncated');
    // A safetensors file from another tool is weights, not a checkpoint: the message says how to use it.
    writeFileSync(path, withHeader({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)));
    const foreign = errorOf(() => loadCheckpoint(path));
    expect(foreign.problem).toBe('not-a-checkpoint');
    expect(foreign.message).toMatch(/without onnx-graft training state.*loadSafetensorsWeights/);
  });

  it('detects damage anywhere with the checksum', () => {
    const bytes = serializeCheckpoint(ck);
    const { headerSize } = readSafetensorsHeader(bytes);
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerSize));
    // Inside a tensor name, inside the step's digits, inside the fingerprint, in the data, at the end.
    const inHeader = [
      header.indexOf('conv.weight') + 2,
      header.indexOf('"graft.step":"') + 15,
      header.indexOf('fc.bias'),
    ];
    for (const at of [...inHeader.map((i) => 8 + i), 8 + headerSize + 100, bytes.length - 5]) {
      const damaged = bytes.slice();
      damaged[at] ^= 0x01;
      const path = join(folder, `damaged-${at}.ck`);
      writeFileSync(path, damaged);
      const e = errorOf(() => loadCheckpoint(path));
      expect(e.problem, `byte ${at}`).toBe('checksum');
      expect(e.message).toMatch(/checksum mismatch: stored CRC-32 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}/);
    }
    // Damage to the JSON's structure is caught before the checksum, as corrupt.
    const broken = bytes.slice();
    broken[8] = 0x5b; // '{' → '['
    expect(errorOf(() => deserializeCheckpoint(broken)).problem).toBe('not-a-checkpoint');
    broken[8] = 0x7b;
    broken[8 + header.indexOf(':')] = 0x3b;
    expect(errorOf(() => deserializeCheckpoint(broken)).message).toMatch(/the header is not valid UTF-8 JSON/);
  });

  it('refuses another format version and a missing file', () => {
    const bytes = forgeCheckpoint(serializeCheckpoint(ck), (h) => {
      (h.__metadata__ as Record<string, string>)['graft.version'] = '3';
    });
    expect(errorOf(() => deserializeCheckpoint(bytes, { source: 'x.ck' })).message).toMatch(
      /^checkpoint x.ck: format version 3; this onnx-graft reads versions 1 and 2 \(written by a newer onnx-graft\)/,
    );
    const missing = join(folder, 'nope.ck');
    expect(errorOf(() => loadCheckpoint(missing)).message).toBe(`checkpoint ${missing}: no such file`);
  });

  it('refuses forged metadata with a valid checksum, naming the value', () => {
    const bytes = serializeCheckpoint(ck);
    const forged = (edit: (meta: Record<string, string>, header: Record<string, unknown>) => void) =>
      errorOf(() =>
        deserializeCheckpoint(
          forgeCheckpoint(bytes, (h) => edit(h.__metadata__ as Record<string, string>, h)),
          { source: 'f.ck' },
        ),
      );
    const cases: [string, (meta: Record<string, string>, header: Record<string, unknown>) => void, RegExp][] = [
      ['negative step', (m) => (m['graft.step'] = '-5'), /step is "-5"; a non-negative safe integer is needed/],
      ['huge epoch', (m) => (m['graft.epoch'] = '1e300'), /epoch is "1e300"; a non-negative safe integer/],
      ['unsafe epoch', (m) => (m['graft.epoch'] = '9007199254740993'), /epoch is "9007199254740993"/],
      ['no fingerprint', (m) => delete m['graft.fingerprint'], /fingerprint is missing or malformed/],
      ['no version', (m) => delete m['graft.version'], /__metadata__ lacks graft.version/],
      [
        'no fingerprint parameters',
        (m) => (m['graft.fingerprint'] = JSON.stringify({ hash: ck.fingerprint.hash })),
        /fingerprint is missing or malformed/,
      ],
      [
        'bad fingerprint parameter',
        (m) => (m['graft.fingerprint'] = JSON.stringify({ hash: ck.fingerprint.hash, parameters: [null] })),
        /the fingerprint's parameter null is not \{name, dims/,
      ],
      ['fingerprint not JSON', (m) => (m['graft.fingerprint'] = '{'), /graft.fingerprint is not valid JSON/],
      [
        'null tensor entry',
        (_m, h) => (h['conv.weight'] = null),
        /tensor 'conv.weight': its entry is null, not an object/,
      ],
      [
        'optimizer type',
        (m) => (m['graft.optimizer'] = JSON.stringify({ type: 'lion', step: 1, config: {} })),
        /optimizer's type is "lion"; accepted sgd, adam, adamw/,
      ],
      [
        'optimizer step',
        (m) => (m['graft.optimizer'] = JSON.stringify({ ...JSON.parse(m['graft.optimizer']), step: -1 })),
        /optimizer's step is -1/,
      ],
      [
        'optimizer lr infinite',
        (m) => (m['graft.optimizer'] = editConfig(m, { lr: 'INF' }).replace('"INF"', '1e999')),
        /optimizer's config.lr is null; accepted: a finite number ≥ 0/,
      ],
      [
        'optimizer beta2 1',
        (m) => (m['graft.optimizer'] = editConfig(m, { beta2: 1 })),
        /optimizer's config.beta2 is 1; accepted: a number in \[0, 1\)/,
      ],
      [
        'optimizer eps a string',
        (m) => (m['graft.optimizer'] = editConfig(m, { eps: '1e-8' })),
        /optimizer's config.eps is "1e-8"; accepted: a finite number > 0/,
      ],
      [
        'optimizer config key missing',
        (m) => (m['graft.optimizer'] = editConfig(m, { clipNorm: undefined })),
        /optimizer's config.clipNorm is missing; accepted: null or a finite number > 0/,
      ],
      [
        'optimizer config key unknown',
        (m) => (m['graft.optimizer'] = editConfig(m, { amsgrad: true })),
        /optimizer's config has unknown key 'amsgrad'; accepted: type, lr, momentum/,
      ],
      [
        'nesterov without momentum',
        (m) => (m['graft.optimizer'] = editConfig(m, { type: 'sgd', nesterov: true }, 'sgd')),
        /nesterov without momentum; nesterov needs momentum > 0/,
      ],
      [
        'slots of another optimizer',
        (m) => (m['graft.optimizer'] = editConfig(m, { type: 'sgd', momentum: 0.9 }, 'sgd')),
        /optimizer state for 'conv.weight' has slots \[exp_avg, exp_avg_sq\]; sgd as configured keeps \[momentum_buffer\]/,
      ],
      [
        'slot shaped unlike its weight',
        (_m, h) => ((h['optimizer.exp_avg/odd'] as { shape: number[] }).shape = [11, 7, 13]),
        /optimizer exp_avg of 'odd' is \[11, 7, 13\], its weight \[7, 11, 13\]/,
      ],
      [
        'fingerprint shape unlike the tensor',
        (m) =>
          (m['graft.fingerprint'] = editFingerprint(m, (p) => (p.name === 'odd' ? { ...p, dims: [7, 11, 14] } : p))),
        /weight 'odd' is \[7, 11, 13\], its architecture fingerprint says \[7, 11, 14\]/,
      ],
      [
        'weight missing from the fingerprint',
        (m) => (m['graft.fingerprint'] = editFingerprint(m, (p) => (p.name === 'odd' ? undefined : p))),
        /weight 'odd' is not a parameter of the checkpoint's architecture fingerprint/,
      ],
      ['metadata not a string', (m) => ((m as Record<string, unknown>)['graft.step'] = 5), /only strings/],
      ['extra not an object', (m) => (m['graft.extra'] = '[1]'), /extra is \[1\], not an object/],
      [
        'unknown slot',
        (_m, h) => {
          h['optimizer.velocity/odd'] = h['optimizer.exp_avg/odd'];
          delete h['optimizer.exp_avg/odd'];
        },
        /tensor 'optimizer.velocity\/odd': optimizer tensors are named optimizer.<momentum_buffer\|exp_avg\|exp_avg_sq>\/<weight>/,
      ],
    ];
    for (const [what, edit, message] of cases) {
      const e = forged(edit);
      expect(e.problem, what).toBe('corrupt');
      expect(e.message, what).toMatch(/^checkpoint f.ck: /);
      expect(e.message, what).toMatch(message);
    }
  });

  it('refuses an optimizer that has stepped but whose moments are missing', () => {
    const stepped = { ...ck, optimizer: { ...ck.optimizer!, slots: new Map() } };
    const e = errorOf(() => deserializeCheckpoint(serializeCheckpoint(stepped), { source: 'f.ck' }));
    expect(e.problem).toBe('corrupt');
    expect(e.message).toBe(
      'checkpoint f.ck: the optimizer has taken 1234 steps but the checkpoint holds none of its exp_avg, exp_avg_sq tensors',
    );
    // Before its first step an optimizer keeps no moments yet: that loads.
    const fresh = { ...stepped, optimizer: { ...stepped.optimizer, step: 0 } };
    expect(deserializeCheckpoint(serializeCheckpoint(fresh)).optimizer!.step).toBe(0);
  });

  it('refuses overlapping, gapped, out-of-range and mis-sized tensors and a huge header before allocating', () => {
    const buffer = new Uint8Array(24);
    const bad = (header: Record<string, unknown>, buf = buffer) =>
      errorOf(() => loadSafetensorsWeights(withHeader(header, buf), tinyNet(), 'w.safetensors'));
    const f32 = (begin: number, end: number, shape = [(end - begin) / 4]) => ({
      dtype: 'F32',
      shape,
      data_offsets: [begin, end],
    });
    expect(bad({ a: f32(0, 16), b: f32(8, 24) }).message).toMatch(/tensor 'b': bytes \[8, 24\) overlap/);
    expect(bad({ a: f32(0, 8), b: f32(16, 24) }).message).toMatch(
      /tensor 'b': bytes \[8, 16\) before it belong to no tensor/,
    );
    expect(bad({ a: f32(0, 8), b: f32(8, 32) }).problem).toBe('truncated');
    expect(bad({ a: f32(0, 8) }).message).toMatch(/trailing data/);
    expect(bad({ a: f32(0, 24, [5]) }).message).toMatch(
      /tensor 'a': F32 \[5\] needs 20 bytes, data_offsets \[0, 24\] hold 24/,
    );
    expect(bad({ a: { dtype: 'F31', shape: [6], data_offsets: [0, 24] } }).message).toMatch(
      /dtype "F31"; accepted BOOL/,
    );
    expect(bad({ a: f32(0, 24, [-6]) }).message).toMatch(/shape \[-6\] is not a list of non-negative integers/);
    expect(bad({ a: { dtype: 'F32', shape: [6], data_offsets: [24, 0] } }).message).toMatch(/0 ≤ begin ≤ end/);
    expect(bad({ a: f32(0, 24), __metadata__: { n: 1 } }).message).toMatch(
      /__metadata__\['n'\] is 1; the format allows only strings/,
    );
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, 1n << 40n, true);
    const e = errorOf(() => loadSafetensorsWeights(huge, tinyNet(), 'huge.safetensors'));
    expect(e.message).toMatch(
      /^weights file huge.safetensors: not a safetensors file: .*header of 1099511627776 bytes \(at most 104857600/,
    );
  });

  it('still loads a checkpoint written by the previous format (GRAFTCK1), tensors and state intact', () => {
    // test/fixtures/checkpoint-v1.graftck was written by the version-1 writer (before the switch
    // to safetensors) from exactly these values: tinyNet's fingerprint, seeded random tensors.
    const bytes = new Uint8Array(readFileSync(resolve('test/fixtures/checkpoint-v1.graftck')));
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe('GRAFTCK1');
    const graph = tinyNet();
    const loaded = deserializeCheckpoint(bytes, { source: 'v1', expected: architectureFingerprint(graph) });
    const weights = new Map<string, { dims: number[]; data: Float32Array }>();
    const slots = new Map<string, { exp_avg: Float32Array; exp_avg_sq: Float32Array }>();
    let seed = 100;
    for (const init of graph.initializers.values()) {
      const n = init.value.data.length;
      weights.set(init.name, { dims: [...init.value.dims], data: randomFloat32Array(n, seed++) });
      slots.set(init.name, {
        exp_avg: randomFloat32Array(n, seed++),
        exp_avg_sq: randomFloat32Array(n, seed++).map(Math.abs),
      });
    }
    expectSameCheckpoint(loaded, {
      fingerprint: architectureFingerprint(graph),
      weights,
      optimizer: { type: 'adamw', step: 77, config: resolveConfig({ type: 'adamw', lr: 3e-4, clipNorm: 1 }), slots },
      step: 77,
      epoch: 3,
      rng: { seed: 42, draws: 1234 },
      schedule: { type: 'cosine', lr: 0.01, totalSteps: 500 },
      extra: { classes: ['cat', 'dog'], note: 'written by the GRAFTCK1 writer' },
    });
    // Its own checks still hold: damage is caught by its CRC trailer.
    const damaged = bytes.slice();
    damaged[100] ^= 0x04;
    expect(errorOf(() => deserializeCheckpoint(damaged)).problem).toBe('checksum');
    // Saved again, it is safetensors.
    const again = deserializeCheckpoint(serializeCheckpoint(loaded));
    expectSameCheckpoint(again, loaded);
  });

  it('loads weights from a safetensors file written by Python (other key order, padding, F16/BF16/F64)', () => {
    const graph = tinyNet();
    const path = join(folder, 'from-python.safetensors');
    // Written by hand from numpy, per the format: tensors in reverse order, F64 / F16 / BF16
    // alongside F32, metadata first in the JSON, the header padded with spaces to 8 bytes.
    const script = `
import json, struct, sys, numpy as np
rng = np.random.default_rng(7)
shapes = json.loads(sys.argv[2])
kinds = ['F64', 'F16', 'BF16', 'F32']
header = {'__metadata__': {'format': 'pt', 'source': 'numpy'}}
parts, offset, expected = [], 0, {}
for i, (name, shape) in enumerate(reversed(list(shapes.items()))):
    kind = kinds[i % 4]
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == 'F64':
        raw = x.astype('<f8').tobytes(); value = x
    elif kind == 'F16':
        h = x.astype('<f2'); raw = h.tobytes(); value = h.astype(np.float32)
    elif kind == 'BF16':
        bits = (x.view('<u4') >> 16).astype('<u2'); raw = bits.tobytes()
        value = (bits.astype('<u4') << 16).view('<f4')
    else:
        raw = x.astype('<f4').tobytes(); value = x
    header[name] = {'dtype': kind, 'shape': list(shape), 'data_offsets': [offset, offset + len(raw)]}
    parts.append(raw); offset += len(raw)
    expected[name] = [float(v) for v in value.ravel()]
text = json.dumps(header).encode()
text += b' ' * (-len(text) % 8)
open(sys.argv[1], 'wb').write(struct.pack('<Q', len(text)) + text + b''.join(parts))
print(json.dumps(expected))
`;
    const shapes = Object.fromEntries([...graph.initializers.values()].map((i) => [i.name, i.value.dims]));
    const r = spawnSync('/usr/bin/python3', ['-c', script, path, JSON.stringify(shapes)], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const expected = JSON.parse(r.stdout) as Record<string, number[]>;
    const weights = loadSafetensorsWeights(readBytes(path), graph, path);
    expect([...weights.keys()].sort()).toEqual(Object.keys(shapes).sort());
    for (const [name, values] of Object.entries(expected)) {
      expect(weights.get(name)!.dims, name).toEqual(shapes[name]);
      expect([...weights.get(name)!.data], name).toEqual(values);
    }
    expect(restoreGraphWeights(graph, weights)).toBe(Object.keys(shapes).length);
    expect([...graph.initializers.get('fc.weight')!.value.data]).toEqual(expected['fc.weight']);

    // The first mismatch is named: a shape, then a name the model lacks.
    const e = errorOf(() => loadSafetensorsWeights(readBytes(path), tinyNet({ classes: 3 }), path));
    expect(e.problem).toBe('architecture');
    expect(e.message).toMatch(/tensor 'fc\.(weight|bias)' is \[10(, 4)?\] in the file but \[3(, 4)?\] in the model/);
    const renamed = errorOf(() => loadSafetensorsWeights(readBytes(path), tinyNet({ fcName: 'head' }), path));
    expect(renamed.message).toMatch(/^weights file .*: tensor 'fc\.(weight|bias)' is not an initializer of the model/);
  });

  it('leaves either no file or a complete checkpoint when the saving process is killed', async () => {
    const floats = 6_000_000; // 24 MB: a save takes long enough to be caught in the middle
    const module = resolve('src/node/checkpoint-files.ts');
    const child = (path: string) => `
      import { saveCheckpoint } from ${JSON.stringify(module)};
      const n = ${floats};
      const data = new Float32Array(n);
      const fingerprint = { hash: '0123456789abcdef', parameters: [{ name: 'w', dims: [n] }] };
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

/** The optimizer metadata with `changes` merged into its config (undefined deletes a key). */
function editConfig(meta: Record<string, string>, changes: Record<string, unknown>, type?: string): string {
  const o = JSON.parse(meta['graft.optimizer']) as { type: string; config: Record<string, unknown> };
  const config = { ...o.config, ...changes };
  for (const k of Object.keys(changes)) if (changes[k] === undefined) delete config[k];
  return JSON.stringify({ ...o, type: type ?? o.type, config });
}

/** The fingerprint metadata with each parameter mapped (undefined drops it). */
function editFingerprint(
  meta: Record<string, string>,
  f: (p: { name: string; dims: number[] }) => { name: string; dims: number[] } | undefined,
): string {
  const fp = JSON.parse(meta['graft.fingerprint']) as ArchitectureFingerprint;
  return JSON.stringify({ ...fp, parameters: fp.parameters.map(f).filter((p) => p !== undefined) });
}
