// What the fuzzer mutates: the light model-zoo files, the ONNX node tests whose models the
// engine loads (a fixed list, so a seed names the same mutant as the engine changes), and
// checkpoints in both formats; and how a seed picks its base and its mutations.
import fs from 'node:fs';
import path from 'node:path';
import { decodeModel } from '../../src/graph/codec.ts';
import { Graph } from '../../src/graph/ir.ts';
import { GraphBuilder } from '../../src/graph/builder.ts';
import {
  architectureFingerprint,
  graphWeights,
  serializeCheckpoint,
  type ArchitectureFingerprint,
} from '../../src/train/checkpoint.ts';
import { resolveConfig } from '../../src/train/optimizers.ts';
import { LIGHT_MODELS, lightModelPath } from '../helpers/models.ts';
import { readBytes, readTestDataSets, TESTDATA_ROOT } from '../helpers/onnx-testdata.ts';
import { mulberry32, randomFloat32Array } from '../helpers/random.ts';
import { mutateRaw, below, type Rng } from './mutate-bytes.ts';
import { mutateCheckpointStructure } from './mutate-checkpoint.ts';
import { mutateModelStructure } from './mutate-model.ts';
import NODE_CASES from './node-cases.json' with { type: 'json' };

export type Target = 'models' | 'checkpoints';

export interface Feed {
  dims: number[];
  data: Float32Array;
}

export interface ModelBase {
  name: string;
  bytes: Uint8Array;
  /** Feeds by the unmutated model's input names. */
  feeds: () => Record<string, Feed>;
  /** Large light models stop after prepareGraph unless the run asks for every stage. */
  heavy: boolean;
}

export interface CheckpointBase {
  name: string;
  bytes: Uint8Array;
  graph: Graph;
  expected: ArchitectureFingerprint;
}

export interface Mutant<B> {
  base: B;
  bytes: Uint8Array;
  /** Each mutation applied, in order. */
  steps: string[];
}

/** Light models whose weights (folded from ConstantOfShape) exceed this stop after prepare. */
const HEAVY_LIGHT = new Set(['bvlc_alexnet', 'vgg19', 'resnet50']);
const LIGHT_INPUT = [1, 3, 224, 224];

export function modelCorpus(): ModelBase[] {
  const light = LIGHT_MODELS.map((name, i) => {
    const bytes = readBytes(lightModelPath(name));
    const input = decodeModel(bytes).feedInputs[0].name;
    return {
      name: `light_${name}`,
      bytes,
      feeds: () => ({ [input]: { dims: LIGHT_INPUT, data: randomFloat32Array(3 * 224 * 224, 31 + i) } }),
      heavy: HEAVY_LIGHT.has(name),
    };
  });
  const node = (NODE_CASES as { name: string; inputs: string[] }[]).map((c) => {
    const dir = path.join(TESTDATA_ROOT, 'node', c.name);
    return {
      name: `node/${c.name}`,
      bytes: readBytes(path.join(dir, 'model.onnx')),
      feeds: () => {
        const [set] = readTestDataSets(dir, { sets: 1, outputs: false });
        return Object.fromEntries(
          c.inputs.map((name, k) => [
            name,
            { dims: [...set.inputs[k].dims], data: set.inputs[k].data as Float32Array },
          ]),
        );
      },
      heavy: false,
    };
  });
  return [...light, ...node];
}

export function checkpointCorpus(): CheckpointBase[] {
  const graph = smallNet();
  const expected = architectureFingerprint(graph);
  const weights = graphWeights(graph);
  const adam = {
    fingerprint: expected,
    weights,
    optimizer: {
      type: 'adam' as const,
      step: 40,
      config: resolveConfig({ type: 'adam', lr: 1e-3 }),
      slots: new Map(
        [...weights].map(([name, w], i) => [
          name,
          {
            exp_avg: randomFloat32Array(w.data.length, 70 + i),
            exp_avg_sq: randomFloat32Array(w.data.length, 90 + i).map(Math.abs),
          },
        ]),
      ),
    },
    step: 40,
    epoch: 2,
    rng: { seed: 5, draws: 400 },
    schedule: { type: 'step', lr: 0.1, stepSize: 10, gamma: 0.5 },
    extra: { classes: ['a', 'b', 'c'] },
  };
  const v1 = readBytes(
    path.resolve(path.dirname(new URL(import.meta.url).pathname), '../fixtures/checkpoint-v1.graftck'),
  );
  return [
    { name: 'v2-adam', bytes: serializeCheckpoint(adam), graph, expected },
    {
      name: 'v2-plain',
      bytes: serializeCheckpoint({ fingerprint: expected, weights, step: 0, epoch: 0 }),
      graph,
      expected,
    },
    // The GRAFTCK1 fixture's own architecture, taken from the file (its graph lives in a test).
    { name: 'v1-fixture', bytes: v1, graph: new Graph(), expected: { hash: '', parameters: [] } },
  ];
}

