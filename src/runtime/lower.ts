// Lowering: each node of a prepared Graph (or a fused chain of nodes) becomes kernel steps that
// read and write named values. Shape-only ops become aliases (no step, no copy); Conv absorbs a
// following BatchNormalization (folded into its weights) and activation; Gemm, MatMul and the
// elementwise ops absorb a following activation. Unsupported ops and attributes are refused
// here, at create time, with the node and op named.
// A step that would bind one tensor to two of its bindings reads a copy instead
// (separateRepeatedBindings): activation inputs are declared read_write, and WebGPU refuses two
// writable bindings of one range.
import { AttributeReader } from '../graph/attributes.ts';
import { ModelError } from '../graph/errors.ts';
import { windowGeometry } from '../graph/geometry.ts';
import type { Graph, Node } from '../graph/ir.ts';
import { toNumbers, type TensorValue } from '../graph/tensor.ts';
import { conv2dGemmProblem, conv2dPrograms, packConvWeights, type Conv2dParams } from '../kernels/conv.ts';
import {
  broadcastProgram,
  broadcastShape,
  MAX_BROADCAST_INPUTS,
  unaryProgram,
  type BroadcastOp,
  type UnaryOp,
} from '../kernels/elementwise.ts';
import { gemmPrograms, type GemmProblem, type GemmVariant } from '../kernels/gemm.ts';
import { columnChunk, gemmOpProblem, matmulProblem, packB } from '../kernels/linear.ts';
import { batchNormProgram, foldBatchNormIntoConv, lrnProgram } from '../kernels/normalization.ts';
import { globalPoolProgram, pool2dProgram } from '../kernels/pool.ts';
import { NO_ACTIVATION, type Activation, type KernelProgram } from '../kernels/program.ts';
import { concatCopyProgram, MAX_RANK, padProgram, softmaxProgram, transposeProgram } from '../kernels/transform.ts';

/** A host tensor uploaded once per session (weights, packed weights, folded biases). */
export interface ConstantTensor {
  /** Identifies the uploaded form: the same key is uploaded once and shared. */
  key: string;
  data: Float32Array;
}

/** A byte range of a value or constant, bound instead of the whole of it: how a step reaches a
 * block of a tensor larger than one storage binding (offset a multiple of the device's
 * minStorageBufferOffsetAlignment, bytes at most its maxStorageBufferBindingSize; the plan checks). */
export interface BindingView {
  offset: number;
  bytes: number;
}

export type BindingRef = ({ value: string } | { constant: ConstantTensor }) & { view?: BindingView };

export interface StepSpec {
  program: KernelProgram;
  /** One per program binding except 'params', in binding order. */
  refs: BindingRef[];
  /** The node the step came from (for error messages). */
  node: Node;
}

export interface LowerOptions {
  /** Chooses the GEMM variant for a problem (autotuner, heuristic or fixed). */
  chooseVariant: (problem: GemmProblem, kind: 'gemm' | 'conv') => Promise<GemmVariant>;
  /** The device's maxStorageBufferBindingSize: larger packed weights are split along N. */
  maxBindingBytes: number;
  /** The device's maxComputeWorkgroupsPerDimension: GEMMs with more row tiles are split. */
  maxWorkgroupsPerDimension?: number;
}

export interface Lowered {
  steps: StepSpec[];
  /** value → the value whose buffer it shares (Reshape, Flatten, Dropout, …). */
  aliases: Map<string, string>;
  /** Shapes of values the lowering introduced (partial sums), not in the graph. */
  temporaries: Map<string, number[]>;
}

/** Ops the runtime runs; anything else (after folding) is refused at create time. */
export const RUNTIME_OPS = [
  'Conv',
  'BatchNormalization',
  'Relu',
  'LeakyRelu',
  'Clip',
  'Sigmoid',
  'Tanh',
  'MaxPool',
  'AveragePool',
  'GlobalAveragePool',
  'GlobalMaxPool',
  'LRN',
  'Add',
  'Sub',
  'Mul',
  'Div',
  'Sum',
  'Concat',
  'Gemm',
  'MatMul',
  'Flatten',
  'Reshape',
  'Squeeze',
  'Unsqueeze',
  'Dropout',
  'Identity',
  'Transpose',
  'Pad',
  'Softmax',
] as const;

const ALIAS_OPS = new Set(['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze', 'Dropout', 'Identity']);
const ACTIVATION_OPS = ['Relu', 'LeakyRelu', 'Clip'];

