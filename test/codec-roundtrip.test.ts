// Round trip of every model we can find through the codec:
//   a. decode → encode → decode gives an equal Graph, and encoding is stable (byte-identical the
//      second time);
//   b. onnxruntime-node runs the re-encoded bytes and produces bit-identical outputs to the
//      original file on the same inputs (test_data_set_0, or seeded random inputs for the light
//      model-zoo networks, which ship no test data).
// Models: models-onnx/light/*.onnx and libonnx-testdata's data/simple and data/node.
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeModel, encodeModel } from '../src/graph/codec.ts';
import type { Graph } from '../src/graph/ir.ts';
import type { DataType, TensorValue } from '../src/graph/tensor.ts';
import { describeGraphDifference } from './helpers/graph-equal.ts';
import { LIGHT_DIR } from './helpers/models.ts';
import { listCases, readBytes, readTestDataSets } from './helpers/onnx-testdata.ts';

/** Models the codec is expected to refuse, by id ('light/…', 'simple/…', 'node/…'), each with
 * the reason. A listed model that starts decoding fails the test (so the list stays honest);
 * any unlisted failure fails it too. Currently every model decodes. */
const EXPECTED_DECODE_FAILURES: Record<string, string> = {};

/** Models whose outputs onnxruntime does not reproduce between two sessions of the very same
 * bytes, so comparing original with re-encoded says nothing about the codec. */
const NONDETERMINISTIC: Record<string, string> = {};

interface ModelEntry {
  id: string;
  file: string;
  /** The conformance case folder (with test_data_set_N), absent for the light models. */
  caseDir?: string;
}

function collectModels(): { models: ModelEntry[]; problems: string[] } {
  const models: ModelEntry[] = [];
  const problems: string[] = [];
  if (fs.existsSync(LIGHT_DIR)) {
    for (const f of fs
      .readdirSync(LIGHT_DIR)
      .filter((f) => f.endsWith('.onnx'))
      .sort()) {
      models.push({ id: `light/${f.slice(0, -5)}`, file: path.join(LIGHT_DIR, f) });
    }
  } else {
    problems.push(`the light models are missing: expected ${LIGHT_DIR} (the embedded light models)`);
  }
  for (const suite of ['simple', 'node'] as const) {
    try {
      for (const c of listCases(suite)) models.push({ id: `${suite}/${c.name}`, file: c.modelPath, caseDir: c.dir });
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  return { models, problems };
}

const { models: MODELS, problems: PROBLEMS } = collectModels();

// ─── bookkeeping for the summary ────────────────────────────────────────────────────────────

const started = Date.now();
let decodedCount = 0;
const undecodable: string[] = [];
const compared: string[] = [];
const originalFails: string[] = [];
const notFed: string[] = [];
const excluded: string[] = [];

function errorText(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0].slice(0, 300);
}

function firstByteDifference(a: Uint8Array, b: Uint8Array): string | undefined {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++)
    if (a[i] !== b[i]) return `byte ${i} differs (${a[i]} vs ${b[i]}); lengths ${a.length} and ${b.length}`;
  return a.length === b.length ? undefined : `lengths differ: ${a.length} vs ${b.length}`;
}

function tryDecode(m: ModelEntry): { graph?: Graph; bytes: Uint8Array; error?: unknown } {
  const bytes = readBytes(m.file);
  try {
    return { graph: decodeModel(bytes, { file: m.file }), bytes };
  } catch (error) {
    return { bytes, error };
  }
}

// ─── onnxruntime plumbing ───────────────────────────────────────────────────────────────────

// One intra-op thread: deterministic reductions, and session creation (the dominant cost for
// ~1000 tiny graphs) is cheapest without a thread pool. Fatal-only logging keeps CI logs clean.
const SESSION_OPTIONS: ort.InferenceSession.SessionOptions = {
  executionProviders: ['cpu'],
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  logSeverityLevel: 4,
};

const ORT_TYPES: Partial<Record<DataType, ort.Tensor.Type>> = {
  float32: 'float32',
  float64: 'float64',
  float16: 'float16',
  int8: 'int8',
  int16: 'int16',
  int32: 'int32',
  int64: 'int64',
  uint8: 'uint8',
  uint16: 'uint16',
  uint32: 'uint32',
  uint64: 'uint64',
  bool: 'bool',
  string: 'string',
};
const utf8 = new TextDecoder();

