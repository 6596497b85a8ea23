// Running kernel programs on their own, for tests: fresh buffers per binding, one submit, the
// outputs read back. The runtime never does this (Plan binds pooled buffers); these helpers
// live here so that production modules carry no test-only code.
import type { GpuContext } from '../../src/kernels/gpu-context.ts';
import { conv2dPrograms, type Conv2dParams } from '../../src/kernels/conv.ts';
import { convTrainSizes } from '../../src/kernels/conv-backward.ts';
import { gemmPrograms, type GemmProblem, type GemmVariant } from '../../src/kernels/gemm.ts';
import {
  encodeSteps,
  NO_ACTIVATION,
  prepareStep,
  renameBindings,
  storageUsage,
  type KernelProgram,
  type KernelStep,
} from '../../src/kernels/program.ts';

/**
 * Runs a program (or several in order, over bindings shared by name) once on fresh buffers:
 * `inputs` fill the bindings they name, the other bindings get zeroed buffers of `outputSizes`
 * floats and are read back.
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
    const names = [...new Set(list.flatMap((p) => p.bindings.filter((b) => b.name !== 'params').map((b) => b.name)))];
    for (const name of names) {
      const data = inputs[name];
      const floats = data ? data.length : outputSizes[name];
      if (floats === undefined) throw new Error(`${first.label}: no data or size for binding '${name}'`);
      const buffer = gpu.createBuffer(`${first.label}:${name}`, Math.max(16, Math.ceil(floats) * 4), storageUsage());
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

/** The conv as its single program (the tests' shapes fit one dispatch). Bindings: x, w (packed), y, [bias]. */
export function conv2dProgram(p: Conv2dParams, variant: GemmVariant): KernelProgram {
  const programs = conv2dPrograms(p, variant);
  if (programs.length !== 1) throw new Error(`conv ${JSON.stringify(p)}: too many rows for one dispatch`);
  return programs[0];
}

/**
 * y = col · Wᵀ (+ bias) over an explicit col matrix (im2colProgram's output) and the ONNX
 * weight: the check that im2col's column order is the ONNX weight's, which the dW GEMM relies
 * on. Bindings: col, w, y, [bias].
 */
export function conv2dColumnsForwardPrograms(p: Conv2dParams, variant: GemmVariant): KernelProgram[] {
  return renameBindings(gemmPrograms(conv2dColumnsForwardProblem(p), variant), { a: 'col', b: 'w', c: 'y' }, 'test');
}

export function conv2dColumnsForwardProblem(p: Conv2dParams): GemmProblem {
  const s = convTrainSizes(p);
  return {
    label: `conv over columns ${p.inChannels}→${p.outChannels} ${p.height}x${p.width}`,
    batch: p.group,
    M: s.M,
    N: s.groupOut,
    K: s.K,
    a: { kind: 'matrix', layout: 'mk', batchStride: s.M * s.K },
    b: { layout: 'nk', batchStride: s.groupOut * s.K, ld: s.K },
    c: { kind: 'nchw', spatial: s.spatial, imageStride: p.outChannels * s.spatial, batchChannelStride: s.groupOut },
    bias: p.hasBias ? { batchStride: s.groupOut, strideM: 0, strideN: 1 } : undefined,
    activation: NO_ACTIVATION,
  };
}