/** Checks every node without a GPU: op supported, attributes accepted, dtypes float32. */
export function checkGraph(graph: Graph): void {
  const supported = new Set<string>(RUNTIME_OPS);
  for (const node of graph.nodes) {
    if (!supported.has(node.opType) || (node.domain !== '' && node.domain !== 'ai.onnx')) {
      throw new ModelError(
        `op ${node.opType}${node.domain ? ` (domain '${node.domain}')` : ''} is not supported by the runtime` +
          (['Shape', 'Gather', 'Constant', 'ConstantOfShape', 'Cast', 'Slice', 'Range'].includes(node.opType)
            ? ' unless it folds to a constant (its inputs must be constants)'
            : '') +
          `; runtime ops: ${RUNTIME_OPS.join(', ')}`,
        { file: graph.source, node },
      );
    }
    new NodeLowering(graph, node, undefined).check();
  }
}

export async function lowerGraph(graph: Graph, options: LowerOptions): Promise<Lowered> {
  const consumers = graph.consumers();
  const graphOutputs = new Set(graph.outputs.map((o) => o.name));
  const absorbed = new Set<Node>();
  const steps: StepSpec[] = [];
  const aliases = new Map<string, string>();
  const temporaries = new Map<string, number[]>();
  const fusion = { consumers, graphOutputs, absorbed, temporaries };
  for (const node of graph.nodes) {
    if (absorbed.has(node)) continue;
    const lowering = new NodeLowering(graph, node, options, fusion);
    lowering.check();
    if (ALIAS_OPS.has(node.opType) || (node.opType === 'Sum' && node.inputs.length === 1)) {
      const input = node.inputs[0];
      if (graph.initializers.has(input)) {
        // A constant reshaped into a graph output: copy it through a trivial kernel.
        steps.push(...lowering.copyConstant(input, node.outputs[0]));
      } else {
        aliases.set(node.outputs[0], input);
      }
      continue;
    }
    steps.push(...(await lowering.lower()));
  }
  return { steps: separateRepeatedBindings(graph, steps, aliases, temporaries), aliases, temporaries };
}

/**
 * A step that binds one tensor twice (Mul(x, x), Add(x, Reshape(x)), a constant twice) would
 * bind one buffer range to two writable bindings, which WebGPU refuses (activation inputs are
 * declared read_write so that they can share the arena with the output): the second binding of
 * a value reads a copy made by an identity kernel just before the node's steps, and a repeated
 * constant is uploaded again under its own key.
 */
export function separateRepeatedBindings(
  graph: Graph,
  steps: StepSpec[],
  aliases: Map<string, string>,
  temporaries: Map<string, number[]>,
): StepSpec[] {
  const root = (name: string): string => {
    let n = name;
    for (let guard = 0; aliases.has(n) && guard < 10000; guard++) n = aliases.get(n)!;
    return n;
  };
  const out: StepSpec[] = [];
  /** node + value + binding → the copy made for it (a node's steps share one copy). */
  const copies = new Map<string, string>();
  const nodeIds = new Map<Node, number>();
  steps.forEach((step) => {
    const access = step.program.bindings.filter((b) => b.name !== 'params');
    const seen = new Map<string, number>();
    let refs = step.refs;
    step.refs.forEach((ref, k) => {
      const id = 'value' in ref ? `value:${root(ref.value)}` : `constant:${ref.constant.key}`;
      const first = seen.get(id);
      if (first === undefined) {
        seen.set(id, k);
        return;
      }
      if (access[k].access !== 'read_write' && access[first].access !== 'read_write') return;
      if (refs === step.refs) refs = [...step.refs];
      if (!('value' in ref)) {
        refs[k] = { constant: { key: `${ref.constant.key}#binding${k}`, data: ref.constant.data } };
        return;
      }
      if (!nodeIds.has(step.node)) nodeIds.set(step.node, nodeIds.size);
      const v = root(ref.value);
      const cacheKey = `${nodeIds.get(step.node)}|${v}|${k}`;
      let copy = copies.get(cacheKey);
      if (!copy) {
        const dims = temporaries.get(v) ?? (graph.values.get(v)?.shape as number[] | undefined);
        if (!dims || dims.some((d) => typeof d !== 'number'))
          throw new ModelError(`value '${v}' has no static shape`, { file: graph.source, node: step.node });
        // Named after the node's output (unique in the graph), so separate lowerings of one graph
        // (training lowers node by node) never reuse a name.
        const base = `${v}#copy(${step.node.outputs[0] || step.node.name}:${k})`;
        copy = base;
        for (let n = 1; graph.values.has(copy) || temporaries.has(copy); n++) copy = `${base}#${n}`;
        copies.set(cacheKey, copy);
        temporaries.set(copy, [...dims]);
        const size = dims.reduce((a, b) => a * b, 1);
        out.push({
          program: unaryProgram({ kind: 'identity' }, size),
          refs: [{ value: v }, { value: copy }],
          node: step.node,
        });
      }
      refs[k] = { value: copy };
    });
    out.push(refs === step.refs ? step : { ...step, refs });
  });
  return out;
}

