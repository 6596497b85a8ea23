/// <reference types="@webgpu/types" />
// What every op family hands the runtime: a compute program (declared with ./shader.ts: its
// bindings, uniform block and shader, the WGSL generated from them), and the pipeline cache
// keyed by the op's own key (op + the attributes and facts that shape the WGSL), so that layers
// differing only in size share one compile and a key's WGSL is generated once.
import type { GpuContext } from './gpu-context.ts';
import { wgslOf, type KernelProgram, type ParamBlock } from './shader.ts';

export {
  activationKey,
  activationParams,
  activationWgsl,
  bindingWrites,
  ceilDiv,
  defineProgram,
  dispatch1d,
  elementProgram,
  ELEMENT_WORKGROUP,
  f32,
  F32_LOWEST,
  i32,
  input,
  LINEAR_INDEX,
  linearDispatch,
  NO_ACTIVATION,
  output,
  ParamBlock,
  readOnly,
  renameBindings,
  u32,
  vectorElementProgram,
  wgslOf,
  type Activation,
  type ElementProgramSpec,
  type KernelProgram,
  type ProgramBinding,
} from './shader.ts';

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
 * generated (and shown to the context's shader observer) and compiled once; a hit builds no text.
 */
export function pipelineFor(gpu: GpuContext, program: KernelProgram): Promise<GPUComputePipeline> {
  let cache = caches.get(gpu);
  if (!cache) caches.set(gpu, (cache = new Map()));
  const hit = cache.get(program.key);
  if (hit) return hit;
  let compiled: Promise<GPUComputePipeline>;
  try {
    const wgsl = wgslOf(program);
    gpu.shaderObserver?.({ key: program.key, label: program.label, wgsl });
    compiled = gpu.createComputePipeline(program.label, wgsl);
  } catch (error) {
    return Promise.reject(error);
  }
  cache.set(program.key, compiled);
  compiled.catch(() => cache!.delete(program.key));
  return compiled;
}

/**
 * Starts the compile of every program's pipeline not yet cached (each key once) without waiting
 * for any: the caller awaits the returned promise after its own work (uploading weights), so
 * the compiles run beside it. The promise rejects with the first failure; it never goes
 * unobserved here, since prepareStep reports the same failure for the step that needs it.
 */
export function startPipelines(gpu: GpuContext, programs: Iterable<KernelProgram>): Promise<void> {
  const started = new Map<string, Promise<GPUComputePipeline>>();
  for (const program of programs) if (!started.has(program.key)) started.set(program.key, pipelineFor(gpu, program));
  const all = Promise.all(started.values()).then(() => undefined);
  all.catch(() => undefined);
  return all;
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
        GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
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

/** Storage usage for buffers the kernels read and write, and the host can fill and read back. */
export function storageUsage(): GPUBufferUsageFlags {
  // A function, not a constant: under Node the GPUBufferUsage global exists once a context does.
  return GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
}

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

/** A window with the input and output planes it maps between. */
export interface WindowPlanes extends Window2d {
  height: number;
  width: number;
  outH: number;
  outW: number;
}

/**
 * The uniforms every windowed kernel (conv's im2col and col2im, the pools and their backward)
 * reads: the plane and kernel sizes and strides as `sizes` (u32 or i32, as the kernel's index
 * arithmetic wants them), the top/left pads and the dilations as i32.
 */
export function windowUniforms(P: ParamBlock, w: WindowPlanes, sizes: 'u32' | 'i32'): ParamBlock {
  for (const [name, value] of [
    ['height', w.height],
    ['width', w.width],
    ['outH', w.outH],
    ['outW', w.outW],
    ['kernelH', w.kernelH],
    ['kernelW', w.kernelW],
    ['strideH', w.strideH],
    ['strideW', w.strideW],
  ] as const)
    P[sizes](name, value);
  return P.i32('padTop', w.pads[0])
    .i32('padLeft', w.pads[1])
    .i32('dilationH', w.dilationH)
    .i32('dilationW', w.dilationW);
}

/**
 * WGSL: the taps k of a window (kernel taps from `start`, `dilation` apart) that land in
 * [0, limit) are [windowTapFirst, windowTapEnd). Windowed loops run over those alone, so a huge
 * kernel over a small input costs the input's size, not the kernel's (u32 steps: start and limit
 * are up to 2^31 apart).
 */
export const WINDOW_TAPS_WGSL = `
fn windowTapFirst(start: i32, dilation: i32) -> i32 {
  if (start >= 0) { return 0; }
  return i32(min(u32(-start) / u32(dilation) + select(0u, 1u, u32(-start) % u32(dilation) != 0u), 0x7fffffffu));
}
fn windowTapEnd(start: i32, kernel: i32, dilation: i32, limit: i32) -> i32 {
  if (limit <= start) { return 0; }
  let span = u32(limit - start);
  return i32(min(u32(kernel), span / u32(dilation) + select(0u, 1u, span % u32(dilation) != 0u)));
}
`;
