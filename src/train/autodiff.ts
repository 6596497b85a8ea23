// Reverse-mode autodiff over a prepared Graph: which nodes need gradients (those a trainable
// parameter flows into), their training forward and backward steps from each op's gradient
// rule (src/ops/, through the registry), gradient accumulation where a value has several readers, and the
// gradient of every trainable parameter. Nodes no trainable parameter reaches (a frozen body)
// run forward only, through the inference lowering (BatchNormalization folded, activations
// fused). Pure: builds step specs, touches no GPU.
import { AttributeReader } from '../graph/attributes.ts';
import { ModelError } from '../graph/errors.ts';
import type { Graph, Node } from '../graph/ir.ts';
import { extractSubgraph } from '../graph/subgraph.ts';
import { isFloatType } from '../graph/tensor.ts';
import { gradientSumProgram } from '../kernels/backward/elementwise.ts';
import type { GemmProblem, GemmVariant } from '../kernels/gemm.ts';
import type { BatchReduction, RuleContext, RuleStep } from '../ops/op.ts';
import { gradientRule, whyNotDifferentiable } from '../ops/registry.ts';
import {
  lowerGraph,
  separateRepeatedBindings,
  type BindingRef,
  type Lowered,
  type LowerOptions,
  type StepSpec,
} from '../runtime/lower.ts';

export interface AutodiffOptions extends LowerOptions {
  /** GEMM variant for the training kernels (synchronous: no autotuning inside a rule). */
  variant: (problem: GemmProblem) => GemmVariant;
  /**
   * 'train' (default): the training forward and the backward. 'evaluate': the evaluation
   * forward only, over the same parameter buffers (BatchNormalization on its running
   * statistics, Dropout an identity); no gradients.
   */
  mode?: 'train' | 'evaluate';
  /** false: Dropout is an identity in training too (default true: it draws a mask). */
  dropout?: boolean;
}

/** A step whose params block holds a seed the plan rewrites before every training step. */
export interface ReseedSite {
  /** Index into steps. */
  step: number;
  /** Byte offset of the u32 seed in its params block. */
  offset: number;
  /** Byte offset of the u32 index of the step's element 0 in the whole batch. */
  firstOffset: number;
  /** Elements the step draws over, in this plan (all its images). */
  elements: number;
  /** Per node (its index in the graph): mixed with the step's seed. */
  salt: number;
}

export interface TrainableParameter {
  name: string;
  dims: number[];
  size: number;
  /** The value holding its gradient after the backward steps. */
  grad: string;
}

export interface GraphPartition {
  /** The value the loss reads: the graph's output, or the input of a final Softmax. */
  logits: string;
  /** Nodes the logits depend on, in order. */
  needed: Node[];
  /** Needed nodes no trainable parameter reaches: forward only. */
  frozen: Node[];
  /** Needed nodes with a trainable parameter upstream: forward and backward. */
  trainable: Node[];
  /** Trainable float initializers the logits depend on. */
  parameters: string[];
  /** Values that need a gradient (parameters and everything computed from them). */
  requiresGrad: Set<string>;
  /** Values computed by the frozen part that the trainable part reads (the features of a frozen body). */
  boundary: string[];
  /** Whether the trainable part reads a graph input directly (then features cannot be cached). */
  trainableReadsInput: boolean;
}

export interface TrainingLowered extends Lowered {
  /** steps[0, forwardSteps) are the forward; the rest the backward. */
  forwardSteps: number;
  /** The gradient of the logits: written by the loss kernel before the backward runs. */
  dlogits: string;
  parameters: TrainableParameter[];
  partition: GraphPartition;
  /** Initializers the training forward writes (BN running statistics): state, read back on export. */
  state: string[];
  /** Steps drawing random numbers (Dropout), reseeded per training step. */
  reseed: ReseedSite[];
  /** Steps that reduce over the images of the batch (BatchNormalization in training mode), in step order. */
  batchReductions: BatchReductionSite[];
}

/** A step whose result depends on every image of the batch (see RuleStep.batchReduction). */
export interface BatchReductionSite {
  /** Index into steps. */
  step: number;
  reduction: BatchReduction;
  node: Node;
}

/** The value a softmax cross-entropy trains on: a final Softmax's input, else the output. */
export function logitsOf(graph: Graph): string {
  if (graph.outputs.length !== 1) {
    throw new ModelError(
      `training needs a graph with one output (the logits or a Softmax over them); this one has ${graph.outputs.length}: ${graph.outputs.map((o) => `'${o.name}'`).join(', ')}`,
      { file: graph.source },
    );
  }
  const out = graph.outputs[0].name;
  const producer = graph.producers().get(out);
  return producer?.opType === 'Softmax' ? producer.inputs[0] : out;
}

