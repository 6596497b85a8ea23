// The one way to write a kernel: a program declares its bindings (role, access, element type,
// vec4 or scalar), its uniform block, its workgroup size and bounds guard, and supplies its body
// as a generator. The WGSL text (binding declarations, the Params struct, the entry point with
// its guard) is produced from that declaration only when the pipeline cache misses (wgslOf):
// the cache key is the program's own key, never the text.

/** One binding of a program, in @binding order (all in @group(0)). */
export interface ProgramBinding {
  /** What the runtime must bind here, by role; the op decides the order. 'params' is the
   * program's own uniform block, which prepareStep creates from `params`. */
  name: string;
  /**
   * The access mode the WGSL declares. WebGPU forbids a read-only and a writable binding of one
   * buffer in the same dispatch, but allows several writable ('read_write') bindings of one
   * buffer at non-overlapping ranges: inputs that carry activations are declared 'read_write'
   * (with `writes: false`) so that the runtime can place them in one shared arena beside the
   * step's output.
   */
  access: 'read' | 'read_write' | 'uniform';
  /** Whether the program writes this binding (default: access === 'read_write'). The runtime
   * takes a value's lifetime from it: a value starts at its first writer. */
  writes?: boolean;
  /** The WGSL variable, where the role is no valid name (a role like 'var' is a WGSL keyword). */
  variable?: string;
  /** Element type of the array: f32 (default), u32, i32, or a struct the prelude declares. */
  type?: ElementType | (string & {});
  /** An array of 4-vectors of `type` (vec4f …) instead of scalars. */
  vec4?: boolean;
  /** A fixed-length array (runtime-sized when absent). */
  length?: number;
  /** One value of `type`, not an array. */
  single?: boolean;
  /** A uniform binding other than the program's own 'params' block: its struct, by type name. */
  struct?: UniformStruct;
}

/** A uniform block the host packs itself (optimizer hyperparameters, per-tensor blocks). */
export interface UniformStruct {
  type: string;
  fields: readonly UniformField[];
}

export type ElementType = 'f32' | 'u32' | 'i32';

/** How a binding's array is declared beyond its access: variable name, element type, vec4. */
export type BindingLayout = Pick<ProgramBinding, 'variable' | 'type' | 'vec4' | 'length' | 'single'>;

/**
 * A tensor the program reads: declared read_write and never written, like every activation
 * input, so that the runtime may place it in an arena beside the step's other bindings.
 */
export function input(name: string, layout: BindingLayout = {}): ProgramBinding {
  return { name, access: 'read_write', writes: false, ...layout };
}

/** A tensor the program writes (or reads and updates). */
export function output(name: string, layout: BindingLayout = {}): ProgramBinding {
  return { name, access: 'read_write', ...layout };
}

/** A buffer only read and never beside a written range of its own buffer (a constant operand). */
export function readOnly(name: string, layout: BindingLayout = {}): ProgramBinding {
  return { name, access: 'read', ...layout };
}

/** A uniform block packed by the host (not the program's own 'params'), read in WGSL as `variable`. */
export function uniform(name: string, variable: string, struct: UniformStruct): ProgramBinding {
  return { name, access: 'uniform', variable, struct };
}

/** Whether a program writes the binding (see ProgramBinding.writes). */
export function bindingWrites(b: ProgramBinding): boolean {
  return b.writes ?? b.access === 'read_write';
}

/** Built-in inputs an entry point may take, with their WGSL types. */
const BUILTIN_TYPES = {
  global_invocation_id: 'vec3u',
  workgroup_id: 'vec3u',
  local_invocation_id: 'vec3u',
  local_invocation_index: 'u32',
  num_workgroups: 'vec3u',
  subgroup_invocation_id: 'u32',
} as const;

export type Builtin = keyof typeof BUILTIN_TYPES;

/** What the WGSL is generated from (besides the bindings and the uniform block). */
export interface ShaderDeclaration {
  /** `enable` directives (e.g. 'subgroups'). */
  enable?: readonly string[];
  /** Workgroup size: x, or [x, y, z]. */
  workgroupSize: number | readonly [number, number, number];
  /** The entry point's parameters: WGSL name → builtin. */
  builtins: Readonly<Record<string, Builtin>>;
  /**
   * The bounds guard at the top of the entry point: `let <index> = <expr>;` (when given) and
   * `if (<exit>) { return; }`.
   */
  guard?: { index?: { name: string; expr: string }; exit: string };
  /** WGSL between the uniform block and the entry point: workgroup memory, helper functions. */
  prelude?: () => string;
  /** The entry point's statements after the guard. */
  body: () => string;
}