// ---- one node (and whatever it absorbs) ----

interface Fusion {
  consumers: Map<string, Node[]>;
  graphOutputs: Set<string>;
  absorbed: Set<Node>;
  temporaries: Map<string, number[]>;
}

class NodeLowering {
  readonly attrs: AttributeReader;
  readonly opset: number;

  constructor(
    readonly graph: Graph,
    readonly node: Node,
    readonly options: LowerOptions | undefined,
    readonly fusion?: Fusion,
  ) {
    this.attrs = new AttributeReader(node, graph.source);
    this.opset = graph.opset;
  }

  error(message: string): ModelError {
    return new ModelError(message, { file: this.graph.source, node: this.node });
  }

  /** Refuses what the lowering cannot run, before any GPU work. */
  check(): void {
    const n = this.node;
    for (const name of n.inputs) {
      if (!name) continue;
      const v = this.graph.values.get(name);
      // Integer inputs that only steer shapes (target shapes, axes, pads, training flags).
      const index = n.inputs.indexOf(name);
      const steering =
        (['Reshape', 'Squeeze', 'Unsqueeze', 'Dropout'].includes(n.opType) && index > 0) ||
        (n.opType === 'Pad' && (index === 1 || index === 3));
      if (steering) continue;
      if (v?.dtype && v.dtype !== 'float32') {
        throw this.error(
          `input '${name}' has dtype ${v.dtype}; the runtime computes in float32 only (accepted: float32)`,
        );
      }
    }
    // Static shapes are needed to lower, not to check: a symbolic batch is bound per plan.
    if (this.options) {
      for (const out of n.outputs) {
        if (!out) continue;
        const s = this.graph.values.get(out)?.shape;
        if (!s || s.some((d) => typeof d !== 'number')) {
          throw this.error(
            `output '${out}' has no static shape ([${s?.join(', ') ?? '?'}]); give inputShapes for symbolic dimensions`,
          );
        }
      }
    }
    switch (n.opType) {
      case 'Conv': {
        const w = this.shape(1);
        if (w.length !== 4 && w.length !== 3)
          throw this.error(`only 1-D and 2-D convolutions are supported; W has shape [${w}]`);
        if (!this.isConstant(n.inputs[1]))
          throw this.error(`weights '${n.inputs[1]}' must be an initializer (a constant)`);
        if (n.inputs[2] && !this.isConstant(n.inputs[2]))
          throw this.error(`bias '${n.inputs[2]}' must be an initializer (a constant)`);
        break;
      }
      case 'BatchNormalization':
        if (this.attrs.int('training_mode', 0) !== 0)
          throw this.error('training_mode=1 is not supported (inference only); accepted: 0');
        if (this.opset < 9 && this.attrs.int('spatial', 1) !== 1)
          throw this.error('spatial=0 is not supported; accepted: 1');
        this.unusedExtraOutputs('the running statistics outputs (training mode)');
        break;
      case 'MaxPool':
        this.unusedExtraOutputs('the Indices output');
        if (this.rank(0) > 4) throw this.error('only 1-D and 2-D pooling is supported');
        break;
      case 'AveragePool':
        if (this.rank(0) > 4) throw this.error('only 1-D and 2-D pooling is supported');
        break;
      case 'Dropout':
        if (this.opset >= 12 && n.inputs[2]) {
          const t = this.constantOf(n.inputs[2]);
          if (!t || toNumbers(t)[0] !== 0) throw this.error('training_mode must be a constant false (inference only)');
        }
        this.unusedExtraOutputs('the mask output');
        break;
      case 'Pad': {
        const mode = this.attrs.string('mode', 'constant');
        if (mode !== 'constant') throw this.error(`Pad mode '${mode}' is not supported; accepted: 'constant'`);
        if (this.rank(0) > MAX_RANK) throw this.error(`rank ${this.rank(0)} > ${MAX_RANK}`);
        break;
      }
      case 'Clip':
        if (this.opset >= 11) {
          for (const i of [1, 2])
            if (n.inputs[i] && !this.isConstant(n.inputs[i]))
              throw this.error(`Clip ${i === 1 ? 'min' : 'max'} must be a constant`);
        }
        break;
      case 'Transpose':
        if (this.rank(0) > MAX_RANK) throw this.error(`rank ${this.rank(0)} > ${MAX_RANK}`);
        break;
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div':
      case 'Sum':
        if ((this.graph.values.get(n.outputs[0])?.shape?.length ?? 0) > MAX_RANK)
          throw this.error(`rank > ${MAX_RANK}`);
        break;
      case 'LRN':
        this.attrs.int('size');
        break;
      case 'MatMul': {
        const [a, b] = [0, 1].map((i) => this.graph.values.get(n.inputs[i])?.shape);
        if (a?.every((d) => typeof d === 'number') && b?.every((d) => typeof d === 'number')) {
          try {
            matmulProblem(a as number[], b as number[]);
          } catch (e) {
            throw this.error((e as Error).message);
          }
        }
        break;
      }
    }
  }