/** Splits the needed nodes into the frozen forward-only part and the trainable part. */
export function partitionGraph(graph: Graph, logits = logitsOf(graph)): GraphPartition {
  const producers = graph.producers();
  const neededSet = new Set<Node>();
  const stack = [logits];
  const seen = new Set<string>();
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    const p = producers.get(v);
    if (!p || neededSet.has(p)) continue;
    neededSet.add(p);
    for (const i of p.inputs) if (i) stack.push(i);
  }
  const needed = graph.nodes.filter((n) => neededSet.has(n));
  const requiresGrad = new Set<string>();
  const parameters: string[] = [];
  for (const n of needed) {
    const fixed = gradientRule(n.opType)?.nonDifferentiable ?? [];
    for (const [k, i] of n.inputs.entries()) {
      if (fixed.includes(k)) continue;
      const init = graph.initializers.get(i);
      if (init?.trainable && isFloatType(init.value.dtype) && !requiresGrad.has(i)) {
        requiresGrad.add(i);
        parameters.push(i);
      }
    }
  }
  const frozen: Node[] = [];
  const trainable: Node[] = [];
  for (const n of needed) {
    if (n.inputs.some((i) => requiresGrad.has(i))) {
      trainable.push(n);
      for (const o of n.outputs) if (o) requiresGrad.add(o);
    } else {
      frozen.push(n);
    }
  }
  const frozenOutputs = new Set(frozen.flatMap((n) => n.outputs));
  const boundary = new Set<string>();
  const feeds = new Set(graph.feedInputs.map((i) => i.name));
  let trainableReadsInput = false;
  for (const n of trainable) {
    for (const i of n.inputs) {
      if (frozenOutputs.has(i)) boundary.add(i);
      if (feeds.has(i)) trainableReadsInput = true;
    }
  }
  if (frozenOutputs.has(logits)) boundary.add(logits);
  return { logits, needed, frozen, trainable, parameters, requiresGrad, boundary: [...boundary], trainableReadsInput };
}

/**
 * Forward, then backward steps for softmax cross-entropy on the logits. Refuses, before any GPU
 * work, a graph without trainable parameters and any node on the gradient path whose op has no
 * gradient rule (naming node and op).
 */
