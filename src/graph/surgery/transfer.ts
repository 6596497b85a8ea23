// The four classic transfer-learning recipes as one call:
//   1. feature extraction: remove the top, add one dense `classes` layer, freeze the rest;
//   2. an earlier cut: keep the network up to a block boundary, add a new head, freeze the rest;
//   3. fine-tuning: replace only the last layer (rest of the top kept), everything trainable;
//   4. as 3, and with `reinitialize` every weight starts afresh (the architecture only).
import { ModelError } from '../errors.ts';
import type { Graph } from '../ir.ts';
import { LABELS_KEY } from '../model-metadata.ts';
import { initWeights, seedFor } from '../random.ts';
import { isFloatType, sizeOf, type TensorValue } from '../tensor.ts';
import {
  dataInputs,
  descendants,
  forgetShapes,
  keepUpTo,
  refresh,
  shapeOf,
  showShape,
  stateTensors,
} from './common.ts';
import { cutAt, defaultCutPoint } from './cut.ts';
import { makeBatchFlexible } from './batch.ts';
import { reinitLayers } from './freeze.ts';
import { graft } from './graft.ts';
import { findHead, headOf } from './head.ts';

export interface TransferOptions {
  case: 1 | 2 | 3 | 4;
  classes: number;
  /** Case 2: where to cut (a tensor or node name); default: a block boundary about half-way. */
  cutAt?: string;
  seed: number;
  /** Case 4: re-initialise every weight, keeping only the architecture. */
  reinitialize?: boolean;
  /** End the new head with Softmax; default: as the original head did (a zoo model's Softmax
   * stays, a torchvision export's logits stay logits). */
  softmax?: boolean;
  /** Cases 1 and 2: how the kept feature map becomes the new layer's input: global average
   * (default) or max pooling, or 'flatten', which keeps where things are (useful for an early
   * cut on small maps, where averaging keeps only which textures are present). */
  pooling?: 'avg' | 'max' | 'flatten';
}

export interface TransferSummary {
  case: 1 | 2 | 3 | 4;
  /** Where the new layers attach: the features (1), the cut (2), the replaced classifier's input (3, 4). */
  cutPoint: string;
  /** The graph's output after the rewrite. */
  output: string;
  /** Float parameters that train. */
  trainableParameters: number;
  /** Float parameters that do not (frozen weights, BatchNormalization statistics, constants). */
  frozenParameters: number;
  /** Names of the new (or replaced) weights. */
  newWeights: string[];
  warnings: string[];
}

/** Applies a transfer-learning case to a copy of `graph`; the input graph is not modified. */
export function transfer(graph: Graph, options: TransferOptions): { graph: Graph; summary: TransferSummary } {
  const file = graph.source;
  if (![1, 2, 3, 4].includes(options.case))
    throw new ModelError(`transfer case must be 1, 2, 3 or 4, got ${options.case}`, { file });
  if (!Number.isInteger(options.classes) || options.classes < 1)
    throw new ModelError(`transfer: classes must be a positive integer, got ${options.classes}`, { file });
  if (!Number.isInteger(options.seed))
    throw new ModelError(`transfer: seed must be an integer, got ${options.seed}`, { file });
  if (options.cutAt !== undefined && options.case !== 2)
    throw new ModelError(
      `transfer: cutAt applies to case 2 only (case ${options.case} ${options.case === 1 ? 'cuts at the features' : 'keeps the whole network'})`,
      { file },
    );
  if (options.reinitialize && options.case !== 4)
    throw new ModelError(`transfer: reinitialize applies to case 4 only`, { file });
  if (options.pooling !== undefined && options.case > 2)
    throw new ModelError(`transfer: pooling applies to cases 1 and 2 (cases 3 and 4 keep the network's own head)`, {
      file,
    });
  if (options.pooling !== undefined && !['avg', 'max', 'flatten'].includes(options.pooling))
    throw new ModelError(`transfer: pooling must be 'avg', 'max' or 'flatten', got '${String(options.pooling)}'`, {
      file,
    });

  const warnings: string[] = [];
  let g: Graph;
  let cutPoint: string;
  let newWeights: string[];
  if (options.case === 1 || options.case === 2) {
    const head = findHead(graph);
    let kept: Graph;
    if (options.case === 1) {
      if (head) {
        cutPoint = head.featureTensor;
        kept = keepUpTo(graph, cutPoint);
      } else {
        cutPoint = graph.outputs[0].name;
        kept = graph.clone();
        warnings.push(`no classifier head found; the new classifier is attached to the current output '${cutPoint}'`);
      }
    } else if (options.cutAt !== undefined) {
      const cut = cutAt(graph, options.cutAt);
      kept = cut.graph;
      cutPoint = cut.tensor;
      warnings.push(...cut.warnings);
    } else {
      const point = defaultCutPoint(graph);
      if (!point) throw new ModelError('transfer case 2: no block boundary to cut at was found; pass cutAt', { file });
      cutPoint = point.tensor;
      kept = keepUpTo(graph, cutPoint);
    }
    for (const init of kept.initializers.values()) init.trainable = false;
    const shape = shapeOf(kept, cutPoint);
    const grafted = graft(kept, {
      pooling: shape && shape.length > 2 ? (options.pooling ?? 'avg') : 'none',
      classes: options.classes,
      softmax: options.softmax ?? (head ? head.softmax !== undefined : true),
      seed: options.seed,
      name: 'transfer',
    });
    g = grafted.graph;
    warnings.push(...grafted.warnings);
    newWeights = [...g.initializers.keys()].filter((k) => !kept.initializers.has(k));
  } else {
    g = graph.clone();
    const replaced = replaceClassifier(g, options.classes, options.seed);
    cutPoint = replaced.input;
    newWeights = replaced.weights;
    const state = stateTensors(g);
    for (const init of g.initializers.values()) init.trainable = isFloatType(init.value.dtype) && !state.has(init.name);
    if (options.case === 4 && options.reinitialize) {
      const fresh = new Set(newWeights);
      reinitLayers(
        g,
        g.nodes.filter((n) => n.inputs.some((i) => g.initializers.has(i) && !fresh.has(i))),
        options.seed,
      );
    }
  }
  // The classifier is new: the source's class names no longer describe its outputs (the
  // preprocessing still describes the inputs, so it stays).
  g.metadataProps = g.metadataProps.filter((p) => p.key !== LABELS_KEY);
  makeBatchFlexible(g);
  refresh(g);
  return {
    graph: g,
    summary: {
      case: options.case,
      cutPoint,
      output: g.outputs[0].name,
      trainableParameters: g.parameterCount((i) => i.trainable),
      frozenParameters: g.parameterCount((i) => !i.trainable),
      newWeights,
      warnings,
    },
  };
}

