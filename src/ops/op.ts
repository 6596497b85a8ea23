// What one op is to the engine, in one record: its shape rule, how the runtime runs it (kernel
// steps, a view of its input, or nothing because it always folds to a constant) and its
// gradient rule (or why it has none). src/ops/registry.ts lists every op's record; shape
// inference, lowering and autodiff read only that list.
//
// A gradient rule speaks in value names: it reads forward values and upstream gradients by
// name, asks the context for fresh names (temporaries and gradients, with their dims) and
// returns the name of each input's gradient (an upstream gradient's own name when the op is an
// identity: no copy).
import type { AttributeReader } from '../graph/attributes.ts';
import type { ModelError } from '../graph/errors.ts';
import type { Graph, Node } from '../graph/ir.ts';
import type { ShapeRule } from '../graph/shape-context.ts';
import type { TensorValue } from '../graph/tensor.ts';
import type { GemmProblem, GemmVariant } from '../kernels/gemm.ts';
import type { StridedFloatReader } from '../kernels/linear.ts';
import type { SlicePartials } from '../kernels/backward/normalization.ts';
import type { Activation, KernelProgram } from '../kernels/program.ts';

/** An attribute an op accepts: its name, or its name and the opsets whose schema has it
 * (`until`: the last opset; `since`: the first). Any other attribute is refused. */
export type AttributeSpec = string | { name: string; since?: number; until?: number; replacedBy?: string };

/** consumed_inputs: an optimisation hint of opsets 1…5, without meaning since. */
export const LEGACY_CONSUMED: AttributeSpec = { name: 'consumed_inputs', until: 5 };

export interface OpDefinition {
  /** The attributes the op's ONNX schema defines (per opset); onnxruntime refuses any other. */
  attributes: readonly AttributeSpec[];
  /** Output dtypes and shapes from the inputs'; refuses attributes the engine does not accept. */
  shape: ShapeRule;
  /**
   * Inputs that only steer shapes (a Reshape's target, axes, pads, a training flag): integers
   * the runtime never binds, exempt from its float32-only check.
   */
  steeringInputs?: readonly number[];
  runtime: RuntimeLowering;
  gradient: GradientRule | NotDifferentiable;
}

export type RuntimeLowering =
  /** Kernel steps. */
  | {
      kind: 'steps';
      /** Refuses, before any GPU work, what the lowering cannot run (ctx.options is undefined here). */
      check?(ctx: LowerContext): void;
      lower(ctx: LowerContext): StepSpec[] | Promise<StepSpec[]>;
      /** When the output is a view of input 0 (Sum of one input): no step. */
      viewWhen?(node: Node): boolean;
      /** This op as the epilogue of the kernel before it (Relu after Conv), when it can be one. */
      epilogue?(ctx: EpilogueContext): Activation | undefined;
    }
  /** The output shares input 0's buffer (Reshape, Flatten, Dropout at inference, …). */
  | { kind: 'view'; check?(ctx: LowerContext): void }
  /** Runs only folded to a constant: refused by the runtime when an input is not constant. */
  | { kind: 'folded' };

export interface NotDifferentiable {
  notDifferentiable: string;
}

/** What an epilogue hook reads of the node to be fused. */
export interface EpilogueContext {
  readonly graph: Graph;
  readonly node: Node;
  readonly attrs: AttributeReader;
  /** The value of a constant (initializer) input, or undefined when it is absent or not constant. */
  constantOf(name: string): TensorValue | undefined;
}

// ---- lowering ----

/** A host tensor uploaded once per session (weights, packed weights, folded biases). */
export interface ConstantTensor {
  /** Identifies the uploaded form: the same key is uploaded once and shared. */
  key: string;
  /** The floats, or (a large packed weight) a maker of them band by band, so that the packed
   * form never lies whole on the host; a packed or folded form is computed when first read
   * (derivedConstant). */
  data: Float32Array | ConstantBands;
  /**
   * What `data` is computed from, when the inference sessions of one GPU context may share its
   * upload: equal recipes over sources of equal bytes give equal data, so a session finds the
   * buffer another one uploaded without computing `data` at all. Absent: never shared.
   */
  origin?: ConstantOrigin;
}

export interface ConstantOrigin {
  /** Everything besides the sources' bytes that `data` depends on: the transform, its layout and
   * parameters (dims, group, column range, folded epsilon). */
  recipe: string;
  /** The tensors `data` is computed from, in a fixed order: host floats (fingerprinted), or the
   * identity of a weight left in its file (LowerContext.sharingSource: nothing read). */
  sources: readonly (Float32Array | string)[];
}

/** A constant uploaded as it is (a raw weight or bias): shared wherever its bytes are equal. */
export function rawConstant(key: string, data: Float32Array): ConstantTensor {
  return { key, data, origin: { recipe: 'raw', sources: [data] } };
}

