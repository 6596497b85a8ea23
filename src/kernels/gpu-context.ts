/// <reference types="@webgpu/types" preserve="true" />
// The engine's one handle on WebGPU: picks and checks the adapter, opens the device with the
// adapter's full compute limits, turns GPU errors into typed exceptions that name the
// operation, and holds whatever must outlive the device (dawn.node's instance).
// Engine layer: no Node built-ins and no `webgpu` package here, so it runs on navigator.gpu.

import {
  GpuAdapterError,
  GpuDeviceLostError,
  GpuError,
  GpuInternalError,
  GpuOutOfMemoryError,
  GpuValidationError,
  gpuErrorFromWebGpu,
} from './errors.ts';

export interface AdapterReport {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  /** A CPU implementation (lavapipe/llvmpipe, SwiftShader, WARP): expect an order of magnitude less speed. */
  isSoftware: boolean;
  /** Features the adapter offers. */
  features: string[];
  /** Features this context enabled on its device (a subset of `features`). */
  deviceFeatures: string[];
  /** Limits of the device as opened (the adapter's maxima for the compute limits). */
  limits: Record<string, number>;
}

export interface GpuContextOptions {
  /** navigator.gpu in a browser, or the object dawn.node's create() returns. */
  gpu?: GPU;
  /** Held until dispose(): dawn.node's instance dies (and takes the process with it) when collected. */
  keepAlive?: unknown;
  /** Case-insensitive substring of the adapter's vendor, architecture, device or description. */
  adapterName?: string;
  powerPreference?: GPUPowerPreference;
  /** Limits beyond the compute ones requested by default; refused when the adapter cannot meet them. */
  requiredLimits?: Partial<Record<string, number>>;
}

export interface DeviceLoss {
  reason: string;
  message: string;
}

/** Limits requested at the adapter's maximum: large tensors and big workgroups need them. */
const COMPUTE_LIMITS_AT_MAX = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupsPerDimension',
] as const;

/** Enabled when offered: kernel variants and profiling depend on them. */
const OPTIONAL_FEATURES = ['timestamp-query', 'shader-f16', 'subgroups'] as const;

/** Uncaptured errors kept for the next scope() to report; more than this is noise. */
const MAX_RECORDED_UNCAPTURED = 16;
/** The largest single queue write of upload(): Dawn's staging for writes up to this size is
 * reused (measured on lavapipe: 256 MiB written in 4 MiB pieces raised RSS by 256 MiB, in one
 * write by 512 MiB). */
export const UPLOAD_PIECE_BYTES = 4 << 20;

/** A generated shader: its pipeline key, its label and its WGSL text. */
export interface GeneratedShader {
  key: string;
  label: string;
  wgsl: string;
}

export type ShaderObserver = (shader: GeneratedShader) => void;

export class GpuContext {
  readonly info: AdapterReport;

  #device: GPUDevice | null;
  // Held, not used: dawn.node's instance must outlive the device (platform.md, "dawn.node lifetime").
  #owned: { gpu: GPU; adapter: GPUAdapter; keepAlive: unknown } | null;
  #disposed = false;
  readonly #live = { count: 0, bytes: 0 };
  #lost: DeviceLoss | null = null;
  #uncaptured: GPUError[] = [];
  #uncapturedDropped = 0;
  /** Keyed by entry point + exact WGSL; holds the promise so concurrent requests share one compile. */
  #pipelines = new Map<string, Promise<GPUComputePipeline>>();
  #pipelinesCompiled = 0;
  #bytesUploaded = 0;
  #shaderObserver: ShaderObserver | undefined;