  async lower(): Promise<StepSpec[]> {
    switch (this.node.opType) {
      case 'Conv':
        return this.conv();
      case 'BatchNormalization':
        return this.batchNorm();
      case 'Relu':
      case 'LeakyRelu':
      case 'Clip':
      case 'Sigmoid':
      case 'Tanh':
        return this.unary();
      case 'MaxPool':
      case 'AveragePool':
        return this.pool();
      case 'GlobalAveragePool':
      case 'GlobalMaxPool':
        return this.globalPool();
      case 'LRN':
        return this.lrn();
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div':
      case 'Sum':
        return this.elementwise();
      case 'Concat':
        return this.concat();
      case 'Gemm':
        return this.gemm();
      case 'MatMul':
        return this.matmul();
      case 'Transpose':
        return this.transpose();
      case 'Pad':
        return this.pad();
      case 'Softmax':
        return this.softmax();
    }
    throw this.error('op is not supported by the runtime');
  }

  /** A constant that feeds an alias straight into a graph output: copied by an identity kernel. */
  copyConstant(input: string, output: string): StepSpec[] {
    const data = this.floatConstant(input);
    return [
      this.step(unaryProgram({ kind: 'identity' }, data.length), [
        { constant: { key: `const:${input}`, data } },
        { value: output },
      ]),
    ];
  }

  // ---- ops ----

  private async conv(): Promise<StepSpec[]> {
    const n = this.node;
    const x = this.shape(0);
    const wDims = this.shape(1);
    const oneD = x.length === 3;
    const [N, C, H, W] = oneD ? [x[0], x[1], 1, x[2]] : x;
    const [CO, , KH, KW] = oneD ? [wDims[0], wDims[1], 1, wDims[2]] : wDims;
    const group = this.attrs.int('group', 1);
    const spatial = oneD ? [x[2]] : [H, W];
    const kernel = this.attrs.ints('kernel_shape', wDims.slice(2));
    const g = windowGeometry(this.attrs, spatial, kernel);
    const [strideH, strideW] = oneD ? [1, g.strides[0]] : g.strides;
    const [dilationH, dilationW] = oneD ? [1, g.dilations[0]] : g.dilations;
    const pads: [number, number, number, number] = oneD
      ? [0, g.pads[0], 0, g.pads[1]]
      : [g.pads[0], g.pads[1], g.pads[2], g.pads[3]];
    const [outH, outW] = oneD ? [1, g.output[0]] : g.output;

    let weights = this.floatConstant(n.inputs[1]);
    let bias = n.inputs[2] ? this.floatConstant(n.inputs[2]) : undefined;
    let keyParts = [n.inputs[1], n.inputs[2] ?? '-'];
    // Conv → BatchNormalization: fold the statistics into the weights and bias.
    let out = n.outputs[0];
    const bn = this.absorbNext(
      out,
      ['BatchNormalization'],
      (c) => c.inputs.slice(1).every((i) => this.isConstant(i)) && c.outputs.filter(Boolean).length === 1,
    );
    if (bn) {
      const bnAttrs = new AttributeReader(bn, this.graph.source);
      const folded = foldBatchNormIntoConv(weights, bias, CO, {
        scale: this.floatConstant(bn.inputs[1]),
        bias: this.floatConstant(bn.inputs[2]),
        mean: this.floatConstant(bn.inputs[3]),
        variance: this.floatConstant(bn.inputs[4]),
        epsilon: bnAttrs.float('epsilon', 1e-5),
      });
      weights = folded.weights;
      bias = folded.bias;
      keyParts = [...keyParts, `bn:${bn.name || bn.outputs[0]}`];
      out = bn.outputs[0];
    }
    const { activation, output } = this.absorbActivation(out);
    const p: Conv2dParams = {
      images: N,
      inChannels: C,
      height: H,
      width: W,
      outChannels: CO,
      group,
      kernelH: KH,
      kernelW: KW,
      strideH,
      strideW,
      pads,
      dilationH,
      dilationW,
      outH,
      outW,
      hasBias: bias !== undefined,
      activation,
    };
    const problem = conv2dGemmProblem(p);
    const variant = await this.options!.chooseVariant(problem, problem.a.kind === 'im2col' ? 'conv' : 'gemm');
    const packed = packConvWeights(weights, p);
    this.checkBinding(packed.length * 4, `packed weights of '${n.inputs[1]}'`);
    this.checkBinding(N * C * H * W * 4, `input '${n.inputs[0]}'`);
    this.checkBinding(N * CO * outH * outW * 4, `output '${output}'`);
    const refs: BindingRef[] = [
      { value: n.inputs[0] },
      { constant: { key: `conv:${keyParts.join('|')}`, data: packed } },
      { value: output },
    ];
    if (bias) refs.push({ constant: { key: `convbias:${keyParts.join('|')}`, data: bias } });
    return conv2dPrograms(p, variant, this.options!.maxWorkgroupsPerDimension).map((program) =>
      this.step(program, refs),
    );
  }