/** An ort.Tensor for a TensorValue, or the reason it cannot be fed. */
function toOrtTensor(t: TensorValue): ort.Tensor | string {
  const type = ORT_TYPES[t.dtype];
  if (!type) return `onnxruntime-node has no tensor type for ${t.dtype}`;
  if (type === 'string')
    return new ort.Tensor(
      'string',
      (t.data as Uint8Array[]).map((b) => utf8.decode(b)),
      t.dims,
    );
  return new ort.Tensor(type, t.data as Exclude<TensorValue['data'], Uint8Array[]>, t.dims);
}

/** mulberry32: a small seeded generator, so inputs are the same on every run. */
function seededRandom(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

type Feeds = Record<string, ort.Tensor>;

/** The feeds for a model: test_data_set_0 for conformance cases, seeded random floats of the
 * declared shape for the light models. A string when the model cannot be fed. */
function buildFeeds(m: ModelEntry, g: Graph): Feeds | string {
  const feedInputs = g.feedInputs;
  const nonTensor = feedInputs.find((v) => v.otherType !== undefined);
  if (nonTensor)
    return `input '${nonTensor.name}' is not a tensor (sequence/map/optional inputs cannot be fed from onnxruntime-node)`;
  const feeds: Feeds = {};
  if (!m.caseDir) {
    const random = seededRandom(1234);
    for (const v of feedInputs) {
      if (v.dtype !== 'float32' || !v.shape) return `input '${v.name}' is not a float32 tensor of known rank`;
      const dims = v.shape.map((d) => (typeof d === 'number' ? d : 1));
      const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
      for (let i = 0; i < data.length; i++) data[i] = random() * 2 - 1;
      feeds[v.name] = new ort.Tensor('float32', data, dims);
    }
    return feeds;
  }
  const [set] = readTestDataSets(m.caseDir, { sets: 1, outputs: false });
  if (!set) return 'the case has no test_data_set_0';
  if (set.inputs.length > feedInputs.length)
    return `test_data_set_0 has ${set.inputs.length} inputs, the graph ${feedInputs.length}`;
  for (let i = 0; i < set.inputs.length; i++) {
    const t = toOrtTensor(set.inputs[i]);
    if (typeof t === 'string') return `input '${feedInputs[i].name}': ${t}`;
    feeds[feedInputs[i].name] = t;
  }
  return feeds;
}

async function runOnce(bytes: Uint8Array, feeds: Feeds): Promise<ort.InferenceSession.ReturnType> {
  const session = await ort.InferenceSession.create(bytes, SESSION_OPTIONS);
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

/** undefined when both runs produced the same outputs, bit for bit. */
function describeOutputDifference(
  a: ort.InferenceSession.ReturnType,
  b: ort.InferenceSession.ReturnType,
): string | undefined {
  const ka = Object.keys(a),
    kb = Object.keys(b);
  if (ka.join('\0') !== kb.join('\0')) return `output names [${ka}] vs [${kb}]`;
  for (const k of ka) {
    const x = a[k],
      y = b[k];
    if (x.type !== y.type) return `output '${k}': type ${x.type} vs ${y.type}`;
    if (x.dims.join(',') !== y.dims.join(',')) return `output '${k}': dims [${x.dims}] vs [${y.dims}]`;
    if (Array.isArray(x.data) || Array.isArray(y.data)) {
      const sx = x.data as string[],
        sy = y.data as string[];
      if (sx.length !== sy.length) return `output '${k}': ${sx.length} strings vs ${sy.length}`;
      for (let i = 0; i < sx.length; i++)
        if (sx[i] !== sy[i]) return `output '${k}'[${i}]: ${JSON.stringify(sx[i])} vs ${JSON.stringify(sy[i])}`;
      continue;
    }
    const vx = x.data as ArrayBufferView,
      vy = y.data as ArrayBufferView;
    const d = firstByteDifference(
      new Uint8Array(vx.buffer, vx.byteOffset, vx.byteLength),
      new Uint8Array(vy.buffer, vy.byteOffset, vy.byteLength),
    );
    if (d) return `output '${k}' (${x.type}, dims [${x.dims}]): ${d}`;
  }
  return undefined;
}

// ─── the tests ──────────────────────────────────────────────────────────────────────────────

describe('codec round trip over real models', () => {
  afterAll(() => {
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(
      `round-trip: ${decodedCount} models decoded, ${compared.length} compared with onnxruntime, ` +
        `${originalFails.length} not runnable in onnxruntime (original fails), ` +
        `names not decodable: [${undecodable.map((u) => u.split(':')[0]).join(', ')}]`,
    );
    console.log(`round-trip: not runnable in onnxruntime (original fails): [${originalFails.join(', ')}]`);
    if (notFed.length)
      console.log(`round-trip: not run by onnxruntime (inputs cannot be fed):\n  ${notFed.join('\n  ')}`);
    if (excluded.length) console.log(`round-trip: excluded as nondeterministic: [${excluded.join(', ')}]`);
    if (undecodable.length) console.log(`round-trip: decode failures:\n  ${undecodable.join('\n  ')}`);
    console.log(`round-trip: ${MODELS.length} models, ${seconds} s`);
  });

  it('finds the models (light zoo and libonnx-testdata simple/node)', () => {
    expect(PROBLEMS, PROBLEMS.join('\n')).toEqual([]);
    expect(MODELS.length).toBeGreaterThan(900);
  });

  describe('decode → encode → decode is lossless and encoding is stable', () => {
    for (const m of MODELS) {
      it(m.id, () => {
        const { graph: g1, bytes, error } = tryDecode(m);
        const expected = EXPECTED_DECODE_FAILURES[m.id];
        if (!g1) {
          undecodable.push(`${m.id}: ${errorText(error)}`);
          console.log(`cannot decode ${m.id}: ${errorText(error)}`);
          if (expected) return;
          throw error;
        }
        if (expected)
          throw new Error(
            `${m.id} is listed in EXPECTED_DECODE_FAILURES (${expected}) but decodes now: remove it from the list`,
          );
        decodedCount++;
        expect(bytes.byteLength).toBeGreaterThan(0);

        const e1 = encodeModel(g1);
        const g2 = decodeModel(e1, { file: `${m.id} (re-encoded)` });
        expect(
          describeGraphDifference(g1, g2),
          `${m.id}: decode(encode(decode(x))) differs from decode(x)`,
        ).toBeUndefined();

        const e2 = encodeModel(g2);
        expect(
          firstByteDifference(e1, e2),
          `${m.id}: encode(decode(encode(decode(x)))) differs from encode(decode(x))`,
        ).toBeUndefined();
      });
    }
  });

  describe('onnxruntime gives identical outputs for the original and the re-encoded bytes', () => {
    for (const m of MODELS) {
      it(m.id, async (ctx) => {
        if (NONDETERMINISTIC[m.id]) {
          excluded.push(m.id);
          ctx.skip(NONDETERMINISTIC[m.id]);
        }
        const { graph, bytes } = tryDecode(m);
        if (!graph) ctx.skip('does not decode (reported by the round-trip test)');
        const feeds = buildFeeds(m, graph!);
        if (typeof feeds === 'string') {
          notFed.push(`${m.id}: ${feeds}`);
          ctx.skip(feeds);
        }
        let original: ort.InferenceSession.ReturnType;
        try {
          original = await runOnce(bytes, feeds as Feeds);
        } catch (e) {
          originalFails.push(m.id);
          ctx.skip(`onnxruntime cannot run the original: ${errorText(e)}`);
        }
        const reencoded = encodeModel(graph!);
        let after: ort.InferenceSession.ReturnType;
        try {
          after = await runOnce(reencoded, feeds as Feeds);
        } catch (e) {
          throw new Error(`${m.id}: onnxruntime runs the original but not the re-encoded model: ${errorText(e)}`);
        }
        const diff = describeOutputDifference(original!, after);
        if (diff) {
          // Tell a codec bug from an op that is random by itself.
          const again = describeOutputDifference(original!, await runOnce(bytes, feeds as Feeds));
          const hint = again
            ? ` (the original alone is not reproducible either: ${again}; list it in NONDETERMINISTIC)`
            : '';
          throw new Error(`${m.id}: outputs differ after the round trip: ${diff}${hint}`);
        }
        compared.push(m.id);
      });
    }
  });
});
