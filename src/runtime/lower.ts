// Lowering: each node of a prepared Graph (or a fused chain of nodes) becomes kernel steps that
// read and write named values, through its op's lowering (src/ops/, one registry). View ops
// become aliases (no step, no copy); an op's lowering may absorb the node after it (Conv a
// BatchNormalization, and Conv, Gemm, MatMul and the element-wise ops a following activation
// through its epilogue hook). Unsupported ops and attributes are refused here, at create time,
// with the node and op named.
// A step that would bind one tensor to two of its bindings reads a copy instead
// (separateRepeatedBindings): activation inputs are declared read_write, and WebGPU refuses two
// writable bindings of one range.
import { AttributeReader } from '../graph/attributes.ts';
import { ModelError } from '../graph/errors.ts';
import type { Graph, Node } from '../graph/ir.ts';
import { readFloats, storedIdentity, toNumbers, type TensorValue } from '../graph/tensor.ts';
import { GpuError } from '../kernels/errors.ts';
import { unaryProgram } from '../kernels/elementwise.ts';
import { gemmPrograms, type GemmProblem, type GemmVariant } from '../kernels/gemm.ts';
import type { StridedFloatReader } from '../kernels/linear.ts';
import { NO_ACTIVATION, type Activation, type KernelProgram } from '../kernels/program.ts';
import {
  rawConstant,
  type BindingRef,
  type LowerContext,
  type LowerOptions,
  type OpDefinition,
  type StepSpec,
} from '../ops/op.ts';
import { findOp, OPS, RUNTIME_SUPPORTED_OPS } from '../ops/registry.ts';

export type { BindingRef, BindingView, ConstantBands, ConstantTensor, LowerOptions, StepSpec } from '../ops/op.ts';

export interface Lowered {
  steps: StepSpec[];
  /** value → the value whose buffer it shares (Reshape, Flatten, Dropout, …). */
  aliases: Map<string, string>;
  /** Shapes of values the lowering introduced (partial sums), not in the graph. */
  temporaries: Map<string, number[]>;
}

/**
 * A tensor that one storage binding would cover whole is larger than the binding limit. The
 * runtime catches it to compile the graph for slices of the batch instead (batch-slices.ts);
 * `bytes` and `limit` tell how much smaller a slice must be.
 */
export class BindingLimitError extends ModelError {
  constructor(
    message: string,
    where: ConstructorParameters<typeof ModelError>[1],
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(message, where);
    this.name = 'BindingLimitError';
  }
}

/** The value whose buffer `name` shares, following aliases to the end. */
export function resolveAlias(aliases: ReadonlyMap<string, string>, name: string): string {
  let n = name;
  for (let guard = 0; aliases.has(n) && guard < 10000; guard++) n = aliases.get(n)!;
  return n;
}

/** Ops whose output may be fused into the kernel before them as its epilogue. */
const EPILOGUE_OPS = Object.keys(OPS).filter((op) => {
  const r = OPS[op].runtime;
  return r.kind === 'steps' && r.epilogue !== undefined;
});

/** The output of this node is a view of input 0: no step. */
function isView(op: OpDefinition, node: Node): boolean {
  return op.runtime.kind === 'view' || (op.runtime.kind === 'steps' && op.runtime.viewWhen?.(node) === true);
}

/** Checks every node without a GPU: op supported, attributes accepted, dtypes float32. */
export function checkGraph(graph: Graph): void {
  for (const node of graph.nodes) new NodeLowering(graph, node, runtimeOp(graph, node), undefined).check();
}

/**
 * An assert of the kernels that a node reached (the op's parser should have refused what it
 * fires on) becomes a ModelError naming the node: a bug to report, never a bare Error. Typed
 * errors (the model's, the GPU's) pass through as they are.
 */
function asReportable(lowering: NodeLowering, e: unknown): unknown {
  if (e instanceof ModelError || e instanceof GpuError) return e;
  const error = lowering.error(`internal error: ${e instanceof Error ? e.message : String(e)}; please report`);
  error.cause = e;
  return error;
}