  private batchNorm(): StepSpec[] {
    const x = this.shape(0);
    const images = x[0];
    const channels = x.length > 1 ? x[1] : 1;
    const spatial = x.slice(2).reduce((a, b) => a * b, 1);
    const refs = [0, 1, 2, 3, 4].map((i) => this.ref(this.node.inputs[i]));
    refs.push({ value: this.node.outputs[0] });
    return [this.step(batchNormProgram(images, channels, spatial, this.attrs.float('epsilon', 1e-5)), refs)];
  }

  private unary(): StepSpec[] {
    const op = this.unaryOp(this.node);
    const size = this.size(this.shape(0));
    return [this.step(unaryProgram(op, size), [this.ref(this.node.inputs[0]), { value: this.node.outputs[0] }])];
  }

  private pool(): StepSpec[] {
    const x = this.shape(0);
    const oneD = x.length === 3;
    const spatial = x.slice(2);
    const kernel = this.attrs.ints('kernel_shape');
    const g = windowGeometry(this.attrs, spatial, kernel, this.attrs.int('ceil_mode', 0) === 1);
    const at = (v: number[], i2: number, fill: number) => (oneD ? [fill, v[0]] : [v[0], v[1]])[i2];
    const program = pool2dProgram({
      kind: this.node.opType === 'MaxPool' ? 'max' : 'avg',
      planes: x[0] * x[1],
      height: oneD ? 1 : x[2],
      width: oneD ? x[2] : x[3],
      outH: at(g.output, 0, 1),
      outW: at(g.output, 1, 1),
      kernelH: at(kernel, 0, 1),
      kernelW: at(kernel, 1, 1),
      strideH: at(g.strides, 0, 1),
      strideW: at(g.strides, 1, 1),
      pads: oneD ? [0, g.pads[0], 0, g.pads[1]] : [g.pads[0], g.pads[1], g.pads[2], g.pads[3]],
      dilationH: at(g.dilations, 0, 1),
      dilationW: at(g.dilations, 1, 1),
      countIncludePad: this.attrs.int('count_include_pad', 0) === 1,
    });
    return [this.step(program, [this.ref(this.node.inputs[0]), { value: this.node.outputs[0] }])];
  }

  private globalPool(): StepSpec[] {
    const x = this.shape(0);
    const planes = x[0] * x[1];
    const spatial = this.size(x.slice(2));
    const kind = this.node.opType === 'GlobalMaxPool' ? 'max' : 'avg';
    return [
      this.step(globalPoolProgram(kind, planes, spatial), [
        this.ref(this.node.inputs[0]),
        { value: this.node.outputs[0] },
      ]),
    ];
  }

  private lrn(): StepSpec[] {
    const x = this.shape(0);
    const program = lrnProgram({
      images: x[0],
      channels: x[1],
      spatial: this.size(x.slice(2)),
      size: this.attrs.int('size'),
      alpha: this.attrs.float('alpha', 1e-4),
      beta: this.attrs.float('beta', 0.75),
      bias: this.attrs.float('bias', 1),
    });
    return [this.step(program, [this.ref(this.node.inputs[0]), { value: this.node.outputs[0] }])];
  }

