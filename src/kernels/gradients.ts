// The gradient-rule registry: per op, which kernels its training forward and its backward run,
// and which forward values they read (saved activations). Autodiff (src/train/autodiff.ts) asks
// gradientRule(op) and never special-cases an op. Rules for other op families (pooling, BN, LRN,
// Concat, broadcasting elementwise, Sigmoid, …) register themselves with registerGradientRule
// from their own files.
//
// A rule speaks in value names: it reads forward values and upstream gradients by name, asks the
// context for fresh names (temporaries and gradients, with their dims) and returns the name of
// each input's gradient (an upstream gradient's own name when the op is an identity: no copy).
import { AttributeReader } from '../graph/attributes.ts';
import { windowGeometry } from '../graph/geometry.ts';
import type { Graph, Node } from '../graph/ir.ts';
import {
  channelSumProgram,
  col2imProgram,
  conv2dBackwardDataPrograms,
  conv2dBackwardDataProblem,
  conv2dBackwardFilterPrograms,
  conv2dBackwardFilterProblem,
  conv2dTrainForwardPrograms,
  conv2dTrainForwardProblem,
  convGradRowsProgram,
  convTrainSizes,
  im2colProgram,
} from './conv-backward.ts';
import type { Conv2dParams } from './conv.ts';
import type { GemmProblem, GemmVariant } from './gemm.ts';
import {
  gemmBackwardAPrograms,
  gemmBackwardAProblem,
  gemmBackwardBPrograms,
  gemmBackwardBProblem,
  gemmTrainForwardPrograms,
  gemmTrainForwardProblem,
  matmulBackwardAPrograms,
  matmulBackwardBPrograms,
  matmulShape,
  matmulTrainForwardPrograms,
  reduceToBroadcastProgram,
} from './linear-backward.ts';
import type { GemmOpParams } from './linear.ts';
import { LINEAR_INDEX, linearDispatch, ParamBlock, type KernelProgram } from './program.ts';
import { avgPool2dBackwardProgram, batchNormFrozenBackwardProgram, maxPool2dBackwardProgram, type PoolBackwardParams } from './backward/index.ts';

/** One kernel step of a rule: the program and, per binding name (not 'params'), the value bound. */
export interface RuleStep {
  program: KernelProgram;
  bind: Record<string, string>;
}

export interface RuleContext {
  readonly graph: Graph;
  readonly node: Node;
  readonly attrs: AttributeReader;
  /** Static dims of a value (forward values and the context's own temporaries). */
  shape(name: string): number[];
  /** Whether the gradient of input i is needed (a trainable parameter depends on it, or it is one). */
  wants(i: number): boolean;
  /** A fresh value name for a temporary or gradient of `dims`. */
  temp(label: string, dims: number[]): string;
  /** The GEMM variant for a problem. */
  variant(problem: GemmProblem): GemmVariant;
  readonly maxWorkgroupsPerDimension?: number;
  /** An error naming the file, node and op. */
  error(message: string): Error;
}

export interface BackwardResult {
  steps: RuleStep[];
  /** Per node input: its gradient's value name, or undefined (not wanted, or not differentiable). */
  grads: (string | undefined)[];
}

export interface GradientRule {
  /**
   * The training forward: kernels that read parameters from their buffers as they are (no
   * packing, no folding). Absent: the runtime's own lowering of the node, unfused, is used.
   */
  forward?(ctx: RuleContext): RuleStep[];
  /** dOutputs[i]: the gradient of output i (undefined when nothing flows back through it). */
  backward(ctx: RuleContext, dOutputs: (string | undefined)[]): BackwardResult;
}

const rules = new Map<string, GradientRule>();

/** The rule for an op (default domain), or undefined when training cannot differentiate it yet. */
export function gradientRule(opType: string): GradientRule | undefined {
  return rules.get(opType);
}

/** Registers (or replaces) the rule for an op: how other op families join training. */
export function registerGradientRule(opType: string, rule: GradientRule): void {
  rules.set(opType, rule);
}

/** Ops with a registered rule. */
export function differentiableOps(): string[] {
  return [...rules.keys()].sort();
}

// ---- Conv ----

