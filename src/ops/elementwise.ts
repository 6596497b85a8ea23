// Broadcasting Add, Sub, Mul, Div and Sum (n inputs). A following activation runs as the
// kernel's epilogue; Sum of one input is a view of it.
import type { Dim } from '../graph/ir.ts';
import { broadcastShapes, dimsDisagree, showShape, type ShapeRule } from '../graph/shape-context.ts';
import { broadcastBackwardProgram, reduceToShapeProgram, type BroadcastBackwardOp } from '../kernels/backward/index.ts';
import { broadcastProgram, broadcastShape, MAX_BROADCAST_INPUTS, type BroadcastOp } from '../kernels/elementwise.ts';
import { MAX_RANK } from '../kernels/transform.ts';
import {
  type GradientRule,
  type LowerContext,
  type OpDefinition,
  type RuleStep,
  type StepSpec,
  LEGACY_CONSUMED,
} from './op.ts';

const broadcastShapeRule: ShapeRule = (ctx) => {
  if (ctx.attrs.has('broadcast') || ctx.attrs.has('axis')) {
    throw ctx.error(
      'legacy broadcast/axis attributes (opset < 7) are not supported; re-export the model with opset 7 or newer',
    );
  }
  const shapes: Dim[][] = [];
  for (let i = 0; i < ctx.inputCount; i++) shapes.push(ctx.shape(i));
  if (shapes.length === 0) throw ctx.error('needs at least one input');
  // Numpy-style broadcasting arrived with opset 7 (Sum: 8); before, without the legacy broadcast
  // attribute, the inputs must have one shape.
  const broadcastSince = ctx.node.opType === 'Sum' ? 8 : 7;
  if (ctx.opset < broadcastSince && shapes.some((s) => dimsDisagree(s, shapes[0]))) {
    throw ctx.error(
      `input shapes ${shapes.map(showShape).join(', ')} differ; before opset ${broadcastSince} ${ctx.node.opType} does not broadcast (accepted: inputs of one shape)`,
    );
  }
  return [{ dtype: ctx.dtype(0), shape: broadcastShapes(ctx, shapes) }];
};

function broadcastLowering(op: BroadcastOp): OpDefinition['runtime'] {
  return {
    kind: 'steps',
    check(ctx) {
      if ((ctx.graph.values.get(ctx.node.outputs[0])?.shape?.length ?? 0) > MAX_RANK)
        throw ctx.error(`rank > ${MAX_RANK}`);
    },
    viewWhen: op === 'add' ? (node) => node.opType === 'Sum' && node.inputs.length === 1 : undefined,
    lower: (ctx) => broadcastSteps(ctx, op),
  };
}

function broadcastSteps(ctx: LowerContext, op: BroadcastOp): StepSpec[] {
  const { activation, output } = ctx.absorbActivation(ctx.node.outputs[0]);
  const outDims = ctx.outputShape();
  const inputs = ctx.node.inputs.filter(Boolean);
  const steps: StepSpec[] = [];
  // Sum over more inputs than a kernel binds: partial sums into a temporary, then onward.
  let pending = inputs;
  let partial = 0;
  while (pending.length > MAX_BROADCAST_INPUTS) {
    const take = pending.slice(0, MAX_BROADCAST_INPUTS);
    const dims = take.map((i) => ctx.shape(i));
    const tmp = `${output}#partial${partial++}`;
    ctx.temporary(tmp, broadcastShape(dims));
    steps.push(
      ctx.step(broadcastProgram('add', dims, broadcastShape(dims)), [...take.map((i) => ctx.ref(i)), { value: tmp }]),
    );
    pending = [tmp, ...pending.slice(MAX_BROADCAST_INPUTS)];
  }
  const dims = pending.map((i) => ctx.shape(i));
  steps.push(
    ctx.step(broadcastProgram(op, dims, outDims, activation), [...pending.map((i) => ctx.ref(i)), { value: output }]),
  );
  return steps;
}

const sameDims = (a: number[], b: number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

function binaryGradient(op: BroadcastBackwardOp): GradientRule {
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

function binary(op: BroadcastOp): OpDefinition {
  return {
    // axis and broadcast: opsets 1…6's legacy broadcasting (refused node by node by the shape rule).
    attributes: [{ name: 'axis', until: 6 }, { name: 'broadcast', until: 6 }, LEGACY_CONSUMED],
    shape: broadcastShapeRule,
    runtime: broadcastLowering(op),
    gradient: binaryGradient(op),
  };
}

export const add = binary('add');
export const sub = binary('sub');
export const mul = binary('mul');
export const div = binary('div');

export const sum: OpDefinition = {
  attributes: [LEGACY_CONSUMED],
  shape: broadcastShapeRule,
  runtime: broadcastLowering('add'),
  gradient: {
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
  },
};