  private elementwise(): StepSpec[] {
    const n = this.node;
    const op: BroadcastOp = ({ Add: 'add', Sub: 'sub', Mul: 'mul', Div: 'div', Sum: 'add' } as const)[
      n.opType as 'Add'
    ]!;
    const { activation, output } = this.absorbActivation(n.outputs[0]);
    const outDims = this.outputShape();
    const inputs = n.inputs.filter(Boolean);
    const steps: StepSpec[] = [];
    // Sum over more inputs than a kernel binds: partial sums into the output, then onward.
    let pending = inputs;
    let partial = 0;
    while (pending.length > MAX_BROADCAST_INPUTS) {
      const take = pending.slice(0, MAX_BROADCAST_INPUTS);
      const dims = take.map((i) => this.shape(i));
      const tmp = `${output}#partial${partial++}`;
      this.fusion!.temporaries.set(tmp, broadcastShape(dims));
      steps.push(
        this.step(broadcastProgram('add', dims, broadcastShape(dims)), [
          ...take.map((i) => this.ref(i)),
          { value: tmp },
        ]),
      );
      pending = [tmp, ...pending.slice(MAX_BROADCAST_INPUTS)];
    }
    const dims = pending.map((i) => this.shape(i));
    steps.push(
      this.step(broadcastProgram(op, dims, outDims, activation), [
        ...pending.map((i) => this.ref(i)),
        { value: output },
      ]),
    );
    return steps;
  }

  private concat(): StepSpec[] {
    const n = this.node;
    const out = this.outputShape();
    const axis = this.normalizeAxis(this.attrs.int('axis', this.opset < 4 ? 1 : undefined), out.length);
    const outer = this.size(out.slice(0, axis));
    const outInner = this.size(out.slice(axis));
    const steps: StepSpec[] = [];
    let offset = 0;
    for (const input of n.inputs) {
      if (!input) continue;
      const inner = this.size(this.shape(input).slice(axis));
      if (inner > 0)
        steps.push(
          this.step(concatCopyProgram(outer, inner, outInner, offset), [this.ref(input), { value: n.outputs[0] }]),
        );
      offset += inner;
    }
    return steps;
  }

  private async gemm(): Promise<StepSpec[]> {
    const n = this.node;
    const a = this.shape(0);
    const b = this.shape(1);
    const transA = this.attrs.int('transA', 0) === 1;
    const transB = this.attrs.int('transB', 0) === 1;
    const [M, K] = transA ? [a[1], a[0]] : [a[0], a[1]];
    const N = transB ? b[0] : b[1];
    const { activation, output } = this.absorbActivation(n.outputs[0]);
    const cDims = n.inputs[2] ? this.shape(2) : undefined;
    const beta = this.attrs.float('beta', 1);
    const params = {
      M,
      N,
      K,
      transA,
      transB,
      alpha: this.attrs.float('alpha', 1),
      beta,
      cDims: beta === 0 ? undefined : cDims,
      activation,
    };
    const cRef = params.cDims ? this.ref(n.inputs[2]) : undefined;
    this.checkBinding(M * K * 4, `input '${n.inputs[0]}'`);
    this.checkBinding(M * N * 4, `output '${output}'`);
    if (!this.isConstant(n.inputs[1])) {
      this.checkBinding(K * N * 4, `input '${n.inputs[1]}'`);
      const problem = gemmOpProblem(params, { packed: false });
      const variant = await this.options!.chooseVariant(problem, 'gemm');
      const refs = [this.ref(n.inputs[0]), this.ref(n.inputs[1]), { value: output }];
      if (cRef) refs.push(cRef);
      return this.gemmSteps(problem, variant, refs);
    }
    // Constant B: packed [K][N'] in column chunks that each fit one binding.
    const bData = this.floatConstant(n.inputs[1]);
    const chunk = columnChunk(K, N, this.options!.maxBindingBytes);
    const steps: StepSpec[] = [];
    for (let n0 = 0; n0 < N; n0 += chunk) {
      const columns = Math.min(chunk, N - n0);
      const problem = gemmOpProblem(params, { packed: true, nOffset: n0, columns });
      const variant = await this.options!.chooseVariant(problem, 'gemm');
      const packed = packB(bData, K, N, transB, n0, columns);
      const refs: BindingRef[] = [
        this.ref(n.inputs[0]),
        { constant: { key: `gemmB:${n.inputs[1]}:${transB}:${n0}:${columns}`, data: packed } },
        { value: output },
      ];
      if (cRef) refs.push(cRef);
      steps.push(...this.gemmSteps(problem, variant, refs));
    }
    return steps;
  }