/**
 * A constant computed (packed, folded) only when its data is first read: a store that finds
 * its key uploaded (another plan of the session), or its origin shared by another session of
 * the context, skips the work. Assigning `data` (a store releasing it) drops `compute` and what
 * it holds.
 */
export function derivedConstant(
  key: string,
  origin: ConstantOrigin | undefined,
  compute: () => Float32Array | ConstantBands,
): ConstantTensor {
  let data: Float32Array | ConstantBands | undefined;
  let make: (() => Float32Array | ConstantBands) | undefined = compute;
  return {
    key,
    origin,
    get data(): Float32Array | ConstantBands {
      if (!data) {
        data = make!();
        make = undefined;
      }
      return data;
    },
    set data(value: Float32Array | ConstantBands) {
      data = value;
      make = undefined;
    },
  };
}

/** A tensor of `length` floats made `bandLength` floats at a time (the last band may be shorter). */
export interface ConstantBands {
  readonly length: number;
  readonly bandLength: number;
  /** Writes band `band` (floats [band·bandLength, …) of the tensor) into `out`, which is that long. */
  fill(band: number, out: Float32Array): void;
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
  /**
   * What runs a dense layer of at most GEMV_MAX_ROWS rows with constant weights: 'gemv' (the
   * split-K GEMV over packed weights, for GPUs), 'gemm' (the GEMM core over packed weights;
   * default) or 'dot' (the dot GEMV over the weights as stored, where a Gemm's transB stores
   * them [N][K]; else as 'gemm'). On lavapipe the GEMM core was measured faster than the split-K
   * GEMV (bench/probe-dense.ts), and the dot GEMV about as fast as the GEMM core while sparing
   * the host the transpose of the packing, so sessions choose 'dot' on software adapters.
   */
  denseKernel?: 'gemv' | 'gemm' | 'dot';
  /** Called with each step as soon as a lowering makes it (a session uploads its constants
   * then, so that packed weights never pile up on the host). */
  onStep?: (step: StepSpec) => void;
}

/** What an op's lowering sees: its node, the graph, and the runtime's helpers. */
export interface LowerContext extends EpilogueContext {
  readonly opset: number;
  /** The attributes of another node (one this lowering absorbs). */
  attributesOf(node: Node): AttributeReader;
  /** Undefined while only checking (checkGraph): no shapes need be static then. */
  readonly options: LowerOptions | undefined;
  error(message: string): ModelError;
  /** Static dims of an input (by index) or of any value (by name). */
  shape(input: number | string): number[];
  /** Rank of input i, known even when some dims are symbolic. */
  rank(i: number): number;
  outputShape(): number[];
  isConstant(name: string): boolean;
  floatConstant(name: string): Float32Array;
  /** A float constant as a source of a shared upload's origin: the identity of its bytes when
   * it stays in its file (nothing read), else its floats. */
  sharingSource(name: string): Float32Array | string;
  /** Pieces of a float constant, as a StridedFloatReader reads B: only those read when it stays in its file. */
  readConstantFloats(name: string, ...pieces: Parameters<StridedFloatReader>): void;
  intsConstant(name: string, what: string): number[];
  /** Refuses a node whose outputs after the first are read (inference computes only the first). */
  unusedExtraOutputs(what: string): void;
  /** Refuses a binding over the device's maxStorageBufferBindingSize, naming what it is. */
  checkBinding(bytes: number, what: string): void;
  step(program: KernelProgram, refs: BindingRef[]): StepSpec;
  /** A step of a program whose bindings are input 0, then output 0 (most one-input ops). */
  inputToOutputStep(program: KernelProgram): StepSpec;
  /** A value, or a constant uploaded under its own name. */
  ref(name: string): BindingRef;
  /** Declares a value the lowering introduces (a partial sum), not in the graph. */
  temporary(name: string, dims: number[]): void;
  /** The single consumer of `value` if it is one of `ops`, reads it once and is accepted: absorbed (no lowering of its own). */
  absorbNext(value: string, ops: readonly string[], accept?: (n: Node) => boolean): Node | undefined;
  /** A following op with an epilogue hook (Relu, LeakyRelu, Clip) fused into this node's kernel. */
  absorbActivation(value: string): { activation: Activation; output: string };
  gemmSteps(problem: GemmProblem, variant: GemmVariant, refs: BindingRef[]): StepSpec[];
}

// ---- training ----

