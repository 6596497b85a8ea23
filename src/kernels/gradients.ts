// Gradient rules of the element-wise, pooling, normalization, shape and concat ops, and the
// registry's public face: importing this module registers every rule (Conv and Gemm/MatMul
// have their own files, next to their kernels).
import { windowGeometry } from '../graph/geometry.ts';
import type { Node } from '../graph/ir.ts';
import './conv-gradient.ts';
import { registerGradientRule, type GradientRule, type RuleContext, type RuleStep } from './gradient-registry.ts';
import './linear-gradient.ts';
import { elementProgram, input, output, type KernelProgram } from './shader.ts';
import { softmaxBackwardProgram } from './transform.ts';
import {
  avgPool2dBackwardProgram,
  batchNormFrozenBackwardProgram,
  batchNormTrainingBackwardPrograms,
  batchNormTrainingForwardPrograms,
  broadcastBackwardProgram,
  concatBackwardPrograms,
  dropoutBackwardProgram,
  dropoutForwardProgram,
  globalPoolBackwardProgram,
  lrnBackwardProgram,
  maxPool2dBackwardProgram,
  padBackwardProgram,
  reduceToShapeProgram,
  transposeBackwardProgram,
  unaryBackwardProgram,
  type BatchNormShape,
  type BroadcastBackwardOp,
  type PoolBackwardParams,
  type UnaryBackwardOp,
} from './backward/index.ts';
import { batchNormProgram } from './normalization.ts';

export * from './gradient-registry.ts';
export { convParamsOf } from './conv-gradient.ts';
export { gemmParamsOf } from './linear-gradient.ts';

// ---- Relu, Add/Sum, identities, GlobalAveragePool ----

registerGradientRule('Relu', {
  backward(ctx, [dy]) {
    const x = ctx.node.inputs[0];
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
    const dims = ctx.shape(x);
    const dx = ctx.temp(`grad ${x}`, dims);
    return {
      steps: [{ program: reluBackwardProgram(dims.reduce((a, b) => a * b, 1)), bind: { x, dy, dx } }],
      grads: [dx],
    };
  },
});

const identity: GradientRule = {
  backward(ctx, [dy]) {
    return { steps: [], grads: ctx.node.inputs.map((_, i) => (i === 0 && dy && ctx.wants(0) ? dy : undefined)) };
  },
};
for (const op of ['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze', 'Identity']) registerGradientRule(op, identity);

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

// BatchNormalization. Frozen scale and bias (inference mode, running statistics as constants):
// dx = dy·scale/√(var + ε), the runtime's own forward. Trainable scale or bias: training mode —
// the forward normalizes with the batch statistics (saved for the backward) and updates the
// running statistics in place with ONNX's momentum (running = momentum·running + (1 −
// momentum)·batch; they are state, read back on export); evaluation uses the running
// statistics over the same buffers. The running statistics never get a gradient.
function bnShapeOf(ctx: RuleContext): BatchNormShape {
  const x = ctx.shape(ctx.node.inputs[0]);
  return {
    images: x[0],
    channels: x[1] ?? 1,
    spatial: x.slice(2).reduce((a, b) => a * b, 1),
    epsilon: ctx.attrs.float('epsilon', 1e-5),
  };
}
const bnTrainsItself = (ctx: RuleContext) => ctx.wants(1) || ctx.wants(2);
const bnSaved = (n: Node) => ({ mean: `${n.outputs[0]}@bn-mean`, invStd: `${n.outputs[0]}@bn-invstd` });

