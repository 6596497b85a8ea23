// Activation memory of a compiled Plan against the ideal for its schedule. For light ResNet-50
// and GoogLeNet (Inception v1) at batch 8, the GPU bytes the plan holds for activations
// (Session.peakActivationBytes: the activation arenas and any whole buffers, graph inputs and
// outputs included) must lie
// between the ideal and 1.25× the ideal.
//
// The ideal is computed here from the graph alone, without the runtime's lowering or liveness:
//  1. The graph is prepared as the session prepares it (prepareGraph: folding, shape inference,
//     topological order); its node order is the order the plan runs its steps in.
//  2. Nodes that become no step: shape-only ops (Flatten, Reshape, Squeeze, Unsqueeze, Dropout,
//     Identity, one-input Sum) make their output an alias of their input, so a value and its
//     aliases are one tensor (its "root"). Fused nodes run inside their chain's first node: a
//     Conv absorbs a following BatchNormalization with constant statistics, then Conv, Gemm,
//     MatMul, Add, Sub, Mul, Div and Sum absorb a following Relu/LeakyRelu/Clip — each only where
//     the absorbed node is the sole consumer of the value, reads it as its first input, and the
//     value is no graph output. The values inside a chain never exist in memory.
//  3. Each remaining tensor lives from the step that produces it (graph inputs: before the first
//     step) to the last step that reads it or any of its aliases (graph outputs: to the end).
//     During a step its inputs and its output are live together.
//  4. The ideal is the largest sum of the sizes (float32) of the tensors live at one step: what
//     a perfect allocator with this schedule needs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Graph, Node } from '../src/graph/ir.ts';
import { loadModelFile } from '../src/node/files.ts';
import { prepareGraph } from '../src/graph/load.ts';
import { setBatchSize } from '../src/graph/surgery/batch.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session } from '../src/runtime/session.ts';
import { lightModelPath, type LightModel } from './helpers/reference-models.ts';

const BATCH = 8;
const SLACK = 1.25;
const MODELS: { name: LightModel; title: string; knownIssue?: string }[] = [
  { name: 'resnet50', title: 'ResNet-50' },
  { name: 'inception_v1', title: 'GoogLeNet' },
];

describe(`activation memory of the plan at batch ${BATCH} vs the ideal for its schedule`, () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  for (const { name, title, knownIssue } of MODELS) {
    it(`${title}: within ${SLACK}× of the largest live set${knownIssue ? ' (known issue, reported)' : ''}`, async () => {
      const graph = setBatchSize(loadModelFile(lightModelPath(name)), BATCH);
      const ideal = idealPeak(prepareGraph(graph.clone()));
      const session = await Session.create(graph, { gpu });
      try {
        const held = session.peakActivationBytes;
        const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
        console.log(
          `${title} batch ${BATCH}: plan holds ${mib(held)} of activation buffers; ideal ${mib(ideal.bytes)} ` +
            `(${ideal.live} tensors live at node '${ideal.at}'; ${ideal.tensors} tensors, ${ideal.steps} steps); ` +
            `ratio ${(held / ideal.bytes).toFixed(3)}; the plan's own live peak ${mib(session.peakLiveBytes)}`,
        );
        expect(held).toBeGreaterThanOrEqual(ideal.bytes);
        if (knownIssue) {
          console.log(`KNOWN ISSUE (reported): ${title}: ${knownIssue}`);
          expect(held, `${title} is now within ${SLACK}× of the ideal: remove its knownIssue entry`).toBeGreaterThan(
            SLACK * ideal.bytes,
          );
        } else {
          expect(held).toBeLessThanOrEqual(SLACK * ideal.bytes);
        }
      } finally {
        session.dispose();
      }
    });
  }
});

const ALIAS_OPS = new Set(['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze', 'Dropout', 'Identity']);
const ACTIVATIONS = new Set(['Relu', 'LeakyRelu', 'Clip']);
const ABSORB_ACTIVATION = new Set(['Conv', 'Gemm', 'MatMul', 'Add', 'Sub', 'Mul', 'Div', 'Sum']);