/** One kernel step of a rule: the program and, per binding name (not 'params'), the value bound. */
export interface RuleStep {
  program: KernelProgram;
  bind: Record<string, string>;
  /** Per binding name: a small host constant bound instead of a value (a scale). */
  constants?: Record<string, ConstantTensor>;
  /**
   * Per binding name: bind only this byte range of the value (offset a multiple of 256 bytes,
   * the largest minStorageBufferOffsetAlignment WebGPU allows; bytes within maxBindingBytes):
   * how a rule reaches a block of a weight or gradient larger than one storage binding.
   */
  views?: Record<string, { offset: number; bytes: number }>;
  /**
   * The step draws random numbers (Dropout's mask): its params block holds a u32 seed at this
   * byte offset, which the training plan rewrites before every step (forward and backward of one
   * node get the same seed). At `firstOffset` a u32 holds the index of the dispatch's element 0
   * in the whole batch: a slice of a sliced batch starts at its first image's (`elements` is
   * the size of the value the step draws over, in this plan), so it draws the unsliced mask.
   */
  reseed?: { offset: number; firstOffset: number; elements: number };
  /** The step reduces over the images of the batch: how it runs on a batch held as slices. */
  batchReduction?: BatchReduction;
}

/**
 * A step that reduces over the images of the batch (BatchNormalization's statistics and its
 * gradient sums), as it runs when the batch is held as slices side by side (layer-major
 * slicing, src/train/training-plan.ts) instead of the step itself: each slice's `partial` step
 * writes its parts into its region of one buffer of every slice's partials (SlicePartials), then
 * `combine`, dispatched once per slice, reads them all and writes that slice's copy of the
 * step's outputs, as the unsliced step writes them (state, such as running statistics, by the
 * first slice's only).
 */
export interface BatchReduction {
  /** Floats in each part of one slice's partials. */
  partLength: number;
  /** The step over this plan's slice: values bound by binding name, then the bindings of its parts in order. */
  partial: { program: KernelProgram; bind: Record<string, string>; parts: string[] };
  /** The combine for one slice, `first` the one that updates state: values by binding name, and the partials' binding. */
  combine(
    layout: SlicePartials,
    first: boolean,
  ): {
    program: KernelProgram;
    bind: Record<string, string>;
    partials: string;
  };
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
  /** The device's maxStorageBufferBindingSize: a rule keeps every value it binds at most this large
   * (larger temporaries are processed in chunks). */
  readonly maxBindingBytes?: number;
  /** An error naming the file, node and op. */
  error(message: string): Error;
  /**
   * true: the training forward (BatchNormalization with trainable scale/bias on batch
   * statistics, Dropout drawing its mask); false: the evaluation forward of the same graph
   * (running statistics, Dropout an identity) over the same parameter buffers.
   */
  readonly training: boolean;
  /** Whether Dropout draws its mask in training (false: an identity in training too). */
  readonly dropout: boolean;
  /** Declares an initializer as state the training forward writes (BN running statistics): read back on export. */
  state(name: string): void;
}

export interface BackwardResult {
  steps: RuleStep[];
  /** Per node input: its gradient's value name, or undefined (not wanted, or not differentiable). */
  grads: (string | undefined)[];
}

export interface GradientRule {
  /**
   * The training forward: kernels that read parameters from their buffers as they are (no
   * packing, no folding). Absent, or returning undefined: the runtime's own lowering of the
   * node, unfused, is used (reads the initializers as they are on the host: fine for what does
   * not train).
   */
  forward?(ctx: RuleContext): RuleStep[] | undefined;
  /**
   * Inputs that never get a gradient and are never trainable parameters even when they are
   * float initializers (Dropout's ratio, Clip's bounds, BN's running statistics, Pad's value).
   * Absent inputs of this list are ignored.
   */
  nonDifferentiable?: readonly number[];
  /** dOutputs[i]: the gradient of output i (undefined when nothing flows back through it). */
  backward(ctx: RuleContext, dOutputs: (string | undefined)[]): BackwardResult;
}

/** The gradient of an op whose output is its input relabelled (Reshape, Flatten, …): dy itself. */
export const passThroughGradient: GradientRule = {
  backward(ctx, [dy]) {
    return { steps: [], grads: ctx.node.inputs.map((_, i) => (i === 0 && dy && ctx.wants(0) ? dy : undefined)) };
  },
};

export const FOLDED_NOT_DIFFERENTIABLE: NotDifferentiable = {
  notDifferentiable: 'it computes shapes or constants, folded away before training',
};

/**
 * The backward of a one-input op done by one kernel: dx has x's dims; `kernel` gives the
 * program and the forward values it reads by binding name (besides dy and dx).
 */
export function oneKernelBackward(
  ctx: RuleContext,
  dy: string | undefined,
  kernel: (dims: number[], x: string) => { program: KernelProgram; reads?: Record<string, string> },
): BackwardResult {
  const x = ctx.node.inputs[0];
  if (!dy || !ctx.wants(0)) return { steps: [], grads: [undefined] };
  const dims = ctx.shape(x);
  const dx = ctx.temp(`grad ${x}`, dims);
  const { program, reads } = kernel(dims, x);
  return { steps: [{ program, bind: { ...reads, dy, dx } }], grads: [dx] };
}