registerGradientRule('BatchNormalization', {
  nonDifferentiable: [3, 4],
  forward(ctx): RuleStep[] | undefined {
    if (!bnTrainsItself(ctx)) return undefined;
    const n = ctx.node;
    const p = bnShapeOf(ctx);
    const [x, scale, bias, mean, variance] = n.inputs;
    if (!mean || !variance || !ctx.graph.initializers.has(mean) || !ctx.graph.initializers.has(variance)) {
      throw ctx.error(`training mode needs the running mean and variance as initializers ('${mean}', '${variance}')`);
    }
    if (!ctx.training) {
      return [
        {
          program: batchNormProgram(p.images, p.channels, p.spatial, p.epsilon),
          bind: { x, scale, bias, mean, var: variance, y: n.outputs[0] },
        },
      ];
    }
    const saved = bnSaved(n);
    ctx.temp(saved.mean, [p.channels]);
    ctx.temp(saved.invStd, [p.channels]);
    ctx.state(mean);
    ctx.state(variance);
    const [stats, apply] = batchNormTrainingForwardPrograms(p, ctx.attrs.float('momentum', 0.9));
    return [
      {
        program: stats,
        bind: { x, saveMean: saved.mean, saveInvStd: saved.invStd, runningMean: mean, runningVar: variance },
      },
      { program: apply, bind: { x, scale, bias, saveMean: saved.mean, saveInvStd: saved.invStd, y: n.outputs[0] } },
    ];
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = [undefined, undefined, undefined, undefined, undefined];
    if (!dy) return { steps: [], grads };
    const p = bnShapeOf(ctx);
    const x = ctx.shape(n.inputs[0]);
    if (bnTrainsItself(ctx)) {
      const saved = bnSaved(n);
      const dScale = ctx.temp(`grad ${n.inputs[1]}`, [p.channels]);
      const dBias = ctx.temp(`grad ${n.inputs[2]}`, [p.channels]);
      const [sums, data] = batchNormTrainingBackwardPrograms(p);
      const steps: RuleStep[] = [
        { program: sums, bind: { x: n.inputs[0], dy, saveMean: saved.mean, saveInvStd: saved.invStd, dScale, dBias } },
      ];
      if (ctx.wants(0)) {
        const dx = ctx.temp(`grad ${n.inputs[0]}`, x);
        steps.push({
          program: data,
          bind: {
            x: n.inputs[0],
            dy,
            scale: n.inputs[1],
            saveMean: saved.mean,
            saveInvStd: saved.invStd,
            dScale,
            dBias,
            dx,
          },
        });
        grads[0] = dx;
      }
      if (ctx.wants(1)) grads[1] = dScale;
      if (ctx.wants(2)) grads[2] = dBias;
      return { steps, grads };
    }
    if (!ctx.wants(0)) return { steps: [], grads };
    const dx = ctx.temp(`grad ${n.inputs[0]}`, x);
    grads[0] = dx;
    return {
      steps: [{ program: batchNormFrozenBackwardProgram(p), bind: { dy, scale: n.inputs[1], var: n.inputs[4], dx } }],
      grads,
    };
  },
});

// ---- LRN, GlobalMaxPool ----

registerGradientRule('LRN', {
  backward(ctx, [dy]) {
    const x = ctx.node.inputs[0];
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
    const d = ctx.shape(x);
    const p = {
      images: d[0],
      channels: d[1],
      spatial: d.slice(2).reduce((a, b) => a * b, 1),
      size: ctx.attrs.int('size'),
      alpha: ctx.attrs.float('alpha', 1e-4),
      beta: ctx.attrs.float('beta', 0.75),
      bias: ctx.attrs.float('bias', 1),
    };
    const dx = ctx.temp(`grad ${x}`, d);
    return { steps: [{ program: lrnBackwardProgram(p), bind: { x, dy, dx } }], grads: [dx] };
  },
});

registerGradientRule('GlobalMaxPool', {
  backward(ctx, [dy]) {
    const x = ctx.node.inputs[0];
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
    const d = ctx.shape(x);
    const dx = ctx.temp(`grad ${x}`, d);
    const program = globalPoolBackwardProgram(
      'max',
      d[0] * (d[1] ?? 1),
      d.slice(2).reduce((a, b) => a * b, 1),
    );
    return { steps: [{ program, bind: { x, dy, dx } }], grads: [dx] };
  },
});

// ---- elementwise: broadcasting Add/Sub/Mul/Div, Sum, unary activations, Dropout ----