  private constructor(gpu: GPU, keepAlive: unknown, adapter: GPUAdapter, device: GPUDevice, info: AdapterReport) {
    this.#owned = { gpu, adapter, keepAlive };
    this.#device = device;
    this.info = info;

    device.lost.then((loss) => {
      // dispose() destroys the device on purpose; that is not a loss to report.
      if (!this.#disposed) this.#lost = { reason: loss.reason ?? 'unknown', message: loss.message ?? '' };
    });
    device.onuncapturederror = (event: GPUUncapturedErrorEvent) => {
      event.preventDefault(); // we report it at the next scope(); no console noise from the runtime
      if (this.#uncaptured.length < MAX_RECORDED_UNCAPTURED) this.#uncaptured.push(event.error);
      else this.#uncapturedDropped++;
    };
  }

  static async create(opts: GpuContextOptions = {}): Promise<GpuContext> {
    const gpu = opts.gpu ?? (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
    if (!gpu) {
      throw new GpuAdapterError(
        'no-webgpu',
        'no WebGPU is available (navigator.gpu is undefined). In a browser, use one with WebGPU enabled; ' +
          "in Node, use createNodeGpuContext() from the node entry ('onnx-graft/node'), which supplies dawn.node.",
      );
    }

    let adapter: GPUAdapter | null;
    try {
      adapter = await gpu.requestAdapter(opts.powerPreference ? { powerPreference: opts.powerPreference } : undefined);
    } catch (cause) {
      // dawn.node rejects here when its `adapter=` option matches nothing, listing what exists.
      throw new GpuAdapterError('request-failed', `requestAdapter() failed: ${messageOf(cause)}`, { cause });
    }
    if (!adapter) {
      throw new GpuAdapterError('no-adapter', 'requestAdapter() returned null: this system offers no WebGPU adapter');
    }

    const identity = await readAdapterIdentity(adapter);
    if (isNullBackend(identity)) {
      throw new GpuAdapterError(
        'null-backend',
        `the adapter is Dawn's null backend (${describeAdapter(identity)}), which runs nothing; ` +
          "drop the 'backend=null' option and use a real driver (on a machine without a GPU: Vulkan lavapipe)",
      );
    }
    if (opts.adapterName && !adapterMatchesName(identity, opts.adapterName)) {
      throw new GpuAdapterError(
        'name-mismatch',
        `no adapter matches '${opts.adapterName}'; the adapter found is ${describeAdapter(identity)}`,
      );
    }

    const requiredLimits = limitsToRequest(adapter, opts.requiredLimits ?? {});
    const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
    let device: GPUDevice;
    try {
      device = await adapter.requestDevice({ label: 'onnx-graft', requiredLimits, requiredFeatures });
    } catch (cause) {
      throw new GpuError(
        'request GPU device',
        `${describeAdapter(identity)} refused a device with limits ${JSON.stringify(requiredLimits)} ` +
          `and features [${requiredFeatures.join(', ')}]: ${messageOf(cause)}`,
        { cause },
      );
    }

    const info: AdapterReport = {
      ...identity,
      isSoftware: isSoftwareAdapter(identity),
      features: [...adapter.features].sort(),
      deviceFeatures: [...device.features].sort(),
      limits: limitsRecord(device.limits),
    };
    return new GpuContext(gpu, opts.keepAlive, adapter, device, info);
  }

  /**
   * Called with every shader the pipeline cache generates (once per pipeline key), before it
   * compiles: how the Node entry writes them to $GRAFT_DUMP_WGSL. undefined removes it.
   */
  setShaderObserver(observer: ShaderObserver | undefined): void {
    this.#shaderObserver = observer;
  }

  get shaderObserver(): ShaderObserver | undefined {
    return this.#shaderObserver;
  }

  /** The device; throws once the context is disposed (a destroyed device is useless). */
  get device(): GPUDevice {
    if (this.#disposed || !this.#device) throw new GpuError('use device', 'context disposed');
    return this.#device;
  }

  /** The adapter the device came from; throws once the context is disposed. */
  get adapter(): GPUAdapter {
    if (this.#disposed || !this.#owned) throw new GpuError('use adapter', 'context disposed');
    return this.#owned.adapter;
  }

  /** Why the device was lost, or null while it works. */
  get lost(): DeviceLoss | null {
    return this.#lost;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  hasFeature(name: string): boolean {
    return !this.#disposed && this.#device !== null && this.#device.features.has(name);
  }

  /**
   * Runs fn inside validation, out-of-memory and internal error scopes and throws the first GPU
   * error as a typed GpuError naming `operation`. Scopes nest, so fn may call scope() or read();
   * concurrent un-nested scopes can swap which operation an error is blamed on (WebGPU's scopes
   * are one stack per device), never lose it.
   */
  async scope<T>(operation: string, fn: () => T | Promise<T>): Promise<T> {
    const device = this.#usableDevice(operation);
    this.#throwRecordedUncaptured(operation);

    device.pushErrorScope('validation');
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('internal');
    let result: T | undefined;
    let thrown: unknown;
    let didThrow = false;
    try {
      result = await fn();
    } catch (error) {
      didThrow = true;
      thrown = error;
    }

    let scoped: (GPUError | null)[];
    try {
      // Popped in reverse push order: internal, out-of-memory, validation.
      scoped = await Promise.all([device.popErrorScope(), device.popErrorScope(), device.popErrorScope()]);
    } catch (popError) {
      if (this.#lost) throw this.#lostError(operation);
      throw new GpuError(operation, `could not pop GPU error scopes: ${messageOf(popError)}`, { cause: popError });
    }

    if (this.#lost) throw this.#lostError(operation);
    // A GpuError thrown by fn is already specific (e.g. formatted WGSL compile messages).
    if (didThrow && thrown instanceof GpuError) throw thrown;
    const [internal, outOfMemory, validation] = scoped;
    // A failed allocation makes every later use of its buffer invalid: out of memory is the cause.
    const gpuError = outOfMemory ?? validation ?? internal;
    if (gpuError) {
      const typed = gpuErrorFromWebGpu(operation, gpuError);
      if (didThrow) (typed as { cause?: unknown }).cause = thrown;
      throw typed;
    }
    if (didThrow) throw thrown;
    this.#throwRecordedUncaptured(operation);
    return result as T;
  }

  createBuffer(label: string, size: number, usage: GPUBufferUsageFlags): GPUBuffer {
    const operation = `create buffer '${label}'`;
    const device = this.#usableDevice(operation);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new GpuValidationError(operation, `size must be a non-negative integer number of bytes, got ${size}`);
    }
    // Checked here so the caller gets a synchronous, named error instead of an invalid buffer.
    const maxBufferSize = device.limits.maxBufferSize;
    if (size > maxBufferSize) {
      throw new GpuValidationError(
        operation,
        `${size} bytes exceeds this device's maxBufferSize of ${maxBufferSize} bytes (${describeAdapter(this.info)})`,
      );
    }
    const buffer = device.createBuffer({ label, size, usage });
    // Live-buffer accounting (liveBuffers): counted down once, by the first destroy().
    this.#live.count++;
    this.#live.bytes += size;
    const destroy = buffer.destroy.bind(buffer);
    let counted = true;
    buffer.destroy = () => {
      if (counted) {
        counted = false;
        this.#live.count--;
        this.#live.bytes -= size;
      }
      destroy();
    };
    return buffer;
  }

  /** Buffers made by createBuffer and not yet destroyed, and their bytes: what a leak check watches. */
  get liveBuffers(): { count: number; bytes: number } {
    return { ...this.#live };
  }

  /**
   * Writes data into buffer at offset (bytes) through the queue; both must be multiples of 4
   * bytes. Written in pieces of at most UPLOAD_PIECE_BYTES: Dawn stages each write in a buffer of
   * its size, which on a software adapter is host memory beside the data and the buffer itself.
   */
  upload(buffer: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    const operation = `upload to '${buffer.label}'`;
    const device = this.#usableDevice(operation);
    checkCopyRange(operation, buffer, offset, data.byteLength);
    for (let done = 0; done < data.byteLength; done += UPLOAD_PIECE_BYTES) {
      const bytes = Math.min(UPLOAD_PIECE_BYTES, data.byteLength - done);
      // The ArrayBuffer form takes byte offsets, whatever the view's element type.
      device.queue.writeBuffer(buffer, offset + done, data.buffer as ArrayBuffer, data.byteOffset + done, bytes);
    }
    this.#bytesUploaded += data.byteLength;
  }

  /** Bytes written by upload() on this context (weights, feeds): what tells that a second session
   * of a model uploaded no weights. */
  get bytesUploaded(): number {
    return this.#bytesUploaded;
  }

  /** Copies byteLength bytes from byteOffset of buffer (needs COPY_SRC usage) back to the host. */
  async read(buffer: GPUBuffer, byteLength?: number, byteOffset = 0): Promise<ArrayBuffer> {
    const operation = `read '${buffer.label}'`;
    const device = this.#usableDevice(operation);
    const length = byteLength ?? buffer.size - byteOffset;
    checkCopyRange(operation, buffer, byteOffset, length);
    if (length === 0) return new ArrayBuffer(0);

    return this.scope(operation, async () => {
      const staging = device.createBuffer({
        label: `${buffer.label} (readback)`,
        size: length,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      try {
        const encoder = device.createCommandEncoder({ label: operation });
        encoder.copyBufferToBuffer(buffer, byteOffset, staging, 0, length);
        device.queue.submit([encoder.finish()]);
        try {
          await staging.mapAsync(GPUMapMode.READ);
        } catch (cause) {
          if (this.#lost) throw this.#lostError(operation);
          throw new GpuError(operation, `mapping the readback buffer failed: ${messageOf(cause)}`, { cause });
        }
        // slice: the mapped range is detached by unmap().
        const bytes = staging.getMappedRange().slice(0);
        staging.unmap();
        return bytes;
      } finally {
        staging.destroy();
      }
    });
  }

  /**
   * A compute pipeline (layout 'auto') for wgsl's entryPoint, compiled once per exact WGSL text
   * and entry point. Compile errors come back as GpuValidationError with the compiler's messages.
   */
  createComputePipeline(label: string, wgsl: string, entryPoint = 'main'): Promise<GPUComputePipeline> {
    const operation = `compile pipeline '${label}'`;
    try {
      this.#usableDevice(operation);
    } catch (error) {
      return Promise.reject(error); // a promise-returning call fails by rejecting, never by throwing
    }
    const key = `${entryPoint}\u0000${wgsl}`;
    const cached = this.#pipelines.get(key);
    if (cached) return cached;
    const compiled = this.#compilePipeline(operation, label, wgsl, entryPoint);
    this.#pipelinesCompiled++;
    this.#pipelines.set(key, compiled);
    // A failed compile must not stay cached: the caller may fix the cause (e.g. a limit) and retry.
    compiled.catch(() => {
      if (this.#pipelines.get(key) === compiled) this.#pipelines.delete(key);
    });
    return compiled;
  }

  /** Pipeline compiles started on this context (cache misses of createComputePipeline): what
   * tells that a second session of a model compiled nothing new. */
  get pipelinesCompiled(): number {
    return this.#pipelinesCompiled;
  }

  /** Destroys the device and lets go of the adapter and dawn.node's instance. Safe to call twice. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const compiling = [...this.#pipelines.values()];
    this.#pipelines.clear();
    this.#uncaptured = [];
    const device = this.#device;
    this.#device = null;
    if (device) {
      device.onuncapturederror = null;
      device.destroy();
    }
    // Dropped only after destroy(): the instance must outlive the device, and every compile still
    // in flight (issued ahead by startPipelines): Dawn answers those later, and an instance
    // collected before then takes the process down.
    const owned = this.#owned;
    this.#owned = null;
    if (owned && compiling.length > 0) void Promise.allSettled(compiling).then(() => owned);
  }

  async #compilePipeline(
    operation: string,
    label: string,
    wgsl: string,
    entryPoint: string,
  ): Promise<GPUComputePipeline> {
    return this.scope(operation, async () => {
      const device = this.#usableDevice(operation);
      const module = device.createShaderModule({ label, code: wgsl });
      const compilation = await module.getCompilationInfo();
      const errors = compilation.messages.filter((m) => m.type === 'error');
      if (errors.length > 0) {
        throw new GpuValidationError(
          operation,
          `WGSL does not compile:\n${formatCompilationMessages(label, wgsl, errors)}`,
        );
      }
      try {
        return await device.createComputePipelineAsync({ label, layout: 'auto', compute: { module, entryPoint } });
      } catch (cause) {
        if (this.#lost) throw this.#lostError(operation);
        const reason = (cause as { reason?: string }).reason;
        const message = `pipeline creation failed (entry point '${entryPoint}'): ${messageOf(cause)}`;
        throw reason === 'internal'
          ? new GpuInternalError(operation, message, { cause })
          : new GpuValidationError(operation, message, { cause });
      }
    });
  }

  #usableDevice(operation: string): GPUDevice {
    if (this.#disposed || !this.#device) throw new GpuError(operation, 'context disposed');
    if (this.#lost) throw this.#lostError(operation);
    return this.#device;
  }

  #lostError(operation: string): GpuDeviceLostError {
    const loss = this.#lost ?? { reason: 'unknown', message: '' };
    return new GpuDeviceLostError(operation, loss.reason, loss.message);
  }

  #throwRecordedUncaptured(operation: string): void {
    const first = this.#uncaptured[0];
    if (!first) return;
    const more = this.#uncaptured.length - 1 + this.#uncapturedDropped;
    this.#uncaptured = [];
    this.#uncapturedDropped = 0;
    const prefix = `an earlier GPU call outside any error scope failed${more > 0 ? ` (and ${more} more)` : ''}: `;
    throw gpuErrorFromWebGpu(operation, first, prefix);
  }
}

// ---- helpers ----

type AdapterIdentity = Pick<AdapterReport, 'vendor' | 'architecture' | 'device' | 'description' | 'isFallbackAdapter'>;

async function readAdapterIdentity(adapter: GPUAdapter): Promise<AdapterIdentity> {
  // Older implementations only have the (since removed) requestAdapterInfo().
  const legacy = adapter as unknown as { requestAdapterInfo?: () => Promise<GPUAdapterInfo> };
  const info: Partial<GPUAdapterInfo> = adapter.info ?? (await legacy.requestAdapterInfo?.()) ?? {};
  return {
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    device: info.device ?? '',
    description: info.description ?? '',
    isFallbackAdapter: info.isFallbackAdapter ?? false,
  };
}

/** Dawn's null backend reports device 'null-backend' and empty vendor/architecture/description. */
export function isNullBackend(id: AdapterIdentity): boolean {
  const fields = [id.vendor, id.architecture, id.device, id.description];
  if (fields.some((f) => /null[\s_-]*backend/i.test(f))) return true;
  return id.vendor === '' && id.architecture === '' && id.description === '' && /^null\b/i.test(id.device);
}

export function isSoftwareAdapter(id: AdapterIdentity): boolean {
  const text = [id.vendor, id.architecture, id.device, id.description].join(' ');
  return id.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|software|microsoft basic render/i.test(text);
}

/**
 * Case-insensitive substring match on vendor, architecture, device or description. Also tried
 * with punctuation and spaces removed, because Dawn's adapter name ("llvmpipe (LLVM 15.0.6, 256
 * bits)") shows up in info.device only as a slug ("llvmpipe-llvm-15-0-6-256-bits-").
 */
export function adapterMatchesName(id: AdapterIdentity, name: string): boolean {
  const wanted = name.trim().toLowerCase();
  if (wanted === '') return true;
  const fields = [id.vendor, id.architecture, id.device, id.description].map((f) => f.toLowerCase());
  if (fields.some((f) => f.includes(wanted))) return true;
  const squash = (s: string) => s.replace(/[^a-z0-9]+/g, '');
  const wantedSquashed = squash(wanted);
  return wantedSquashed !== '' && fields.some((f) => squash(f).includes(wantedSquashed));
}

export function describeAdapter(id: AdapterIdentity): string {
  return (
    `vendor '${id.vendor}', architecture '${id.architecture}', device '${id.device}', ` +
    `description '${id.description}'${id.isFallbackAdapter ? ' (fallback adapter)' : ''}`
  );
}

function limitsToRequest(adapter: GPUAdapter, extra: Partial<Record<string, number>>): Record<string, number> {
  const offered = adapter.limits as unknown as Record<string, number | undefined>;
  const request: Record<string, number> = {};
  for (const name of COMPUTE_LIMITS_AT_MAX) {
    const max = offered[name];
    if (typeof max === 'number') request[name] = max;
  }
  for (const [name, wanted] of Object.entries(extra)) {
    if (wanted === undefined) continue;
    const max = offered[name];
    if (typeof max !== 'number') {
      throw new GpuError('request GPU device', `unknown limit '${name}' in requiredLimits`);
    }
    // For max* limits the adapter's value is a ceiling; for min*Alignment it is a floor.
    const refused = name.startsWith('min') ? wanted < max : wanted > max;
    if (refused) {
      throw new GpuError('request GPU device', `requiredLimits.${name} = ${wanted} but the adapter offers ${max}`);
    }
    request[name] = name.startsWith('min') ? wanted : Math.max(wanted, request[name] ?? 0);
  }
  return request;
}

function limitsRecord(limits: GPUSupportedLimits): Record<string, number> {
  const record: Record<string, number> = {};
  // WebIDL attributes live on the prototype, so for..in (not Object.keys) finds them.
  for (const name in limits) {
    const value = (limits as unknown as Record<string, unknown>)[name];
    if (typeof value === 'number') record[name] = value;
  }
  return record;
}

function checkCopyRange(operation: string, buffer: GPUBuffer, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 4 !== 0) {
    throw new GpuValidationError(operation, `byte offset ${offset} must be a non-negative multiple of 4`);
  }
  if (!Number.isSafeInteger(length) || length < 0 || length % 4 !== 0) {
    throw new GpuValidationError(operation, `byte length ${length} must be a non-negative multiple of 4`);
  }
  if (offset + length > buffer.size) {
    throw new GpuValidationError(
      operation,
      `bytes ${offset}..${offset + length} fall outside the buffer's ${buffer.size} bytes`,
    );
  }
}

function formatCompilationMessages(label: string, wgsl: string, messages: readonly GPUCompilationMessage[]): string {
  const lines = wgsl.split('\n');
  return messages
    .map((m) => {
      const where = m.lineNum > 0 ? `${label}:${m.lineNum}:${m.linePos}` : label;
      const source = m.lineNum > 0 ? lines[m.lineNum - 1] : undefined;
      const pointer = source !== undefined ? `\n    ${source}\n    ${' '.repeat(Math.max(0, m.linePos - 1))}^` : '';
      return `  ${where}: ${m.type}: ${m.message}${pointer}`;
    })
    .join('\n');
}

function messageOf(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).trim();
}

export { GpuError, GpuValidationError, GpuOutOfMemoryError, GpuInternalError, GpuDeviceLostError, GpuAdapterError };