interface IdealPeak {
  bytes: number;
  /** The node whose step has the largest live set, and how many tensors are live there. */
  at: string;
  live: number;
  tensors: number;
  steps: number;
}

function idealPeak(graph: Graph): IdealPeak {
  const consumers = graph.consumers();
  const outputs = new Set(graph.outputs.map((o) => o.name));
  const isConstant = (v: string) => graph.initializers.has(v);
  const bytesOf = (v: string) => 4 * (graph.values.get(v)!.shape as number[]).reduce((a, b) => a * b, 1);
  /** The node that may absorb `v`'s producer: its sole consumer, reading v first and once. */
  const fusible = (v: string): Node | undefined => {
    const users = consumers.get(v) ?? [];
    if (outputs.has(v) || users.length !== 1) return undefined;
    const next = users[0];
    return next.inputs[0] === v && next.inputs.filter((i) => i === v).length === 1 ? next : undefined;
  };

  // Steps (node index → the chain's head) and aliases.
  const stepOf = new Map<Node, number>();
  const alias = new Map<string, string>();
  let steps = 0;
  graph.nodes.forEach((node, i) => {
    if (stepOf.has(node)) return; // absorbed into an earlier node's chain
    if (ALIAS_OPS.has(node.opType) || (node.opType === 'Sum' && node.inputs.length === 1)) {
      alias.set(node.outputs[0], node.inputs[0]);
      return;
    }
    steps++;
    stepOf.set(node, i);
    let tail = node;
    if (node.opType === 'Conv') {
      const bn = fusible(node.outputs[0]);
      if (
        bn?.opType === 'BatchNormalization' &&
        bn.inputs.slice(1).every(isConstant) &&
        bn.outputs.filter(Boolean).length === 1
      ) {
        stepOf.set(bn, i);
        tail = bn;
      }
    }
    if (ABSORB_ACTIVATION.has(node.opType)) {
      const act = fusible(tail.outputs[0]);
      if (act && ACTIVATIONS.has(act.opType) && act.inputs.slice(1).every((x) => !x || isConstant(x)))
        stepOf.set(act, i);
    }
  });
  const root = (v: string): string => (alias.has(v) ? root(alias.get(v)!) : v);

  // Lifetimes of the tensors that exist: produced by a step (not consumed inside its own chain).
  const born = new Map<string, number>();
  const dies = new Map<string, number>();
  for (const input of graph.feedInputs) born.set(input.name, -1);
  for (const node of graph.nodes) {
    const at = stepOf.get(node);
    if (at === undefined) continue;
    for (const o of node.outputs) {
      if (!o) continue;
      const next = consumers.get(o) ?? [];
      const internal = !outputs.has(o) && next.length > 0 && next.every((c) => stepOf.get(c) === at);
      if (!internal) born.set(o, at);
    }
    for (const i of node.inputs) {
      if (!i || isConstant(root(i))) continue;
      const r = root(i);
      if (born.has(r)) dies.set(r, Math.max(dies.get(r) ?? -1, at));
    }
  }
  const end = graph.nodes.length;
  for (const o of graph.outputs) if (born.has(root(o.name))) dies.set(root(o.name), end);

  let best: IdealPeak = { bytes: 0, at: '', live: 0, tensors: born.size, steps };
  const stepIndices = [-1, ...new Set(stepOf.values())];
  for (const i of stepIndices) {
    let bytes = 0;
    let live = 0;
    for (const [v, from] of born) {
      const to = Math.max(from, dies.get(v) ?? from);
      if (from <= i && i <= to) {
        bytes += bytesOf(v);
        live++;
      }
    }
    if (bytes > best.bytes)
      best = {
        ...best,
        bytes,
        live,
        at: i < 0 ? '(inputs)' : `${graph.nodes[i].name || graph.nodes[i].outputs[0]} (${graph.nodes[i].opType})`,
      };
  }
  return best;
}