const sameDims = (a: number[], b: number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

function binaryRule(op: BroadcastBackwardOp): GradientRule {
  return {
    backward(ctx, [dy]) {
      const n = ctx.node;
      const grads: (string | undefined)[] = [undefined, undefined];
      if (!dy) return { steps: [], grads };
      const out = ctx.shape(n.outputs[0]);
      const dims: [number[], number[]] = [ctx.shape(n.inputs[0]), ctx.shape(n.inputs[1])];
      const steps: RuleStep[] = [];
      for (const w of [0, 1] as const) {
        if (!ctx.wants(w)) continue;
        // d(a + b)/da = 1 (and d(a − b)/da): the gradient is dY itself where nothing broadcasts.
        if ((op === 'add' || (op === 'sub' && w === 0)) && sameDims(dims[w], out)) {
          grads[w] = dy;
          continue;
        }
        const dx = ctx.temp(`grad ${n.inputs[w]}`, dims[w]);
        steps.push({
          program: broadcastBackwardProgram(op, dims, w, out),
          bind: { dy, x0: n.inputs[0], x1: n.inputs[1], dx },
        });
        grads[w] = dx;
      }
      return { steps, grads };
    },
  };
}
registerGradientRule('Add', binaryRule('add'));
registerGradientRule('Sub', binaryRule('sub'));
registerGradientRule('Mul', binaryRule('mul'));
registerGradientRule('Div', binaryRule('div'));

registerGradientRule('Sum', {
  backward(ctx, [dy]) {
    const n = ctx.node;
    if (!dy) return { steps: [], grads: n.inputs.map(() => undefined) };
    const out = ctx.shape(n.outputs[0]);
    const steps: RuleStep[] = [];
    const grads = n.inputs.map((input, i) => {
      if (!ctx.wants(i)) return undefined;
      const dims = ctx.shape(input);
      if (sameDims(dims, out)) return dy;
      const dx = ctx.temp(`grad ${input}`, dims);
      steps.push({ program: reduceToShapeProgram(out, dims), bind: { dy, dx } });
      return dx;
    });
    return { steps, grads };
  },
});

/** A float constant input (an initializer), or undefined when the input is absent. */
function scalarInput(ctx: RuleContext, i: number, what: string): number | undefined {
  const name = ctx.node.inputs[i];
  if (!name) return undefined;
  const init = ctx.graph.initializers.get(name);
  if (!init) throw ctx.error(`${what} ('${name}') must be an initializer to train through this node`);
  return Number((init.value.data as ArrayLike<number | bigint>)[0]);
}

function unaryRule(opOf: (ctx: RuleContext) => UnaryBackwardOp, nonDifferentiable?: number[]): GradientRule {
  return {
    nonDifferentiable,
    backward(ctx, [dy]) {
      const n = ctx.node;
      const grads: (string | undefined)[] = n.inputs.map(() => undefined);
      if (!dy || !ctx.wants(0)) return { steps: [], grads };
      const op = opOf(ctx);
      const dims = ctx.shape(n.inputs[0]);
      const dx = ctx.temp(`grad ${n.inputs[0]}`, dims);
      const saved: Record<string, string> =
        op.kind === 'sigmoid' || op.kind === 'tanh' ? { y: n.outputs[0] } : { x: n.inputs[0] };
      grads[0] = dx;
      return {
        steps: [
          {
            program: unaryBackwardProgram(
              op,
              dims.reduce((a, b) => a * b, 1),
            ),
            bind: { ...saved, dy, dx },
          },
        ],
        grads,
      };
    },
  };
}
registerGradientRule(
  'Sigmoid',
  unaryRule(() => ({ kind: 'sigmoid' })),
);
registerGradientRule(
  'Tanh',
  unaryRule(() => ({ kind: 'tanh' })),
);
registerGradientRule(
  'LeakyRelu',
  unaryRule((ctx) => ({ kind: 'leakyRelu', alpha: ctx.attrs.float('alpha', 0.01) })),
);
registerGradientRule(
  'Clip',
  unaryRule(
    (ctx) => {
      if (ctx.graph.opset < 11)
        return {
          kind: 'clip',
          min: ctx.attrs.float('min', -3.4028234663852886e38),
          max: ctx.attrs.float('max', 3.4028234663852886e38),
        };
      return {
        kind: 'clip',
        min: scalarInput(ctx, 1, 'Clip min') ?? -Infinity,
        max: scalarInput(ctx, 2, 'Clip max') ?? Infinity,
      };
    },
    [1, 2],
  ),
);

/** Dropout's ratio when it draws a mask in this forward, else undefined (an identity). */
function activeDropout(ctx: RuleContext): number | undefined {
  if (!ctx.training || !ctx.dropout) return undefined;
  const ratio = ctx.graph.opset >= 12 ? (scalarInput(ctx, 1, 'Dropout ratio') ?? 0.5) : ctx.attrs.float('ratio', 0.5);
  if (ratio === 0) return undefined;
  const mask = ctx.node.outputs[1];
  if (
    mask &&
    (ctx.graph.nodes.some((m) => m.inputs.includes(mask)) || ctx.graph.outputs.some((o) => o.name === mask))
  ) {
    throw ctx.error(`its mask output '${mask}' is read: training supports Dropout without a consumed mask`);
  }
  return ratio;
}
/** Byte offset of the seed in dropoutForwardProgram's and dropoutBackwardProgram's params (size, rowSize, seed). */
const DROPOUT_SEED_OFFSET = 8;

// Dropout: in training (unless the plan turns it off) a mask drawn from a counter-based hash of
// (seed, element), the seed new every step and shared by the node's forward and backward;
// in evaluation an identity (the runtime's alias).
registerGradientRule('Dropout', {
  nonDifferentiable: [1, 2],
  forward(ctx) {
    const ratio = activeDropout(ctx);
    if (ratio === undefined) return undefined;
    const n = ctx.node;
    const size = ctx.shape(n.inputs[0]).reduce((a, b) => a * b, 1);
    return [
      {
        program: dropoutForwardProgram(size, ratio, 0),
        bind: { x: n.inputs[0], y: n.outputs[0] },
        reseed: { offset: DROPOUT_SEED_OFFSET },
      },
    ];
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = n.inputs.map(() => undefined);
    if (!dy || !ctx.wants(0)) return { steps: [], grads };
    const ratio = activeDropout(ctx);
    if (ratio === undefined) {
      grads[0] = dy;
      return { steps: [], grads };
    }
    const size = ctx.shape(n.inputs[0]).reduce((a, b) => a * b, 1);
    const dx = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
    grads[0] = dx;
    return {
      steps: [
        { program: dropoutBackwardProgram(size, ratio, 0), bind: { dy, dx }, reseed: { offset: DROPOUT_SEED_OFFSET } },
      ],
      grads,
    };
  },
});

// ---- data movement: Concat, Transpose, Pad ----

registerGradientRule('Concat', {
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = n.inputs.map(() => undefined);
    if (!dy) return { steps: [], grads };
    const dims = n.inputs.map((i) => ctx.shape(i));
    const programs = concatBackwardPrograms(dims, ctx.attrs.int('axis'));
    const steps: RuleStep[] = [];
    n.inputs.forEach((input, i) => {
      if (!ctx.wants(i)) return;
      const dx = ctx.temp(`grad ${input}`, dims[i]);
      steps.push({ program: programs[i], bind: { dy, dx } });
      grads[i] = dx;
    });
    return { steps, grads };
  },
});