/**
 * Resizes the final classifier (a Gemm, a MatMul with its bias Add, or SqueezeNet's 1×1 Conv)
 * to `classes` outputs with fresh weights (Glorot, zero bias) under the same names, as
 * torchvision's `model.fc = nn.Linear(…)` keeps `fc.weight`. In place.
 */
export function replaceClassifier(g: Graph, classes: number, seed: number): { input: string; weights: string[] } {
  const head = headOf(g);
  const node = head.classifier;
  const consumers = g.consumers();
  const file = g.source;
  const weightIndex = node.opType === 'MatMul' ? node.inputs.findIndex((i, k) => k > 0 && g.initializers.has(i)) : 1;
  const wName = node.inputs[weightIndex];
  const w = g.initializers.get(wName);
  if (!w || w.value.dims.length < 2)
    throw new ModelError(`the classifier's weight '${wName}' is not a constant of rank ≥ 2`, { file, node });
  let outAxis: number;
  if (node.opType === 'Gemm') {
    const transB = node.attributes.transB;
    outAxis = transB?.type === 'int' && transB.value === 1 ? 0 : 1;
  } else if (node.opType === 'MatMul') outAxis = w.value.dims.length - 1;
  else outAxis = 0; // Conv [out, in, 1, 1]
  const out = w.value.dims[outAxis];
  const weights: string[] = [];
  const replace = (name: string, reader: number, make: (dims: number[]) => TensorValue) => {
    const init = g.initializers.get(name)!;
    const shared = (consumers.get(name) ?? []).length > 1;
    const target = shared ? uniqueName(g, name) : name;
    g.setInitializer(target, make(init.value.dims), true);
    if (shared) readerOf(reader).inputs = readerOf(reader).inputs.map((i) => (i === name ? target : i));
    weights.push(target);
  };
  const bias = node.opType === 'MatMul' ? head.classifierBias : node;
  const readerOf = (k: number) => (k === 0 ? node : bias!);
  replace(wName, 0, (dims) => {
    const d = dims.map((v, i) => (i === outAxis ? classes : v));
    return {
      dtype: 'float32',
      dims: d,
      data: initWeights(
        node.opType === 'MatMul' ? [d[d.length - 1], d[d.length - 2]] : d,
        'glorot',
        seedFor(seed, wName),
      ),
    };
  });
  const biasName = node.opType === 'MatMul' ? bias?.inputs.find((i) => g.initializers.has(i)) : node.inputs[2];
  if (biasName && g.initializers.has(biasName)) {
    replace(biasName, 1, (dims) => {
      const d = dims.map((v) => (v === out ? classes : v));
      return { dtype: 'float32', dims: d, data: new Float32Array(sizeOf(d)) };
    });
  }
  // Everything downstream changes shape.
  const stale = new Set<string>();
  for (const o of node.outputs) for (const n of descendants(o, consumers)) for (const t of n.outputs) stale.add(t);
  for (const o of node.outputs) stale.add(o);
  forgetShapes(g, stale);
  refresh(g);
  const now = shapeOf(g, g.outputs[0].name);
  if (!now?.includes(classes))
    throw new ModelError(`replacing the classifier gave output ${showShape(now)}, expected ${classes} classes`, {
      file,
      node,
    });
  return { input: dataInputs(g, node)[0] ?? '', weights };
}

function uniqueName(g: Graph, base: string): string {
  let name = `${base}_new`;
  for (let i = 1; g.initializers.has(name) || g.values.has(name); i++) name = `${base}_new_${i}`;
  return name;
}