export interface KernelProgram {
  /** Human-readable, shows up in GPU error messages: "conv 3x3 s1 64→64 56x56". */
  label: string;
  /**
   * op + structure (layouts, variant, fused epilogue, alignment facts) + the shapes or
   * attributes baked into the WGSL: equal keys mean identical WGSL. Sizes that live in the
   * uniform `params` block are not part of it, so layers of different sizes share a pipeline
   * (lavapipe compiles each pipeline with LLVM, a costly step per distinct text).
   */
  key: string;
  /** Workgroup counts (x, y, z). */
  dispatch: [number, number, number];
  /** The storage bindings in @binding order, then 'params' when the program has a uniform block. */
  bindings: ProgramBinding[];
  /** Contents of the 'params' uniform binding, when the program has one. */
  params?: ArrayBuffer;
  /** The uniform block's fields (the Params struct), when the program has one. */
  uniforms?: readonly UniformField[];
  /** Everything else the WGSL is generated from (wgslOf). */
  shader: ShaderDeclaration;
}

/** A kernel's declaration: storage bindings in order, its uniform block, its shader. */
export interface ProgramDeclaration extends ShaderDeclaration {
  label: string;
  key: string;
  dispatch: [number, number, number];
  /** Storage bindings in @binding order; the uniform block (when `params` is given) follows them. */
  bindings: readonly ProgramBinding[];
  params?: ParamBlock;
}

/** A program from its declaration; its WGSL is not built here (see wgslOf). */
export function defineProgram(d: ProgramDeclaration): KernelProgram {
  const { label, key, dispatch, bindings, params, ...shader } = d;
  return {
    label,
    key,
    dispatch,
    bindings: params ? [...bindings, { name: 'params', access: 'uniform' }] : [...bindings],
    ...(params ? { params: params.bytes(), uniforms: params.fields } : {}),
    shader,
  };
}

/** The WGSL text of a program, generated from its declaration. */
export function wgslOf(program: KernelProgram): string {
  const s = program.shader;
  const L: string[] = [];
  for (const e of s.enable ?? []) L.push(`enable ${e};`);
  const structs = new Set<string>();
  program.bindings.forEach((b, i) => {
    if (b.access === 'uniform') {
      const struct = b.struct ?? {
        type: 'Params',
        fields: program.uniforms?.length ? program.uniforms : [{ name: 'unused', type: 'u32' }],
      };
      if (!structs.has(struct.type))
        L.push(`struct ${struct.type} {\n${struct.fields.map((f) => `  ${f.name}: ${f.type},`).join('\n')}\n}`);
      structs.add(struct.type);
      L.push(`@group(0) @binding(${i}) var<uniform> ${b.variable ?? 'P'}: ${struct.type};`);
      return;
    }
    const type = b.type ?? 'f32';
    const element = b.vec4 ? `vec4${type[0]}` : type;
    const array = b.single ? element : b.length === undefined ? `array<${element}>` : `array<${element}, ${b.length}>`;
    L.push(`@group(0) @binding(${i}) var<storage, ${b.access}> ${b.variable ?? b.name}: ${array};`);
  });
  const prelude = s.prelude?.();
  if (prelude) L.push(prelude);
  const size = typeof s.workgroupSize === 'number' ? `${s.workgroupSize}` : s.workgroupSize.join(', ');
  L.push(`@compute @workgroup_size(${size})`);
  const args = Object.entries(s.builtins).map(([name, b]) => `@builtin(${b}) ${name}: ${BUILTIN_TYPES[b]}`);
  L.push(`fn main(${args.join(', ')}) {`);
  if (s.guard?.index) L.push(`  let ${s.guard.index.name} = ${s.guard.index.expr};`);
  if (s.guard) L.push(`  if (${s.guard.exit}) { return; }`);
  L.push(s.body());
  L.push('}');
  return L.join('\n');
}

export interface UniformField {
  name: string;
  type: ElementType;
}