export async function differentiate(graph: Graph, options: AutodiffOptions): Promise<TrainingLowered> {
  const partition = partitionGraph(graph);
  const file = graph.source;
  const training = (options.mode ?? 'train') === 'train';
  if (partition.parameters.length === 0 && training) {
    throw new ModelError(
      `nothing to train: no trainable parameter reaches the logits '${partition.logits}' (every weight is frozen)`,
      { file },
    );
  }
  for (const n of partition.trainable) {
    if ((n.domain !== '' && n.domain !== 'ai.onnx') || !gradientRule(n.opType)) {
      throw new ModelError(
        `op ${n.opType} has no gradient rule (${whyNotDifferentiable(n.opType)}), and a trainable parameter reaches it; freeze everything up to its output or remove it (ops with rules: DIFFERENTIABLE_OPS)`,
        { file, node: n },
      );
    }
  }

  const steps: StepSpec[] = [];
  const aliases = new Map<string, string>();
  const temporaries = new Map<string, number[]>();
  let counter = 0;
  const unique = (label: string) => {
    let name = label;
    while (graph.values.has(name) || temporaries.has(name)) name = `${label}#${++counter}`;
    return name;
  };

  // Frozen part: the inference lowering, fused, over a sub-graph whose outputs are the boundary.
  if (partition.frozen.length) {
    const sub = extractSubgraph(graph, partition.frozen, { outputs: partition.boundary });
    const lowered = await lowerGraph(sub, options);
    steps.push(...lowered.steps);
    for (const [k, v] of lowered.aliases) aliases.set(k, v);
    for (const [k, v] of lowered.temporaries) temporaries.set(k, v);
  }

  const contextFor = (node: Node): RuleContext => ({
    graph,
    node,
    attrs: new AttributeReader(node, file),
    shape(name) {
      const s = temporaries.get(name) ?? graph.values.get(name)?.shape;
      if (!s || s.some((d) => typeof d !== 'number'))
        throw new ModelError(`value '${name}' has no static shape`, { file, node });
      return s as number[];
    },
    wants: (i) => partition.requiresGrad.has(node.inputs[i]),
    // Labels with '@' (a node output's saved values: im2col, BN batch statistics) keep their
    // exact name, so the node's backward finds them.
    temp(label, dims) {
      const name = label.includes('@') && !graph.values.has(label) && !temporaries.has(label) ? label : unique(label);
      temporaries.set(name, [...dims]);
      return name;
    },
    variant: options.variant,
    maxWorkgroupsPerDimension: options.maxWorkgroupsPerDimension,
    maxBindingBytes: options.maxBindingBytes,
    error: (message) => new ModelError(message, { file, node }),
    training,
    dropout: options.dropout ?? true,
    state(name) {
      if (!graph.initializers.has(name))
        throw new ModelError(`internal: state '${name}' is not an initializer`, { file, node });
      if (!state.includes(name)) state.push(name);
    },
  });
  const state: string[] = [];
  const reseed: ReseedSite[] = [];
  const batchReductions: BatchReductionSite[] = [];
  const push = (node: Node, ruleSteps: RuleStep[]) => {
    for (const s of ruleSteps) {
      // Inputs are declared read_write (arena-shareable): a step binding one value twice
      // (Div(x, x)'s dB) reads a copy, as the forward lowering does.
      const specs = separateRepeatedBindings(graph, [toSpec(node, s)], aliases, temporaries);
      if (s.reseed)
        reseed.push({
          step: steps.length + specs.length - 1,
          offset: s.reseed.offset,
          firstOffset: s.reseed.firstOffset,
          elements: s.reseed.elements,
          salt: graph.nodes.indexOf(node),
        });
      if (s.batchReduction)
        batchReductions.push({ step: steps.length + specs.length - 1, reduction: s.batchReduction, node });
      steps.push(...specs);
    }
  };
  const toSpec = (node: Node, s: RuleStep): StepSpec => {
    const refs = s.program.bindings
      .filter((b) => b.name !== 'params')
      .map((b): BindingRef => {
        const value = s.bind[b.name];
        if (value === undefined && !s.constants?.[b.name])
          throw new ModelError(`internal: the gradient rule binds nothing to '${b.name}' of ${s.program.label}`, {
            file,
            node,
          });
        const constant = s.constants?.[b.name];
        const ref: BindingRef = constant ? { constant } : (constantRef(graph, value!) ?? { value: value! });
        const view = s.views?.[b.name];
        return view ? { ...ref, view: { ...view } } : ref;
      });
    return { program: s.program, refs, node };
  };

  // Trainable part, forward: the rule's kernels, or the runtime's own for this node alone.
  const graphOutputs = new Set(graph.outputs.map((o) => o.name));
  const neededInputs = new Set(partition.needed.flatMap((m) => m.inputs));
  for (const node of partition.trainable) {
    const rule = gradientRule(node.opType)!;
    const own = rule.forward?.(contextFor(node));
    if (own) {
      push(node, own);
      continue;
    }
    // Only outputs something reads (a Dropout's unread mask output stays out: inference refuses it).
    const read = (o: string) => o === partition.logits || graphOutputs.has(o) || neededInputs.has(o);
    const single = extractSubgraph(graph, [node], { outputs: node.outputs.filter((o) => o && read(o)) });
    const lowered = await lowerGraph(single, options);
    steps.push(...lowered.steps);
    for (const [k, v] of lowered.aliases) aliases.set(k, v);
    for (const [k, v] of lowered.temporaries) temporaries.set(k, v);
  }
  const forwardSteps = steps.length;
  if (!training) {
    return {
      steps,
      aliases,
      temporaries,
      forwardSteps,
      dlogits: '',
      parameters: [],
      partition,
      state,
      reseed,
      batchReductions,
    };
  }

  // Backward, in reverse order: every reader of a value runs before its producer.
  const dlogits = unique(`grad ${partition.logits}`);
  temporaries.set(dlogits, contextFor(partition.trainable[0]).shape(partition.logits));
  const grads = new Map<string, string>([[partition.logits, dlogits]]);
  for (const node of [...partition.trainable].reverse()) {
    const dOutputs = node.outputs.map((o) => (o ? grads.get(o) : undefined));
    if (dOutputs.every((d) => d === undefined)) continue;
    const ctx = contextFor(node);
    const result = gradientRule(node.opType)!.backward(ctx, dOutputs);
    push(node, result.steps);
    node.inputs.forEach((input, i) => {
      const g = result.grads[i];
      if (!g || !partition.requiresGrad.has(input)) return;
      const previous = grads.get(input);
      if (!previous) {
        grads.set(input, g);
        return;
      }
      const dims = ctx.shape(input);
      const sum = ctx.temp(`grad ${input}`, dims);
      steps.push(
        toSpec(node, {
          program: gradientSumProgram(dims.reduce((a, b) => a * b, 1)),
          bind: { a: previous, b: g, y: sum },
        }),
      );
      grads.set(input, sum);
    });
  }

  const parameters: TrainableParameter[] = partition.parameters.map((name) => {
    const dims = [...graph.initializers.get(name)!.value.dims];
    const grad = grads.get(name);
    if (!grad) throw new ModelError(`internal: parameter '${name}' got no gradient`, { file });
    return { name, dims, size: dims.reduce((a, b) => a * b, 1), grad };
  });
  return { steps, aliases, temporaries, forwardSteps, dlogits, parameters, partition, state, reseed, batchReductions };
}

/** The key under which a parameter's buffer lives in the ConstantStore (the runtime's own key for raw initializers). */
export function parameterKey(name: string): string {
  return `const:${name}`;
}

function constantRef(graph: Graph, name: string): BindingRef | undefined {
  const init = graph.initializers.get(name);
  if (!init) return undefined;
  const t = init.value;
  const data = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number>);
  return { constant: { key: parameterKey(name), data } };
}
