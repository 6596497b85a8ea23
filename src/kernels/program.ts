/// <reference types="@webgpu/types" />
// What every op family hands the runtime: a compute program (WGSL generated from the op's
// structure, its sizes in a uniform block, the dispatch size and the bindings in order), plus
// the pipeline cache keyed by the op's own key (op + the attributes and facts that shape the
// WGSL), so that layers differing only in size share one compile.
import type { GpuContext } from './gpu-context.ts';

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
}

/** Whether a program writes the binding (see ProgramBinding.writes). */
export function bindingWrites(b: ProgramBinding): boolean {
  return b.writes ?? b.access === 'read_write';
}

export interface KernelProgram {
  /** Human-readable, shows up in GPU error messages: "conv 3x3 s1 64→64 56x56". */
  label: string;
  /**
   * op + structure (layouts, variant, fused epilogue, alignment facts) + the shapes or
   * attributes baked into the WGSL: equal keys mean identical WGSL. Sizes that live in the
   * uniform `params` block are not part of it, so layers of different sizes share a pipeline
   * (lavapipe compiles each pipeline with LLVM: 0.1–1 s apiece).
   */
  key: string;
  wgsl: string;
  /** Workgroup counts (x, y, z). */
  dispatch: [number, number, number];
  bindings: ProgramBinding[];
  /** Contents of the 'params' uniform binding, when the program has one. */
  params?: ArrayBuffer;
}

/** A bound buffer range for one binding of a program. */
export interface BufferRange {
  buffer: GPUBuffer;
  offset?: number;
  size?: number;
}

/** A program with its pipeline and bind group ready: what a Plan encodes per run. */
export interface KernelStep {
  label: string;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  dispatch: [number, number, number];
  /** Buffers the step created for itself (its uniform block): destroyed with the plan. */
  owned: GPUBuffer[];
}

const caches = new WeakMap<GpuContext, Map<string, Promise<GPUComputePipeline>>>();

/**
 * The pipeline for a program: cached per context by the program's key, so the WGSL of a key is
 * generated and compiled once (GpuContext's own cache is keyed by the full WGSL text; this one
 * saves regenerating and hashing it).
 */
export function pipelineFor(gpu: GpuContext, program: KernelProgram): Promise<GPUComputePipeline> {
  let cache = caches.get(gpu);
  if (!cache) caches.set(gpu, (cache = new Map()));
  const hit = cache.get(program.key);
  if (hit) return hit;
  const compiled = gpu.createComputePipeline(program.label, program.wgsl);
  cache.set(program.key, compiled);
  compiled.catch(() => cache!.delete(program.key));
  return compiled;
}

/**
 * Compiles (or fetches) the pipeline and binds `ranges`, one per program binding in order,
 * the 'params' binding excepted: its uniform buffer is made here from program.params.
 */
export async function prepareStep(gpu: GpuContext, program: KernelProgram, ranges: BufferRange[]): Promise<KernelStep> {
  const wanted = program.bindings.filter((b) => b.name !== 'params');
  if (ranges.length !== wanted.length) {
    throw new Error(
      `${program.label}: ${wanted.length} bindings expected (${wanted.map((b) => b.name).join(', ')}), got ${ranges.length}`,
    );
  }
  const pipeline = await pipelineFor(gpu, program);
  const owned: GPUBuffer[] = [];
  let next = 0;
  const entries: GPUBindGroupEntry[] = program.bindings.map((b, i) => {
    if (b.name === 'params') {
      if (!program.params) throw new Error(`${program.label}: a 'params' binding but no params data`);
      const buffer = gpu.createBuffer(
        `${program.label} params`,
        program.params.byteLength,
        0x40 /* UNIFORM */ | 0x08 /* COPY_DST */,
      );
      gpu.upload(buffer, new Uint8Array(program.params));
      owned.push(buffer);
      return { binding: i, resource: { buffer } };
    }
    const r = ranges[next++];
    return {
      binding: i,
      resource: { buffer: r.buffer, offset: r.offset ?? 0, ...(r.size !== undefined ? { size: r.size } : {}) },
    };
  });
  const bindGroup = gpu.device.createBindGroup({
    label: program.label,
    layout: pipeline.getBindGroupLayout(0),
    entries,
  });
  return { label: program.label, pipeline, bindGroup, dispatch: program.dispatch, owned };
}

/** A uniform block: fields declared in order, emitted as a WGSL struct and packed as bytes. */
export class ParamBlock {
  readonly #fields: { name: string; type: 'u32' | 'i32' | 'f32'; value: number }[] = [];

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

