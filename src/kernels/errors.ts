/// <reference types="@webgpu/types" />
// Typed GPU errors: every one names the operation that failed, so a user reading
// "GpuValidationError: compile pipeline 'conv2d 3x3': ..." knows where to look.

export class GpuError extends Error {
  /** What the engine was doing when the error surfaced, e.g. "read 'logits'". */
  readonly operation: string;
  /** The message without the operation in front. */
  readonly detail: string;

  constructor(operation: string, detail: string, options?: { cause?: unknown }) {
    super(operation ? `${operation}: ${detail}` : detail, options);
    this.name = new.target.name;
    this.operation = operation;
    this.detail = detail;
  }
}

/** The GPU rejected a call as invalid (bad WGSL, bad binding, size over a limit, ...). */
export class GpuValidationError extends GpuError {}

/** The GPU could not allocate memory for a buffer or pipeline. */
export class GpuOutOfMemoryError extends GpuError {}

/** The implementation failed on its own (driver bug, resource exhaustion it cannot classify). */
export class GpuInternalError extends GpuError {}

/** The device is gone; nothing on it can be used again. `reason` is WebGPU's GPUDeviceLostReason. */
export class GpuDeviceLostError extends GpuError {
  readonly reason: string;

  constructor(operation: string, reason: string, detail: string) {
    super(operation, `GPU device lost (${reason || 'unknown'}): ${detail || 'no detail given'}`);
    this.reason = reason;
  }
}

export type GpuAdapterProblem = 'no-webgpu' | 'no-adapter' | 'null-backend' | 'name-mismatch' | 'request-failed';

/** No usable adapter: none at all, Dawn's null backend, or not the one asked for by name. */
export class GpuAdapterError extends GpuError {
  readonly problem: GpuAdapterProblem;

  constructor(problem: GpuAdapterProblem, message: string, options?: { cause?: unknown }) {
    super('select GPU adapter', message, options);
    this.problem = problem;
  }
}

/** Maps a WebGPU GPUError (from an error scope or uncaptured-error event) onto our hierarchy. */
export function gpuErrorFromWebGpu(operation: string, error: GPUError, prefix = ''): GpuError {
  const message = prefix + error.message.trim();
  switch (error.constructor?.name) {
    case 'GPUOutOfMemoryError':
      return new GpuOutOfMemoryError(operation, message);
    case 'GPUInternalError':
      return new GpuInternalError(operation, message);
    default:
      // GPUValidationError, and anything unknown: validation is the common case.
      return new GpuValidationError(operation, message);
  }
}