/** A uniform block: fields declared in order, emitted as a WGSL struct and packed as bytes. */
export class ParamBlock {
  readonly #fields: (UniformField & { value: number })[] = [];

  u32(name: string, value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff)
      throw new Error(`param ${name} = ${value} is not a u32`);
    this.#fields.push({ name, type: 'u32', value });
    return this;
  }

  i32(name: string, value: number): this {
    if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff)
      throw new Error(`param ${name} = ${value} is not an i32`);
    this.#fields.push({ name, type: 'i32', value });
    return this;
  }

  f32(name: string, value: number): this {
    this.#fields.push({ name, type: 'f32', value });
    return this;
  }

  /** The fields in order (the Params struct). */
  get fields(): UniformField[] {
    return this.#fields.map(({ name, type }) => ({ name, type }));
  }

  bytes(): ArrayBuffer {
    const n = Math.max(4, Math.ceil(Math.max(1, this.#fields.length) / 4) * 4);
    const buffer = new ArrayBuffer(n * 4);
    const view = new DataView(buffer);
    this.#fields.forEach((f, i) => {
      if (f.type === 'u32') view.setUint32(i * 4, f.value, true);
      else if (f.type === 'i32') view.setInt32(i * 4, f.value, true);
      else view.setFloat32(i * 4, f.value, true);
    });
    return buffer;
  }
}

// ---- literals ----

/** The most negative finite f32: the start of a running max (WGSL has no -inf constant). */
export const F32_LOWEST = '-3.40282346638528859812e+38f';

/**
 * An f32 literal that WGSL parses exactly. WGSL rejects constant infinities and NaN (a const
 * bitcast of their bits is refused too), so ±Infinity become ±FLT_MAX: a Clip to ±∞ bounds by
 * ±FLT_MAX instead, which changes nothing for finite data.
 */
export function f32(x: number): string {
  const v = Math.fround(x);
  if (Number.isNaN(v)) throw new Error('NaN has no WGSL literal');
  if (v === Infinity) return '3.40282346638528859812e+38f';
  if (v === -Infinity) return F32_LOWEST;
  return `${String(v)}f`;
}

export function u32(x: number): string {
  if (!Number.isInteger(x) || x < 0 || x > 0xffffffff) throw new Error(`u32 literal out of range: ${x}`);
  return `${x}u`;
}

export function i32(x: number): string {
  if (!Number.isInteger(x) || x < -0x80000000 || x > 0x7fffffff) throw new Error(`i32 literal out of range: ${x}`);
  return x < 0 ? `(${x}i)` : `${x}i`;
}

// ---- NaN: WGSL leaves max/min/clamp of a NaN implementation-defined ----
// ONNX and onnxruntime let NaN through Relu, Clip, MaxPool…, so the kernels use ordered
// comparisons in select() (false for NaN), which keep the NaN operand, and test NaN by its bits
// where a comparison cannot (the compiler may assume x == x).

/** `v` clamped to [lo, hi] (hi when lo > hi, as ONNX Clip), NaN staying NaN; no bound: that side open. */
export function clampKeepingNaN(v: string, lo: string | undefined, hi: string | undefined): string {
  // min(max(v, lo), hi) as numpy's clip: the second test reads the first's result.
  const low = lo === undefined ? v : `select(${v}, ${lo}, ${v} < ${lo})`;
  return hi === undefined ? low : `select(${low}, ${hi}, ${low} > ${hi})`;
}

/** WGSL helpers isNan(x) and maxOrNaN(a, b) (NaN when either is NaN, else max), for a prelude. */
export const NAN_WGSL = `fn isNan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn maxOrNaN(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, isNan(a) || isNan(b)); }`;

// ---- activations: one snippet for the GEMM epilogue and the elementwise kernels ----

/** Activations fused into the epilogue of GEMM/conv and used standalone by elementwise. */
export type Activation =
  | { kind: 'none' }
  | { kind: 'relu' }
  | { kind: 'leakyRelu'; alpha: number }
  | { kind: 'clip'; min: number; max: number }
  | { kind: 'sigmoid' };

export const NO_ACTIVATION: Activation = { kind: 'none' };