  /** `struct Params {…}` and `var<uniform> P: Params` at `binding`. */
  wgsl(binding: number): string {
    const fields = this.#fields.length ? this.#fields : [{ name: 'unused', type: 'u32' as const, value: 0 }];
    return `struct Params {\n${fields.map((f) => `  ${f.name}: ${f.type},`).join('\n')}\n}\n@group(0) @binding(${binding}) var<uniform> P: Params;`;
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

/** Records steps into one compute pass (a pass per step would cost a barrier each on some backends). */
export function encodeSteps(encoder: GPUCommandEncoder, steps: readonly KernelStep[], label = 'run'): void {
  if (steps.length === 0) return;
  const pass = encoder.beginComputePass({ label });
  for (const s of steps) {
    pass.setPipeline(s.pipeline);
    pass.setBindGroup(0, s.bindGroup);
    pass.dispatchWorkgroups(s.dispatch[0], s.dispatch[1], s.dispatch[2]);
  }
  pass.end();
}

// ---- WGSL text helpers shared by the op families ----

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

/** Splits a workgroup count that may exceed the per-dimension limit over x and y. */
export function dispatch1d(workgroups: number, maxPerDim = 65535): [number, number, number] {
  if (workgroups <= maxPerDim) return [Math.max(1, workgroups), 1, 1];
  const y = Math.ceil(workgroups / maxPerDim);
  return [Math.ceil(workgroups / y), y, 1];
}

export function ceilDiv(a: number, b: number): number {
  return Math.ceil(a / b);
}

/** Storage usage for buffers the kernels read and write, and the host can fill and read back. */
export const STORAGE_USAGE = 0x80 /* STORAGE */ | 0x08 /* COPY_DST */ | 0x04; /* COPY_SRC */

/**
 * Runs a program (or several in order, over the same bindings by name) once on fresh buffers:
 * `inputs` fill the bindings they name, the other bindings get zeroed buffers of `outputSizes`
 * floats and are read back. For tests and benchmarks; the runtime uses prepareStep and its own
 * pooled buffers instead.
 */
export async function runProgram(
  gpu: GpuContext,
  programs: KernelProgram | KernelProgram[],
  inputs: Record<string, Float32Array>,
  outputSizes: Record<string, number>,
): Promise<Record<string, Float32Array>> {
  const list = Array.isArray(programs) ? programs : [programs];
  const first = list[0];
  const created: GPUBuffer[] = [];
  const buffers = new Map<string, GPUBuffer>();
  try {
    const names = first.bindings.filter((b) => b.name !== 'params').map((b) => b.name);
    for (const name of names) {
      const data = inputs[name];
      const floats = data ? data.length : outputSizes[name];
      if (floats === undefined) throw new Error(`${first.label}: no data or size for binding '${name}'`);
      const buffer = gpu.createBuffer(`${first.label}:${name}`, Math.max(16, roundUp4(floats * 4)), STORAGE_USAGE);
      created.push(buffer);
      if (data) gpu.upload(buffer, data);
      buffers.set(name, buffer);
    }
    const steps: KernelStep[] = [];
    for (const program of list) {
      const ranges = program.bindings
        .filter((b) => b.name !== 'params')
        .map((b) => {
          const buffer = buffers.get(b.name);
          if (!buffer) throw new Error(`${program.label}: binding '${b.name}' is not one of ${first.label}'s`);
          return { buffer };
        });
      const step = await prepareStep(gpu, program, ranges);
      created.push(...step.owned);
      steps.push(step);
    }
    await gpu.scope(`run '${first.label}'`, () => {
      const encoder = gpu.device.createCommandEncoder({ label: first.label });
      encodeSteps(encoder, steps, first.label);
      gpu.device.queue.submit([encoder.finish()]);
    });
    const out: Record<string, Float32Array> = {};
    for (const name of names) {
      if (inputs[name] || outputSizes[name] === undefined) continue;
      out[name] = new Float32Array(await gpu.read(buffers.get(name)!, outputSizes[name] * 4));
    }
    return out;
  } finally {
    for (const b of created) b.destroy();
  }
}

function roundUp4(bytes: number): number {
  return Math.ceil(bytes / 4) * 4;
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

/** A sliding window over NCHW planes (1-D ops run with H = 1): what Conv and the pools share. */
export interface Window2d {
  kernelH: number;
  kernelW: number;
  strideH: number;
  strideW: number;
  /** [top, left, bottom, right] */
  pads: [number, number, number, number];
  dilationH: number;
  dilationW: number;
}

/** A one-invocation-per-element program: inputs (read, never written), one output y, a uniform block. */
export interface ElementProgramSpec {
  label: string;
  /** The pipeline key (see KernelProgram.key). */
  key: string;
  /** Invocations: one per output element (or per row, for row-wise kernels). */
  total: number;
  /** Workgroup size (default ELEMENT_WORKGROUP). */
  workgroup?: number;
  /**
   * The input storage bindings before y, in order: the binding's role name, and its WGSL
   * variable where that differs (a role like 'var' is a WGSL keyword). Default: one input 'x'.
   * They are declared read_write (never written: `writes: false`) so that activations sharing
   * an arena with y can be bound (see ProgramBinding.access).
   */
  inputs?: { name: string; wgsl?: string }[];
  /** Declares the program's own uniforms, after `size` and `rowSize`. */
  params?: (P: ParamBlock) => void;
  /** WGSL statements run for `idx` < P.size (`idx` is the linear invocation index). */
  body: string;
}

/**
 * Builds the program for an element-wise kernel: the bindings (inputs, y, params), the uniform
 * block starting with size and rowSize, the linear dispatch and the bounds-checked entry point;
 * the op supplies only its body.
 */
export function elementProgram(spec: ElementProgramSpec): KernelProgram {
  const workgroup = spec.workgroup ?? ELEMENT_WORKGROUP;
  const inputs = spec.inputs ?? [{ name: 'x' }];
  const { dispatch, rowSize } = linearDispatch(spec.total, workgroup);
  const P = new ParamBlock().u32('size', spec.total).u32('rowSize', rowSize);
  spec.params?.(P);
  const wgsl = `
${inputs.map((b, i) => `@group(0) @binding(${i}) var<storage, read_write> ${b.wgsl ?? b.name}: array<f32>;`).join('\n')}
@group(0) @binding(${inputs.length}) var<storage, read_write> y: array<f32>;
${P.wgsl(inputs.length + 1)}
@compute @workgroup_size(${workgroup})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = ${LINEAR_INDEX};
  if (idx >= P.size) { return; }
${spec.body}
}`;
  return {
    label: spec.label,
    key: spec.key,
    wgsl,
    dispatch,
    bindings: [
      ...inputs.map((b) => ({ name: b.name, access: 'read_write' as const, writes: false })),
      { name: 'y', access: 'read_write' },
      { name: 'params', access: 'uniform' },
    ],
    params: P.bytes(),
  };
}