  private async matmul(): Promise<StepSpec[]> {
    const n = this.node;
    const aDims = this.shape(0);
    const bDims = this.shape(1);
    const { activation, output } = this.absorbActivation(n.outputs[0]);
    const constantB = this.isConstant(n.inputs[1]);
    const problem = { ...matmulProblem(aDims, bDims, constantB), activation };
    this.checkBinding(this.size(aDims) * 4, `input '${n.inputs[0]}'`);
    this.checkBinding(this.size(this.outputShape()) * 4, `output '${output}'`);
    const variant = await this.options!.chooseVariant(problem, 'gemm');
    let bRef: BindingRef = this.ref(n.inputs[1]);
    if (constantB) {
      const b2 = bDims.length === 1 ? [bDims[0], 1] : bDims;
      const K = b2[b2.length - 2];
      const N = b2[b2.length - 1];
      const batch = this.size(b2.slice(0, -2));
      const packed = packB(this.floatConstant(n.inputs[1]), K, N, false, 0, N, batch);
      this.checkBinding(packed.length * 4, `packed weights '${n.inputs[1]}'`);
      bRef = { constant: { key: `matmulB:${n.inputs[1]}`, data: packed } };
    } else {
      this.checkBinding(this.size(bDims) * 4, `input '${n.inputs[1]}'`);
    }
    return this.gemmSteps(problem, variant, [this.ref(n.inputs[0]), bRef, { value: output }]);
  }

  private transpose(): StepSpec[] {
    const x = this.shape(0);
    const perm = this.attrs.ints(
      'perm',
      x.map((_, i) => x.length - 1 - i),
    );
    return [this.step(transposeProgram(x, perm), [this.ref(this.node.inputs[0]), { value: this.node.outputs[0] }])];
  }

  private pad(): StepSpec[] {
    const n = this.node;
    const x = this.shape(0);
    let pads: number[];
    let value = 0;
    if (this.opset < 11) {
      pads = this.attrs.ints(this.opset < 2 ? 'paddings' : 'pads');
      value = this.attrs.float('value', 0);
    } else {
      const given = this.intsConstant(n.inputs[1], 'pads');
      if (n.inputs[2]) {
        const v = this.constantOf(n.inputs[2]);
        if (!v) throw this.error('constant_value must be a constant');
        value = toNumbers(v)[0] ?? 0;
      }
      const axes = n.inputs[3]
        ? this.intsConstant(n.inputs[3], 'axes').map((a) => this.normalizeAxis(a, x.length))
        : x.map((_, i) => i);
      pads = new Array(2 * x.length).fill(0);
      axes.forEach((a, i) => {
        pads[a] = given[i];
        pads[a + x.length] = given[i + axes.length];
      });
    }
    return [this.step(padProgram(x, pads, value), [this.ref(n.inputs[0]), { value: n.outputs[0] }])];
  }

  private softmax(): StepSpec[] {
    const x = this.shape(0);
    const rank = Math.max(1, x.length);
    const axis = this.normalizeAxis(this.attrs.int('axis', this.opset < 13 ? 1 : -1), rank);
    const outer = this.size(x.slice(0, axis));
    const [length, inner] =
      this.opset < 13 ? [this.size(x.slice(axis)), 1] : [x[axis] ?? 1, this.size(x.slice(axis + 1))];
    return [
      this.step(softmaxProgram(outer, length, inner), [this.ref(this.node.inputs[0]), { value: this.node.outputs[0] }]),
    ];
  }

  // ---- fusion ----

  /** The single consumer of `value` if it is one of `ops` and may be fused (marks it absorbed). */
  private absorbNext(value: string, ops: string[], accept: (n: Node) => boolean = () => true): Node | undefined {
    const f = this.fusion;
    if (!f || f.graphOutputs.has(value)) return undefined;
    const users = f.consumers.get(value) ?? [];
    if (users.length !== 1) return undefined;
    const next = users[0];
    if (!ops.includes(next.opType) || next.inputs[0] !== value || !accept(next)) return undefined;
    if (next.inputs.filter((i) => i === value).length !== 1) return undefined;
    f.absorbed.add(next);
    return next;
  }

  /** A following Relu / LeakyRelu / Clip (constant bounds) fused into this node's epilogue. */
  private absorbActivation(value: string): { activation: Activation; output: string } {
    const next = this.absorbNext(
      value,
      ACTIVATION_OPS,
      (c) => c.opType !== 'Clip' || c.inputs.slice(1).every((i) => !i || this.isConstant(i)),
    );
    if (!next) return { activation: NO_ACTIVATION, output: value };
    return { activation: this.unaryOp(next) as Activation, output: next.outputs[0] };
  }