/** Conv params of a 2-D Conv node (1-D and 3-D are refused). */
export function convParamsOf(ctx: Pick<RuleContext, 'node' | 'attrs' | 'shape' | 'error'>): Conv2dParams {
  const n = ctx.node;
  const x = ctx.shape(n.inputs[0]);
  const w = ctx.shape(n.inputs[1]);
  if (x.length !== 4 || w.length !== 4) throw ctx.error(`training supports 2-D convolutions only; X is [${x}], W is [${w}]`);
  const group = ctx.attrs.int('group', 1);
  const g = windowGeometry(ctx.attrs, [x[2], x[3]], ctx.attrs.ints('kernel_shape', w.slice(2)));
  return {
    images: x[0], inChannels: x[1], height: x[2], width: x[3], outChannels: w[0], group,
    kernelH: w[2], kernelW: w[3], strideH: g.strides[0], strideW: g.strides[1],
    pads: [g.pads[0], g.pads[1], g.pads[2], g.pads[3]], dilationH: g.dilations[0], dilationW: g.dilations[1],
    outH: g.output[0], outW: g.output[1], hasBias: Boolean(n.inputs[2]),
  };
}

const colName = (node: Node) => `${node.outputs[0]}@im2col`;

registerGradientRule('Conv', {
  forward(ctx) {
    const p = convParamsOf(ctx);
    const n = ctx.node;
    const s = convTrainSizes(p);
    const col = colName(n);
    ctx.temp(col, [p.group, s.M, s.K]);
    const steps: RuleStep[] = [{ program: im2colProgram(p), bind: { x: n.inputs[0], col } }];
    const bind: Record<string, string> = { col, w: n.inputs[1], y: n.outputs[0] };
    if (p.hasBias) bind.bias = n.inputs[2];
    for (const program of conv2dTrainForwardPrograms(p, ctx.variant(conv2dTrainForwardProblem(p)), ctx.maxWorkgroupsPerDimension)) {
      steps.push({ program, bind });
    }
    return steps;
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = [undefined, undefined, undefined];
    if (!dy) return { steps: [], grads };
    const p = convParamsOf(ctx);
    const s = convTrainSizes(p);
    const steps: RuleStep[] = [];
    const rows = ctx.temp(`${n.outputs[0]}@dy-rows`, [p.group, s.M, s.groupOut]);
    if (ctx.wants(0) || ctx.wants(1)) steps.push({ program: convGradRowsProgram(p), bind: { dy, rows } });
    if (ctx.wants(1)) {
      const dw = ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1]));
      for (const program of conv2dBackwardFilterPrograms(p, ctx.variant(conv2dBackwardFilterProblem(p)), ctx.maxWorkgroupsPerDimension)) {
        steps.push({ program, bind: { rows, col: colName(n), dw } });
      }
      grads[1] = dw;
    }
    if (p.hasBias && ctx.wants(2)) {
      const db = ctx.temp(`grad ${n.inputs[2]}`, [p.outChannels]);
      steps.push({ program: channelSumProgram(p.images, p.outChannels, s.spatial), bind: { dy, db } });
      grads[2] = db;
    }
    if (ctx.wants(0)) {
      const dcol = ctx.temp(`${n.outputs[0]}@dcol`, [p.group, s.M, s.K]);
      for (const program of conv2dBackwardDataPrograms(p, ctx.variant(conv2dBackwardDataProblem(p)), ctx.maxWorkgroupsPerDimension)) {
        steps.push({ program, bind: { rows, w: n.inputs[1], dcol } });
      }
      const dx = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
      steps.push({ program: col2imProgram(p), bind: { dcol, dx } });
      grads[0] = dx;
    }
    return { steps, grads };
  },
});

// ---- Gemm and MatMul ----