export function activationKey(act: Activation): string {
  switch (act.kind) {
    case 'none':
    case 'relu':
    case 'sigmoid':
      return act.kind;
    case 'leakyRelu':
      return `leaky${Math.fround(act.alpha)}`;
    case 'clip':
      return `clip${Math.fround(act.min)},${Math.fround(act.max)}`;
  }
}

/** The activation's constants as uniforms act0, act1 (read by activationWgsl with 'params'). */
export function activationParams(P: ParamBlock, act: Activation): ParamBlock {
  return P.f32('act0', act.kind === 'clip' ? act.min : act.kind === 'leakyRelu' ? act.alpha : 0).f32(
    'act1',
    act.kind === 'clip' ? act.max : 0,
  );
}

/**
 * WGSL applying an activation of `kind` to scalar `v`: its constants written as literals from
 * `literals`, or read from the uniforms act0/act1 (activationParams) without it, so that one
 * pipeline serves every alpha or bound.
 */
export function activationWgsl(kind: Activation['kind'], v: string, literals?: Activation): string {
  switch (kind) {
    case 'none':
      return v;
    case 'relu':
      return `select(${v}, 0.0, ${v} < 0.0)`;
    case 'leakyRelu':
      return `select(${v} * ${literals?.kind === 'leakyRelu' ? f32(literals.alpha) : 'P.act0'}, ${v}, ${v} >= 0.0)`;
    case 'clip':
      // An infinite bound clips nothing (±∞ stays ±∞, as in onnxruntime): WGSL has no ∞ literal.
      return literals?.kind === 'clip'
        ? clampKeepingNaN(
            v,
            literals.min === -Infinity ? undefined : f32(literals.min),
            literals.max === Infinity ? undefined : f32(literals.max),
          )
        : clampKeepingNaN(v, 'P.act0', 'P.act1');
    case 'sigmoid':
      return `(1.0 / (1.0 + exp(-${v})))`;
  }
}

// ---- dispatch shapes ----

/** Splits a workgroup count that may exceed the per-dimension limit over x and y. */
export function dispatch1d(workgroups: number, maxPerDim = 65535): [number, number, number] {
  if (workgroups <= maxPerDim) return [Math.max(1, workgroups), 1, 1];
  const y = Math.ceil(workgroups / maxPerDim);
  return [Math.ceil(workgroups / y), y, 1];
}

export function ceilDiv(a: number, b: number): number {
  return Math.ceil(a / b);
}

/** Workgroup size of the one-invocation-per-element kernels. */
export const ELEMENT_WORKGROUP = 256;

/**
 * Dispatch for `total` invocations in workgroups of `workgroup`, spilling into y past the
 * per-dimension limit. The kernel's linear index is gid.x + gid.y · rowSize.
 */
export function linearDispatch(
  total: number,
  workgroup = ELEMENT_WORKGROUP,
  maxPerDim = 65535,
): { dispatch: [number, number, number]; rowSize: number } {
  const groups = Math.max(1, Math.ceil(total / workgroup));
  const dispatch = dispatch1d(groups, maxPerDim);
  return { dispatch, rowSize: dispatch[0] * workgroup };
}

/** WGSL for the linear index of a linearDispatch kernel (needs `gid` and P.rowSize). */
export const LINEAR_INDEX = 'gid.x + gid.y * P.rowSize';

// ---- the element-wise shapes most kernels take ----

/** A one-invocation-per-element program: tensors in, tensors out, a uniform block. */
export interface ElementProgramSpec {
  label: string;
  /** The pipeline key (see KernelProgram.key). */
  key: string;
  /** Invocations: one per output element (or per row, for row-wise kernels). */
  total: number;
  /** Workgroup size (default ELEMENT_WORKGROUP). */
  workgroup?: number;
  /** The tensors read, in order (default: one input 'x'); see input(). */
  inputs?: ProgramBinding[];
  /** The tensors written after them (default: one output 'y'); see output(). */
  outputs?: ProgramBinding[];
  /** Declares the program's own uniforms, after `size` and `rowSize`. */
  params?: (P: ParamBlock) => void;
  /** WGSL declared between the uniform block and the entry point (helper functions). */
  prelude?: string;
  /** WGSL statements run for `idx` < P.size (`idx` is the linear invocation index). */
  body: string;
}

