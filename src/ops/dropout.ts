// Dropout: at inference (and in evaluation) a view of its input; in training (unless the plan
// turns it off) a mask drawn from a counter-based hash of (seed, element), the seed new every
// step and shared by the node's forward and backward.
import type { InferredValue } from '../graph/shape-context.ts';
import { sizeOf, toNumbers } from '../graph/tensor.ts';
import { dropoutBackwardProgram, dropoutForwardProgram } from '../kernels/backward/index.ts';
import { type OpDefinition, type RuleContext, LEGACY_CONSUMED } from './op.ts';

/** Where a training plan rewrites dropoutForwardProgram's and dropoutBackwardProgram's params
 * (size, rowSize, seed, threshold, scale, first): the seed and the first element's index. */
const DROPOUT_RESEED = { offset: 8, firstOffset: 20 };

/** Dropout's ratio when it draws a mask in this forward, else undefined (an identity). */
function activeDropout(ctx: RuleContext): number | undefined {
  if (!ctx.training || !ctx.dropout) return undefined;
  let ratio = ctx.attrs.float('ratio', 0.5);
  if (ctx.graph.opset >= 12) {
    const name = ctx.node.inputs[1];
    const init = name ? ctx.graph.initializers.get(name) : undefined;
    if (name && !init) throw ctx.error(`Dropout ratio ('${name}') must be an initializer to train through this node`);
    ratio = init ? toNumbers(init.value)[0] : 0.5;
  }
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

export const dropout: OpDefinition = {
  attributes: [
    { name: 'ratio', until: 11, replacedBy: 'the ratio input' },
    { name: 'is_test', until: 6 },
    LEGACY_CONSUMED,
    { name: 'seed', since: 12 },
  ],
  shape: (ctx) => {
    // ONNX's shape inference (and so onnxruntime) requires both steering inputs to be scalars.
    for (const [index, what] of [
      [1, 'ratio'],
      [2, 'training_mode'],
    ] as const) {
      if (ctx.opset >= 12 && ctx.node.inputs[index] && ctx.shape(index).length !== 0)
        throw ctx.error(`its ${what} input must be a scalar (rank 0), got shape [${ctx.shape(index).join(', ')}]`);
    }
    const out: InferredValue[] = [{ dtype: ctx.dtype(0), shape: [...ctx.shape(0)] }];
    if (ctx.node.outputs.length > 1)
      out.push({ dtype: ctx.opset >= 10 ? 'bool' : ctx.dtype(0), shape: [...ctx.shape(0)] });
    return out;
  },
  steeringInputs: [1, 2],
  runtime: {
    kind: 'view',
    check(ctx) {
      const n = ctx.node;
      if (ctx.opset >= 12 && n.inputs[2]) {
        const t = ctx.constantOf(n.inputs[2]);
        if (!t || toNumbers(t)[0] !== 0) throw ctx.error('training_mode must be a constant false (inference only)');
      }
      ctx.unusedExtraOutputs('the mask output');
    },
  },
  gradient: {
    nonDifferentiable: [1, 2],
    forward(ctx) {
      const ratio = activeDropout(ctx);
      if (ratio === undefined) return undefined;
      const n = ctx.node;
      return [
        {
          program: dropoutForwardProgram(sizeOf(ctx.shape(n.inputs[0])), ratio, 0),
          bind: { x: n.inputs[0], y: n.outputs[0] },
          reseed: { ...DROPOUT_RESEED, elements: sizeOf(ctx.shape(n.inputs[0])) },
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
      const dims = ctx.shape(n.inputs[0]);
      const dx = ctx.temp(`grad ${n.inputs[0]}`, dims);
      grads[0] = dx;
      return {
        steps: [
          {
            program: dropoutBackwardProgram(sizeOf(dims), ratio, 0),
            bind: { dy, dx },
            reseed: { ...DROPOUT_RESEED, elements: sizeOf(dims) },
          },
        ],
        grads,
      };
    },
  },
};