export function gemmParamsOf(ctx: Pick<RuleContext, 'node' | 'attrs' | 'shape' | 'error'>): GemmOpParams {
  const n = ctx.node;
  const a = ctx.shape(n.inputs[0]);
  const b = ctx.shape(n.inputs[1]);
  if (a.length !== 2 || b.length !== 2) throw ctx.error(`A [${a}] and B [${b}] must be 2-D`);
  const transA = ctx.attrs.int('transA', 0) === 1;
  const transB = ctx.attrs.int('transB', 0) === 1;
  const [M, K] = transA ? [a[1], a[0]] : a;
  const N = transB ? b[0] : b[1];
  return {
    M, N, K, transA, transB,
    alpha: ctx.attrs.float('alpha', 1), beta: ctx.attrs.float('beta', 1),
    cDims: n.inputs[2] ? ctx.shape(n.inputs[2]) : undefined,
  };
}

registerGradientRule('Gemm', {
  forward(ctx) {
    const p = gemmParamsOf(ctx);
    const n = ctx.node;
    const bind: Record<string, string> = { a: n.inputs[0], b: n.inputs[1], y: n.outputs[0] };
    if (p.cDims) bind.bias = n.inputs[2];
    return gemmTrainForwardPrograms(p, ctx.variant(gemmTrainForwardProblem(p)), ctx.maxWorkgroupsPerDimension).map((program) => ({ program, bind }));
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = [undefined, undefined, undefined];
    if (!dy) return { steps: [], grads };
    const p = gemmParamsOf(ctx);
    const steps: RuleStep[] = [];
    if (ctx.wants(0)) {
      const da = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
      for (const program of gemmBackwardAPrograms(p, ctx.variant(gemmBackwardAProblem(p)), ctx.maxWorkgroupsPerDimension)) {
        steps.push({ program, bind: { dy, b: n.inputs[1], da } });
      }
      grads[0] = da;
    }
    if (ctx.wants(1)) {
      const db = ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1]));
      for (const program of gemmBackwardBPrograms(p, ctx.variant(gemmBackwardBProblem(p)), ctx.maxWorkgroupsPerDimension)) {
        steps.push({ program, bind: { a: n.inputs[0], dy, db } });
      }
      grads[1] = db;
    }
    if (p.cDims && ctx.wants(2)) {
      const dc = ctx.temp(`grad ${n.inputs[2]}`, p.cDims);
      steps.push({ program: reduceToBroadcastProgram(p.cDims, p.M, p.N, p.beta), bind: { dy, dc } });
      grads[2] = dc;
    }
    return { steps, grads };
  },
});

function matmulShapeOf(ctx: RuleContext) {
  try {
    return matmulShape(ctx.shape(ctx.node.inputs[0]), ctx.shape(ctx.node.inputs[1]));
  } catch (e) {
    throw ctx.error((e as Error).message);
  }
}

registerGradientRule('MatMul', {
  forward(ctx) {
    const s = matmulShapeOf(ctx);
    const n = ctx.node;
    const probe = { M: s.bShared ? s.batch * s.M : s.M, N: s.N } as GemmProblem;
    return matmulTrainForwardPrograms(s, ctx.variant(probe), ctx.maxWorkgroupsPerDimension).map((program) => ({
      program, bind: { a: n.inputs[0], b: n.inputs[1], y: n.outputs[0] },
    }));
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = [undefined, undefined];
    if (!dy) return { steps: [], grads };
    const s = matmulShapeOf(ctx);
    const steps: RuleStep[] = [];
    if (ctx.wants(0)) {
      const da = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
      const probe = { M: s.bShared ? s.batch * s.M : s.M, N: s.K } as GemmProblem;
      for (const program of matmulBackwardAPrograms(s, ctx.variant(probe), ctx.maxWorkgroupsPerDimension)) steps.push({ program, bind: { dy, b: n.inputs[1], da } });
      grads[0] = da;
    }
    if (ctx.wants(1)) {
      const db = ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1]));
      const probe = { M: s.K, N: s.N } as GemmProblem;
      for (const program of matmulBackwardBPrograms(s, ctx.variant(probe), ctx.maxWorkgroupsPerDimension)) steps.push({ program, bind: { a: n.inputs[0], dy, db } });
      grads[1] = db;
    }
    return { steps, grads };
  },
});

// ---- Relu, Add/Sum, identities, GlobalAveragePool ----