  private unaryOp(node: Node): UnaryOp {
    const attrs = new AttributeReader(node, this.graph.source);
    switch (node.opType) {
      case 'Relu':
        return { kind: 'relu' };
      case 'LeakyRelu':
        return { kind: 'leakyRelu', alpha: attrs.float('alpha', 0.01) };
      case 'Sigmoid':
        return { kind: 'sigmoid' };
      case 'Tanh':
        return { kind: 'tanh' };
      case 'Clip': {
        if (this.graph.opset < 11)
          return {
            kind: 'clip',
            min: attrs.float('min', -3.4028234663852886e38),
            max: attrs.float('max', 3.4028234663852886e38),
          };
        const bound = (i: number, fallback: number) => {
          const t = node.inputs[i] ? this.constantOf(node.inputs[i]) : undefined;
          return t ? toNumbers(t)[0] : fallback;
        };
        return { kind: 'clip', min: bound(1, -Infinity), max: bound(2, Infinity) };
      }
    }
    throw new ModelError(`${node.opType} is not an activation`, { file: this.graph.source, node });
  }

  // ---- helpers ----

  private gemmSteps(problem: GemmProblem, variant: GemmVariant, refs: BindingRef[]): StepSpec[] {
    try {
      return gemmPrograms(problem, variant, this.options!.maxWorkgroupsPerDimension).map((program) =>
        this.step(program, refs),
      );
    } catch (e) {
      throw this.error((e as Error).message);
    }
  }

  private step(program: KernelProgram, refs: BindingRef[]): StepSpec {
    return { program, refs, node: this.node };
  }

  private ref(name: string): BindingRef {
    if (this.isConstant(name)) return { constant: { key: `const:${name}`, data: this.floatConstant(name) } };
    return { value: name };
  }

  private shape(input: number | string): number[] {
    const name = typeof input === 'number' ? this.node.inputs[input] : input;
    const s = this.fusion?.temporaries.get(name) ?? this.graph.values.get(name)?.shape;
    if (!s || s.some((d) => typeof d !== 'number')) throw this.error(`input '${name}' has no static shape`);
    return s as number[];
  }

  /** Rank of input i, known even when some dims are symbolic. */
  private rank(i: number): number {
    return this.graph.values.get(this.node.inputs[i])?.shape?.length ?? 0;
  }

  private outputShape(): number[] {
    const s = this.graph.values.get(this.node.outputs[0])?.shape;
    if (!s || s.some((d) => typeof d !== 'number'))
      throw this.error(`output '${this.node.outputs[0]}' has no static shape`);
    return s as number[];
  }

  private size(dims: number[]): number {
    return dims.reduce((a, b) => a * b, 1);
  }

  private isConstant(name: string): boolean {
    return this.graph.initializers.has(name);
  }

  private constantOf(name: string): TensorValue | undefined {
    return this.graph.initializers.get(name)?.value;
  }

  private floatConstant(name: string): Float32Array {
    const t = this.constantOf(name);
    if (!t) throw this.error(`'${name}' must be a constant`);
    if (t.data instanceof Float32Array) return t.data;
    if (t.dtype === 'float64') return Float32Array.from(t.data as Float64Array);
    throw this.error(`constant '${name}' has dtype ${t.dtype}; accepted: float32`);
  }

  private intsConstant(name: string, what: string): number[] {
    const t = this.constantOf(name);
    if (!t) throw this.error(`${what} ('${name}') must be a constant`);
    return toNumbers(t);
  }

  private normalizeAxis(axis: number, rank: number): number {
    if (axis < -rank || axis >= rank) throw this.error(`axis ${axis} is out of range for rank ${rank}`);
    return axis < 0 ? axis + rank : axis;
  }

  private unusedExtraOutputs(what: string): void {
    const consumers = this.fusion?.consumers ?? this.graph.consumers();
    const outputs = new Set(this.graph.outputs.map((o) => o.name));
    for (const o of this.node.outputs.slice(1)) {
      if (o && ((consumers.get(o)?.length ?? 0) > 0 || outputs.has(o)))
        throw this.error(`${what} ('${o}') is used, which inference does not support`);
    }
  }

  private checkBinding(bytes: number, what: string): void {
    const max = this.options?.maxBindingBytes;
    if (max !== undefined && bytes > max) {
      throw this.error(
        `${what} takes ${bytes} bytes, over this device's maxStorageBufferBindingSize of ${max} bytes; a smaller batch may fit`,
      );
    }
  }
}