/** The op of a node the runtime runs, or an error naming it and listing the runtime's ops. */
function runtimeOp(graph: Graph, node: Node): OpDefinition {
  const op = findOp(node);
  if (!op || op.runtime.kind === 'folded') {
    throw new ModelError(
      `op ${node.opType}${node.domain ? ` (domain '${node.domain}')` : ''} is not supported by the runtime` +
        (op ? ' unless it folds to a constant (its inputs must be constants)' : '') +
        `; runtime ops: ${RUNTIME_SUPPORTED_OPS.join(', ')}`,
      { file: graph.source, node },
    );
  }
  return op;
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
    const op = runtimeOp(graph, node);
    const lowering = new NodeLowering(graph, node, op, options, fusion);
    try {
      lowering.check();
      if (isView(op, node)) {
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
    } catch (e) {
      throw asReportable(lowering, e);
    }
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
  const root = (name: string) => resolveAlias(aliases, name);
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

/** The runtime's side of an op's lowering: shapes, constants, bindings and fusion. */
class NodeLowering implements LowerContext {
  readonly attrs: AttributeReader;
  readonly opset: number;

  constructor(
    readonly graph: Graph,
    readonly node: Node,
    readonly op: OpDefinition,
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
    const steering = new Set(this.op.steeringInputs ?? []);
    n.inputs.forEach((name, index) => {
      if (!name || steering.has(index)) return;
      const v = this.graph.values.get(name);
      if (v?.dtype && v.dtype !== 'float32') {
        throw this.error(
          `input '${name}' has dtype ${v.dtype}; the runtime computes in float32 only (accepted: float32)`,
        );
      }
    });
    // Every kernel and buffer needs at least one element (refuseEmptyInputs says so for inputs;
    // a constant of size 0 reaches here).
    for (const name of [...n.inputs, ...n.outputs]) {
      const s = name && !steering.has(n.inputs.indexOf(name)) ? this.graph.values.get(name)?.shape : undefined;
      if (s?.some((d) => d === 0))
        throw this.error(
          `value '${name}' is [${s.join(', ')}], an empty tensor, which the runtime does not run (every dimension must be at least 1)`,
        );
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
    const runtime = this.op.runtime;
    if (runtime.kind !== 'folded') runtime.check?.(this);
  }

  async lower(): Promise<StepSpec[]> {
    const runtime = this.op.runtime;
    if (runtime.kind !== 'steps') throw this.error('op is not supported by the runtime');
    return runtime.lower(this);
  }

  /** A constant that feeds an alias straight into a graph output: copied by an identity kernel. */
  copyConstant(input: string, output: string): StepSpec[] {
    const data = this.floatConstant(input);
    return [
      this.step(unaryProgram({ kind: 'identity' }, data.length), [
        { constant: rawConstant(`const:${input}`, data) },
        { value: output },
      ]),
    ];
  }

  // ---- fusion ----

  absorbNext(value: string, ops: readonly string[], accept: (n: Node) => boolean = () => true): Node | undefined {
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

  absorbActivation(value: string): { activation: Activation; output: string } {
    let activation: Activation | undefined;
    const next = this.absorbNext(value, EPILOGUE_OPS, (c) => {
      const runtime = findOp(c)?.runtime;
      const ctx = {
        graph: this.graph,
        node: c,
        attrs: this.attributesOf(c),
        constantOf: (n: string) => this.constantOf(n),
      };
      activation = runtime?.kind === 'steps' ? runtime.epilogue?.(ctx) : undefined;
      return activation !== undefined;
    });
    if (!next || !activation) return { activation: NO_ACTIVATION, output: value };
    return { activation, output: next.outputs[0] };
  }

  // ---- helpers ----

  attributesOf(node: Node): AttributeReader {
    return new AttributeReader(node, this.graph.source);
  }

  gemmSteps(problem: GemmProblem, variant: GemmVariant, refs: BindingRef[]): StepSpec[] {
    try {
      return gemmPrograms(problem, variant, this.options!.maxWorkgroupsPerDimension).map((program) =>
        this.step(program, refs),
      );
    } catch (e) {
      throw this.error((e as Error).message);
    }
  }

  step(program: KernelProgram, refs: BindingRef[]): StepSpec {
    const spec = { program, refs, node: this.node };
    this.options?.onStep?.(spec);
    return spec;
  }

  inputToOutputStep(program: KernelProgram): StepSpec {
    return this.step(program, [this.ref(this.node.inputs[0]), { value: this.node.outputs[0] }]);
  }

  ref(name: string): BindingRef {
    if (this.isConstant(name)) return { constant: rawConstant(`const:${name}`, this.floatConstant(name)) };
    return { value: name };
  }

  temporary(name: string, dims: number[]): void {
    this.fusion!.temporaries.set(name, dims);
  }

  shape(input: number | string): number[] {
    const name = typeof input === 'number' ? this.node.inputs[input] : input;
    const s = this.fusion?.temporaries.get(name) ?? this.graph.values.get(name)?.shape;
    if (!s || s.some((d) => typeof d !== 'number')) throw this.error(`input '${name}' has no static shape`);
    return s as number[];
  }

  rank(i: number): number {
    return this.graph.values.get(this.node.inputs[i])?.shape?.length ?? 0;
  }

  outputShape(): number[] {
    const s = this.graph.values.get(this.node.outputs[0])?.shape;
    if (!s || s.some((d) => typeof d !== 'number'))
      throw this.error(`output '${this.node.outputs[0]}' has no static shape`);
    return s as number[];
  }

  isConstant(name: string): boolean {
    return this.graph.initializers.has(name);
  }

  constantOf(name: string): TensorValue | undefined {
    return this.graph.initializers.get(name)?.value;
  }

  floatConstant(name: string): Float32Array {
    const t = this.constantOf(name);
    if (!t) throw this.error(`'${name}' must be a constant`);
    if (t.data instanceof Float32Array) return t.data;
    if (t.dtype === 'float64') return Float32Array.from(t.data as Float64Array);
    throw this.error(`constant '${name}' has dtype ${t.dtype}; accepted: float32`);
  }

  sharingSource(name: string): Float32Array | string {
    const t = this.constantOf(name);
    const stored = t?.dtype === 'float32' ? storedIdentity(t) : undefined;
    return stored === undefined ? this.floatConstant(name) : `float32 stored in ${stored}`;
  }

  readConstantFloats(name: string, ...pieces: Parameters<StridedFloatReader>): void {
    const t = this.constantOf(name);
    readFloats(t?.dtype === 'float32' ? t : fromFloats(this.floatConstant(name)), ...pieces);
  }

  intsConstant(name: string, what: string): number[] {
    const t = this.constantOf(name);
    if (!t) throw this.error(`${what} ('${name}') must be a constant`);
    return toNumbers(t);
  }

  unusedExtraOutputs(what: string): void {
    const consumers = this.fusion?.consumers ?? this.graph.consumers();
    const outputs = new Set(this.graph.outputs.map((o) => o.name));
    for (const o of this.node.outputs.slice(1)) {
      if (o && ((consumers.get(o)?.length ?? 0) > 0 || outputs.has(o)))
        throw this.error(`${what} ('${o}') is used, which inference does not support`);
    }
  }

  checkBinding(bytes: number, what: string): void {
    const max = this.options?.maxBindingBytes;
    if (max !== undefined && bytes > max) {
      throw new BindingLimitError(
        `${what} takes ${bytes} bytes, over the binding limit of ${max} bytes (maxStorageBufferBindingSize, or a lower maxBindingBytes)`,
        { file: this.graph.source, node: this.node },
        bytes,
        max,
      );
    }
  }
}

/** A float32 tensor over `data` (one dimension): for reading a converted constant like a stored one. */
function fromFloats(data: Float32Array): TensorValue {
  return { dtype: 'float32', dims: [data.length], data };
}