registerGradientRule('Relu', {
  backward(ctx, [dy]) {
    const x = ctx.node.inputs[0];
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
    const dims = ctx.shape(x);
    const dx = ctx.temp(`grad ${x}`, dims);
    return { steps: [{ program: reluBackwardProgram(dims.reduce((a, b) => a * b, 1)), bind: { x, dy, dx } }], grads: [dx] };
  },
});

const sameShapeSum: GradientRule = {
  backward(ctx, [dy]) {
    const n = ctx.node;
    const out = ctx.shape(n.outputs[0]);
    for (const input of n.inputs) {
      const dims = ctx.shape(input);
      if (dims.length !== out.length || dims.some((d, i) => d !== out[i])) {
        throw ctx.error(`input '${input}' [${dims}] is broadcast to [${out}]: the backward of a broadcasting ${n.opType} is not available yet; accepted: inputs of the output's shape`);
      }
    }
    // d(a + b + …)/da = 1: every input's gradient is dY itself.
    return { steps: [], grads: n.inputs.map((_, i) => (dy && ctx.wants(i) ? dy : undefined)) };
  },
};
registerGradientRule('Add', sameShapeSum);
registerGradientRule('Sum', sameShapeSum);

const identity: GradientRule = {
  backward(ctx, [dy]) {
    return { steps: [], grads: ctx.node.inputs.map((_, i) => (i === 0 && dy && ctx.wants(0) ? dy : undefined)) };
  },
};
for (const op of ['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze', 'Identity']) registerGradientRule(op, identity);
// Dropout in inference mode (training_mode false, which the runtime checks) is an identity.
registerGradientRule('Dropout', identity);

registerGradientRule('GlobalAveragePool', {
  backward(ctx, [dy]) {
    const x = ctx.node.inputs[0];
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
    const dims = ctx.shape(x);
    const planes = dims[0] * (dims[1] ?? 1);
    const spatial = dims.slice(2).reduce((a, b) => a * b, 1);
    const dx = ctx.temp(`grad ${x}`, dims);
    return { steps: [{ program: globalAveragePoolBackwardProgram(planes, spatial), bind: { dy, dx } }], grads: [dx] };
  },
});

// ---- pooling and frozen BatchNormalization (program builders: ./backward/) ----

function poolParamsOf(ctx: RuleContext): PoolBackwardParams & { countIncludePad: boolean } {
  const x = ctx.shape(ctx.node.inputs[0]);
  if (x.length !== 4 && x.length !== 3) throw ctx.error(`training supports 1-D and 2-D pooling only; X is [${x}]`);
  const oneD = x.length === 3;
  const kernel = ctx.attrs.ints('kernel_shape');
  const g = windowGeometry(ctx.attrs, x.slice(2), kernel, ctx.attrs.int('ceil_mode', 0) === 1);
  const at = (v: number[], i: number, fill: number) => (oneD ? [fill, v[0]] : [v[0], v[1]])[i];
  return {
    planes: x[0] * x[1], height: oneD ? 1 : x[2], width: oneD ? x[2] : x[3],
    outH: at(g.output, 0, 1), outW: at(g.output, 1, 1), kernelH: at(kernel, 0, 1), kernelW: at(kernel, 1, 1),
    strideH: at(g.strides, 0, 1), strideW: at(g.strides, 1, 1),
    pads: oneD ? [0, g.pads[0], 0, g.pads[1]] : [g.pads[0], g.pads[1], g.pads[2], g.pads[3]],
    dilationH: at(g.dilations, 0, 1), dilationW: at(g.dilations, 1, 1),
    countIncludePad: ctx.attrs.int('count_include_pad', 0) === 1,
  };
}

registerGradientRule('MaxPool', {
  backward(ctx, [dy]) {
    const x = ctx.node.inputs[0];
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
    const dx = ctx.temp(`grad ${x}`, ctx.shape(x));
    return { steps: [{ program: maxPool2dBackwardProgram(poolParamsOf(ctx)), bind: { x, dy, dx } }], grads: [dx] };
  },
});

registerGradientRule('AveragePool', {
  backward(ctx, [dy]) {
    const x = ctx.node.inputs[0];
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
    const dx = ctx.temp(`grad ${x}`, ctx.shape(x));
    return { steps: [{ program: avgPool2dBackwardProgram(poolParamsOf(ctx)), bind: { dy, dx } }], grads: [dx] };
  },
});