registerGradientRule('Transpose', {
  backward(ctx, [dy]) {
    const x = ctx.node.inputs[0];
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
    const dims = ctx.shape(x);
    const perm = ctx.attrs.ints(
      'perm',
      dims.map((_, i) => dims.length - 1 - i),
    );
    const dx = ctx.temp(`grad ${x}`, dims);
    return { steps: [{ program: transposeBackwardProgram(dims, perm), bind: { dy, dx } }], grads: [dx] };
  },
});

registerGradientRule('Pad', {
  nonDifferentiable: [1, 2, 3],
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = n.inputs.map(() => undefined);
    if (!dy || !ctx.wants(0)) return { steps: [], grads };
    const mode = ctx.attrs.string('mode', 'constant');
    if (mode !== 'constant')
      throw ctx.error(`the backward of Pad mode '${mode}' is not available; accepted: 'constant'`);
    const dims = ctx.shape(n.inputs[0]);
    const rank = dims.length;
    let pads: number[];
    if (ctx.graph.opset < 11) {
      pads = ctx.attrs.ints(ctx.graph.opset < 2 ? 'paddings' : 'pads');
    } else {
      const init = ctx.graph.initializers.get(n.inputs[1]);
      if (!init) throw ctx.error(`pads ('${n.inputs[1]}') must be an initializer to train through Pad`);
      const given = Array.from(init.value.data as ArrayLike<number | bigint>, Number);
      const axesInit = n.inputs[3] ? ctx.graph.initializers.get(n.inputs[3]) : undefined;
      if (n.inputs[3] && !axesInit)
        throw ctx.error(`axes ('${n.inputs[3]}') must be an initializer to train through Pad`);
      const axes = axesInit
        ? Array.from(axesInit.value.data as ArrayLike<number | bigint>, (a) => (Number(a) + rank) % rank)
        : dims.map((_, i) => i);
      pads = new Array(2 * rank).fill(0);
      axes.forEach((a, i) => {
        pads[a] = given[i];
        pads[a + rank] = given[i + axes.length];
      });
    }
    const dx = ctx.temp(`grad ${n.inputs[0]}`, dims);
    grads[0] = dx;
    return { steps: [{ program: padBackwardProgram(dims, pads), bind: { dy, dx } }], grads };
  },
});