/** The mutant a seed names: its base and 1–3 mutations, structural or raw. */
export function mutantFor<B extends { bytes: Uint8Array }>(
  seed: number,
  corpus: readonly B[],
  structural: (bytes: Uint8Array, rng: Rng) => { bytes: Uint8Array; what: string } | undefined,
): Mutant<B> {
  const rng = mulberry32(seed * 2654435761 + 0x5eed);
  // The light models are few but large: one seed in four mutates one of them.
  const light = corpus.filter((b) => (b as { name?: string }).name?.startsWith('light_'));
  const pool = light.length > 0 && rng() < 0.25 ? light : corpus;
  const base = pool[below(rng, pool.length)];
  let bytes = base.bytes;
  const steps: string[] = [];
  const count = 1 + below(rng, 3);
  for (let k = 0; k < count; k++) {
    const m = (rng() < 0.6 ? structural(bytes, rng) : undefined) ?? mutateRaw(bytes, rng);
    bytes = m.bytes;
    steps.push(m.what);
  }
  return { base, bytes, steps };
}

export const modelMutant = (seed: number, corpus: readonly ModelBase[]) =>
  mutantFor(seed, corpus, mutateModelStructure);
export const checkpointMutant = (seed: number, corpus: readonly CheckpointBase[]) =>
  mutantFor(seed, corpus, mutateCheckpointStructure);

/**
 * The feeds a seed gives its model: the base's, and for one seed in eight NaN, Inf or -Inf
 * written over all of one input or over single elements (so diff mode checks their propagation).
 */
export function feedsFor(seed: number, base: ModelBase): { feeds: Record<string, Feed>; poison?: string } {
  const feeds = base.feeds();
  const rng = mulberry32(seed * 40503 + 0xfeed);
  const names = Object.keys(feeds);
  if (rng() >= 1 / 8 || names.length === 0) return { feeds };
  const name = names[below(rng, names.length)];
  const value = [NaN, Infinity, -Infinity][below(rng, 3)];
  const data = feeds[name].data.slice();
  const all = rng() < 0.5;
  if (all) data.fill(value);
  else for (let k = 0; k < 3 && data.length > 0; k++) data[below(rng, data.length)] = value;
  feeds[name] = { dims: feeds[name].dims, data };
  return { feeds, poison: `input ${name}: ${all ? 'every element' : 'three elements'} ${value}` };
}

/** Conv → Relu → GlobalAveragePool → Flatten → Gemm, seeded weights: the checkpoints' network. */
function smallNet(): Graph {
  const g = new Graph();
  const shape = [1, 2, 6, 6];
  g.inputs = [{ name: 'x', dtype: 'float32', shape }];
  g.values.set('x', { name: 'x', dtype: 'float32', shape });
  const b = new GraphBuilder(g, 11);
  const h = b.op('Conv', ['x', b.weight('c.weight', [3, 2, 3, 3], 'he'), b.weight('c.bias', [3], 'glorot')], {
    kernel_shape: [3, 3],
  });
  const flat = b.op('Flatten', [b.op('GlobalAveragePool', [b.op('Relu', [h])])], { axis: 1 });
  const y = b.op('Gemm', [flat, b.weight('head.weight', [3, 3], 'glorot'), b.weight('head.bias', [3], 'glorot')], {
    transB: 1,
  });
  g.outputs = [{ name: y, dtype: 'float32', shape: [1, 3] }];
  return g;
}

/** The node tests the engine loads unmutated, with float32 inputs only: written to node-cases.json. */
export function listLoadableNodeCases(
  load: (bytes: Uint8Array) => { inputs: { name: string; dtype?: string }[] },
): { name: string; inputs: string[] }[] {
  const root = path.join(TESTDATA_ROOT, 'node');
  const out: { name: string; inputs: string[] }[] = [];
  for (const name of fs.readdirSync(root).sort()) {
    const file = path.join(root, name, 'model.onnx');
    if (!fs.existsSync(file) || !fs.existsSync(path.join(root, name, 'test_data_set_0'))) continue;
    try {
      const { inputs } = load(readBytes(file));
      if (inputs.length === 0 || inputs.some((i) => i.dtype !== 'float32')) continue;
      out.push({ name, inputs: inputs.map((i) => i.name) });
    } catch {
      // not loadable unmutated: not a base for mutants
    }
  }
  return out;
}