/**
 * An element-wise kernel: the uniform block starting with size and rowSize, the linear dispatch
 * and the bounds-checked entry point; the op supplies only its bindings and body.
 */
export function elementProgram(spec: ElementProgramSpec): KernelProgram {
  const workgroup = spec.workgroup ?? ELEMENT_WORKGROUP;
  const { dispatch, rowSize } = linearDispatch(spec.total, workgroup);
  const P = new ParamBlock().u32('size', spec.total).u32('rowSize', rowSize);
  spec.params?.(P);
  return defineProgram({
    label: spec.label,
    key: spec.key,
    dispatch,
    bindings: [...(spec.inputs ?? [input('x')]), ...(spec.outputs ?? [output('y')])],
    params: P,
    workgroupSize: workgroup,
    builtins: { gid: 'global_invocation_id' },
    guard: { index: { name: 'idx', expr: LINEAR_INDEX }, exit: 'idx >= P.size' },
    ...(spec.prelude ? { prelude: () => spec.prelude! } : {}),
    body: () => spec.body,
  });
}

/** Invocations per workgroup of vectorElementProgram. */
const VECTOR_WORKGROUP = 256;
/** Units each invocation of vectorElementProgram takes, a workgroup apart (neighbouring lanes on neighbouring units). */
const UNITS_PER_INVOCATION = 4;

/** An element-wise program over vec4 units where it can (see vectorElementProgram). */
export interface VectorElementSpec {
  label: string;
  /** The pipeline key (see KernelProgram.key); the element type is appended. */
  key: string;
  /** Elements written. */
  total: number;
  /** The tensors read, in order, all indexed like the output (their vec4 is set here). */
  inputs: ProgramBinding[];
  /** The tensors written after them (default: one output 'dx'). */
  outputs?: ProgramBinding[];
  /** Declares the program's own uniforms, after `units` and `groupsX`. */
  params?: (P: ParamBlock) => void;
  /** WGSL statements for the unit at index `i`, every binding an array of `T` (vec4f or f32). */
  body: (T: string) => string;
}

/**
 * An element-wise program whose bindings are arrays of vec4f when 4 divides `total` (else f32),
 * each invocation taking UNITS_PER_INVOCATION units. On lavapipe a lane's load costs about the
 * same for a vec4 as for a float, so this runs several times as fast as a float per invocation.
 */
export function vectorElementProgram(spec: VectorElementSpec): KernelProgram {
  const vector = spec.total % 4 === 0;
  const T = vector ? 'vec4f' : 'f32';
  const units = vector ? spec.total / 4 : spec.total;
  const perGroup = VECTOR_WORKGROUP * UNITS_PER_INVOCATION;
  const dispatch = dispatch1d(Math.max(1, Math.ceil(units / perGroup)));
  const P = new ParamBlock().u32('units', units).u32('groupsX', dispatch[0]);
  spec.params?.(P);
  return defineProgram({
    label: spec.label,
    key: `${spec.key}|${T}`,
    dispatch,
    bindings: [...spec.inputs, ...(spec.outputs ?? [output('dx')])].map((b) => ({ ...b, vec4: vector })),
    params: P,
    workgroupSize: VECTOR_WORKGROUP,
    builtins: { wid: 'workgroup_id', lid: 'local_invocation_index' },
    body: () => `  let first = (wid.x + wid.y * P.groupsX) * ${perGroup}u + lid;
  for (var k = 0u; k < ${UNITS_PER_INVOCATION}u; k++) {
    let i = first + k * ${VECTOR_WORKGROUP}u;
    if (i >= P.units) { return; }
${spec.body(T)}
  }`,
  });
}

/**
 * Programs of a shared core (the GEMM) with their bindings named by the caller's roles: the
 * WGSL keeps its own variables, the key gets `kind` in front, and `label` replaces the label.
 */
export function renameBindings(
  programs: KernelProgram[],
  names: Readonly<Record<string, string>>,
  kind: string,
  label?: string,
): KernelProgram[] {
  return programs.map((program) => ({
    ...program,
    ...(label !== undefined ? { label } : {}),
    key: `${kind}|${program.key}`,
    bindings: program.bindings.map((b) =>
      names[b.name] ? { ...b, name: names[b.name], variable: b.variable ?? b.name } : b,
    ),
  }));
}