// Inference mode (frozen scale and bias, running statistics): dx = dy·scale/√(var + ε). A
// BatchNormalization whose scale or bias trains runs in training mode, which this rule refuses.
registerGradientRule('BatchNormalization', {
  backward(ctx, [dy]) {
    const n = ctx.node;
    if (ctx.wants(1) || ctx.wants(2) || ctx.wants(3) || ctx.wants(4)) {
      throw ctx.error(`its scale, bias or statistics are trainable: BatchNormalization in training mode (batch statistics) is not wired into autodiff yet; freeze '${n.inputs[1]}' and '${n.inputs[2]}' to train through it in inference mode`);
    }
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined, undefined, undefined, undefined, undefined] };
    const x = ctx.shape(n.inputs[0]);
    const shape = { images: x[0], channels: x[1] ?? 1, spatial: x.slice(2).reduce((a, b) => a * b, 1), epsilon: ctx.attrs.float('epsilon', 1e-5) };
    const dx = ctx.temp(`grad ${n.inputs[0]}`, x);
    return {
      steps: [{ program: batchNormFrozenBackwardProgram(shape), bind: { dy, scale: n.inputs[1], var: n.inputs[4], dx } }],
      grads: [dx, undefined, undefined, undefined, undefined],
    };
  },
});

// ---- small backward kernels ----

/** dx = dy where x > 0, else 0. Bindings: x, dy, dx, params. */
export function reluBackwardProgram(size: number): KernelProgram {
  const { dispatch, rowSize } = linearDispatch(size);
  const P = new ParamBlock().u32('size', size).u32('rowSize', rowSize);
  const wgsl = `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
${P.wgsl(3)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = ${LINEAR_INDEX};
  if (i >= P.size) { return; }
  dx[i] = select(0.0, dy[i], x[i] > 0.0);
}`;
  return {
    label: `relu backward ${size}`,
    key: 'relu-backward',
    wgsl,
    dispatch,
    bindings: [{ name: 'x', access: 'read' }, { name: 'dy', access: 'read' }, { name: 'dx', access: 'read_write' }, { name: 'params', access: 'uniform' }],
    params: P.bytes(),
  };
}

/** dx[plane][i] = dy[plane] / spatial. Bindings: dy, dx, params. */
export function globalAveragePoolBackwardProgram(planes: number, spatial: number): KernelProgram {
  const total = planes * spatial;
  const { dispatch, rowSize } = linearDispatch(total);
  const P = new ParamBlock().u32('size', total).u32('rowSize', rowSize).u32('spatial', spatial).f32('scale', 1 / spatial);
  const wgsl = `
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
${P.wgsl(2)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = ${LINEAR_INDEX};
  if (i >= P.size) { return; }
  dx[i] = dy[i / P.spatial] * P.scale;
}`;
  return {
    label: `globalavgpool backward ${planes}×${spatial}`,
    key: 'globalavgpool-backward',
    wgsl,
    dispatch,
    bindings: [{ name: 'dy', access: 'read' }, { name: 'dx', access: 'read_write' }, { name: 'params', access: 'uniform' }],
    params: P.bytes(),
  };
}

/** y = a + b (same sizes): how autodiff sums two gradients of one value. Bindings: a, b, y, params. */
export function gradientSumProgram(size: number): KernelProgram {
  const { dispatch, rowSize } = linearDispatch(size);
  const P = new ParamBlock().u32('size', size).u32('rowSize', rowSize);
  const wgsl = `
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${P.wgsl(3)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = ${LINEAR_INDEX};
  if (i >= P.size) { return; }
  y[i] = a[i] + b[i];
}`;
  return {
    label: `gradient sum ${size}`,
    key: 'gradient-sum',
    wgsl,
    dispatch,
    bindings: [{ name: 'a', access: 'read' }, { name: 'b', access: 'read' }, { name: 'y', access: 'read_write' }, { name: 'params', access: 'uniform' }],
    params: P.bytes(),
  };
}
