// MaxPool and AveragePool (1-D and 2-D windows), GlobalAveragePool and GlobalMaxPool.
import type { AttributeReader } from '../graph/attributes.ts';
import { windowGeometry, type WindowGeometry } from '../graph/geometry.ts';
import type { InferredValue, ShapeRule } from '../graph/shape-context.ts';
import { showShape } from '../graph/shape-context.ts';
import { sizeOf } from '../graph/tensor.ts';
import {
  avgPool2dBackwardProgram,
  globalPoolBackwardProgram,
  maxPool2dBackwardProgram,
  type PoolBackwardParams,
} from '../kernels/backward/index.ts';
import { globalPoolProgram, pool2dProgram } from '../kernels/pool.ts';
import { oneKernelBackward, type AttributeSpec, type GradientRule, type OpDefinition } from './op.ts';

type PoolWindow = PoolBackwardParams & { countIncludePad: boolean };

/** A MaxPool's / AveragePool's window over spatial input dims: kernel_shape, ceil_mode, strides, dilations, pads. */
function poolGeometry(attrs: AttributeReader, spatial: number[]): WindowGeometry {
  // ceil_mode is true only when 1, as onnxruntime reads it (2 floors).
  const g = windowGeometry(attrs, spatial, attrs.ints('kernel_shape'), attrs.int('ceil_mode', 0) === 1);
  // onnxruntime refuses a pads attribute that reaches the kernel's size (a window of only padding).
  const rank = g.kernel.length;
  if (attrs.has('pads') && g.kernel.some((k, i) => g.pads[i] >= k || g.pads[i + rank] >= k))
    throw attrs.error(`pads [${g.pads}] must each be smaller than the kernel_shape [${g.kernel}] entry of its axis`);
  return g;
}

/** The window of a MaxPool / AveragePool over X [N, C, spatial…] (1-D as a 2-D window of height 1). */
function poolWindow(attrs: AttributeReader, x: number[]): PoolWindow {
  if (x.length !== 4 && x.length !== 3)
    throw attrs.error(`only 1-D and 2-D pooling is supported; X is [${x}] (accepted: rank 3 or 4)`);
  const oneD = x.length === 3;
  const g = poolGeometry(attrs, x.slice(2));
  const kernel = g.kernel;
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
    countIncludePad: attrs.int('count_include_pad', 0) !== 0, // onnxruntime: any non-zero value
  };
}

const poolShape: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  if (x.length < 3) throw ctx.error(`input X has rank ${x.length}; pooling needs [N, C, spatial…]`);
  const spatial = x.slice(2);
  if (spatial.some((d) => typeof d !== 'number'))
    throw ctx.error(`X's spatial dims ${showShape(spatial)} must be known`);
  const g = poolGeometry(ctx.attrs, spatial as number[]);
  const shape = [x[0], x[1], ...g.output];
  const out: InferredValue[] = [{ dtype: ctx.dtype(0), shape }];
  if (ctx.node.opType === 'MaxPool' && ctx.node.outputs.length > 1) out.push({ dtype: 'int64', shape: [...shape] });
  return out;
};

function windowPool(kind: 'max' | 'avg'): OpDefinition {
  const backward: GradientRule['backward'] = (ctx, [dy]) =>
    oneKernelBackward(ctx, dy, (dims, x) => {
      const p = poolWindow(ctx.attrs, dims);
      return kind === 'max'
        ? { program: maxPool2dBackwardProgram(p), reads: { x } }
        : { program: avgPool2dBackwardProgram(p) };
    });
  return {
    attributes: kind === 'max' ? MAX_POOL_ATTRIBUTES : AVERAGE_POOL_ATTRIBUTES,
    shape: poolShape,
    runtime: {
      kind: 'steps',
      check(ctx) {
        if (kind === 'max') ctx.unusedExtraOutputs('the Indices output');
        if (ctx.rank(0) > 4) throw ctx.error('only 1-D and 2-D pooling is supported');
      },
      lower(ctx) {
        const program = pool2dProgram({ kind, ...poolWindow(ctx.attrs, ctx.shape(0)) });
        return [ctx.inputToOutputStep(program)];
      },
    },
    gradient: { backward },
  };
}

const WINDOW_ATTRIBUTES = ['auto_pad', 'kernel_shape', 'pads', 'strides'];
const MAX_POOL_ATTRIBUTES: readonly AttributeSpec[] = [
  ...WINDOW_ATTRIBUTES,
  { name: 'ceil_mode', since: 10 },
  { name: 'dilations', since: 10 },
  { name: 'storage_order', since: 8 },
];
const AVERAGE_POOL_ATTRIBUTES: readonly AttributeSpec[] = [
  ...WINDOW_ATTRIBUTES,
  { name: 'ceil_mode', since: 10 },
  { name: 'count_include_pad', since: 7 },
  { name: 'dilations', since: 19 },
];

export const maxPool = windowPool('max');
export const averagePool = windowPool('avg');

const globalPoolShape: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  if (x.length < 3) throw ctx.error(`input X has rank ${x.length}; global pooling needs [N, C, spatial…]`);
  return [{ dtype: ctx.dtype(0), shape: [x[0], x[1], ...x.slice(2).map(() => 1)] }];
};

/** Planes (N·C) and the spatial size each pools over. */
function planesOf(x: number[]): { planes: number; spatial: number } {
  return { planes: x[0] * (x[1] ?? 1), spatial: sizeOf(x.slice(2)) };
}

function globalPool(kind: 'max' | 'avg'): OpDefinition {
  return {
    attributes: [],
    shape: globalPoolShape,
    runtime: {
      kind: 'steps',
      lower(ctx) {
        const { planes, spatial } = planesOf(ctx.shape(0));
        return [ctx.inputToOutputStep(globalPoolProgram(kind, planes, spatial))];
      },
    },
    gradient: {
      backward: (ctx, [dy]) =>
        oneKernelBackward(ctx, dy, (dims, x) => {
          const { planes, spatial } = planesOf(dims);
          return {
            program: globalPoolBackwardProgram(kind, planes, spatial),
            reads: kind === 'max' ? { x } : undefined,
          };
        }),
    },
  };
}

export const globalAveragePool = globalPool('avg');
export const globalMaxPool = globalPool('max');