// ---- Softmax inside the network (a final Softmax is the loss's business) ----

registerGradientRule('Softmax', {
  backward(ctx, [dy]) {
    const n = ctx.node;
    if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
    const dims = ctx.shape(n.inputs[0]);
    const rank = dims.length;
    const raw = ctx.attrs.int('axis', ctx.graph.opset < 13 ? 1 : -1);
    const axis = raw < 0 ? raw + rank : raw;
    if (axis < 0 || axis >= Math.max(rank, 1)) throw ctx.error(`axis ${raw} is out of range for rank ${rank}`);
    const prod = (d: number[]) => d.reduce((a, b) => a * b, 1);
    const outer = prod(dims.slice(0, axis));
    const [length, inner] =
      ctx.graph.opset < 13 ? [prod(dims.slice(axis)), 1] : [dims[axis] ?? 1, prod(dims.slice(axis + 1))];
    const dx = ctx.temp(`grad ${n.inputs[0]}`, dims);
    return {
      steps: [{ program: softmaxBackwardProgram(outer, length, inner), bind: { y: n.outputs[0], dy, dx } }],
      grads: [dx],
    };
  },
});

// ---- small backward kernels ----

/** dx = dy where x > 0, else 0 (vec4 units: backward/common.ts vectorElementProgram). Bindings: x, dy, dx, params. */
export function reluBackwardProgram(size: number): KernelProgram {
  return unaryBackwardProgram({ kind: 'relu' }, size);
}

/** dx[plane][i] = dy[plane] / spatial. Bindings: dy, dx, params. */
export function globalAveragePoolBackwardProgram(planes: number, spatial: number): KernelProgram {
  return elementProgram({
    label: `globalavgpool backward ${planes}×${spatial}`,
    key: 'globalavgpool-backward',
    total: planes * spatial,
    inputs: [input('dy')],
    outputs: [output('dx')],
    params: (P) => P.u32('spatial', spatial).f32('scale', 1 / spatial),
    body: '  dx[idx] = dy[idx / P.spatial] * P.scale;',
  });
}

export { gradientSumProgram } from './backward/index.ts';
