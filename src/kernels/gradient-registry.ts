// The gradient-rule registry: per op, which kernels its training forward and its backward run,
// and which forward values they read (saved activations). Autodiff (src/train/autodiff.ts) asks
// gradientRule(op) and never special-cases an op. Rules live with their op family's kernels
// (conv-gradient.ts, linear-gradient.ts, gradients.ts for the rest) and register themselves here.
//
// A rule speaks in value names: it reads forward values and upstream gradients by name, asks the
// context for fresh names (temporaries and gradients, with their dims) and returns the name of
// each input's gradient (an upstream gradient's own name when the op is an identity: no copy).
import type { AttributeReader } from '../graph/attributes.ts';
import type { Graph, Node } from '../graph/ir.ts';
import type { GemmProblem, GemmVariant } from './gemm.ts';
import type { KernelProgram } from './program.ts';

/** One kernel step of a rule: the program and, per binding name (not 'params'), the value bound. */
export interface RuleStep {
  program: KernelProgram;
  bind: Record<string, string>;
  /**
   * Per binding name: bind only this byte range of the value (offset a multiple of 256 bytes,
   * the largest minStorageBufferOffsetAlignment WebGPU allows; bytes within maxBindingBytes):
   * how a rule reaches a block of a weight or gradient larger than one storage binding.
   */
  views?: Record<string, { offset: number; bytes: number }>;
  /**
   * The step draws random numbers (Dropout's mask): its params block holds a u32 seed at this
   * byte offset, which the training plan rewrites before every step (forward and backward of one
   * node get the same seed).
   */
  reseed?: { offset: number };
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
