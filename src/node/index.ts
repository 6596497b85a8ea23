// Node entry: supplies WebGPU from dawn.node (the `webgpu` package) to the engine's GpuContext.
// Everything Node-specific about the GPU lives here: globals, the Dawn instance, env defaults.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { create, globals } from 'webgpu';
import { GpuContext, type GpuContextOptions, type ShaderObserver } from '../kernels/gpu-context.ts';
import { GpuAdapterError, GpuError } from '../kernels/errors.ts';
import { writeTextAtomic } from './atomic-write.ts';
import { withoutDawnLimitWarnings } from './dawn-warnings.ts';

export { GpuContext } from '../kernels/gpu-context.ts';
export type {
  AdapterReport,
  GpuContextOptions,
  DeviceLoss,
  GeneratedShader,
  ShaderObserver,
} from '../kernels/gpu-context.ts';
export * from '../kernels/errors.ts';

export interface NodeGpuContextOptions {
  /** Case-insensitive substring of the adapter's vendor/architecture/device/description. Default: $GRAFT_ADAPTER. */
  adapterName?: string;
  /** Options for dawn.node's create(), e.g. ['backend=vulkan'] or ['enable-dawn-features=dump_shaders']. */
  dawnOptions?: string[];
  requiredLimits?: Partial<Record<string, number>>;
  powerPreference?: GPUPowerPreference;
  /** Write every generated shader into this folder (see shaderFileWriter). Default: $GRAFT_DUMP_WGSL. */
  dumpWgsl?: string;
  /**
   * 'hide' keeps Dawn's two "max...BuffersPerPipelineLayout artificially reduced" warnings off
   * stderr (see dawn-warnings.ts). Default: $GRAFT_DAWN_WARNINGS, else 'show'; the graft CLI sets 'hide'.
   */
  dawnWarnings?: 'show' | 'hide';
}

const NO_ADAPTER_FIX =
  'no WebGPU adapter: install a Vulkan driver, e.g. `sudo bash scripts/setup-system.sh` (Mesa lavapipe from bookworm-backports)';

export async function createNodeGpuContext(opts: NodeGpuContextOptions = {}): Promise<GpuContext> {
  const gpu = await openNodeGpuContext(opts);
  const dumpWgsl = opts.dumpWgsl ?? (process.env.GRAFT_DUMP_WGSL?.trim() || undefined);
  if (dumpWgsl) gpu.setShaderObserver(shaderFileWriter(dumpWgsl));
  return gpu;
}

/**
 * A shader observer writing each generated shader to `dir` (created when missing) as
 * <pipeline key, sanitised>.wgsl, the key and label in a header comment. The file name keeps
 * the key's readable start and ends with a hash of the whole key, so distinct keys never share
 * a file and long keys stay within file-name limits.
 */
export function shaderFileWriter(dir: string): ShaderObserver {
  fs.mkdirSync(dir, { recursive: true });
  return ({ key, label, wgsl }) => {
    const readable = key.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 100);
    const hash = createHash('sha256').update(key).digest('hex').slice(0, 12);
    const header = `// pipeline key: ${key.replace(/\n/g, ' ')}\n// label: ${label.replace(/\n/g, ' ')}\n`;
    writeTextAtomic(path.join(dir, `${readable}-${hash}.wgsl`), header + wgsl);
  };
}

async function openNodeGpuContext(opts: NodeGpuContextOptions): Promise<GpuContext> {
  installWebGpuGlobals();
  const adapterName = opts.adapterName ?? (process.env.GRAFT_ADAPTER?.trim() || undefined);
  const dawnOptions = opts.dawnOptions ?? [];
  const hideWarnings = dawnWarningsHidden(opts.dawnWarnings);
  const common = { adapterName, requiredLimits: opts.requiredLimits, powerPreference: opts.powerPreference };

  try {
    return await openOnDawn(dawnOptions, hideWarnings, common);
  } catch (error) {
    const retryByDawnName =
      error instanceof GpuAdapterError &&
      error.problem === 'name-mismatch' &&
      adapterName !== undefined &&
      !dawnOptions.some((o) => o.startsWith('adapter='));
    if (!retryByDawnName) throw withNodeAdvice(error);
    // Dawn hands back only its preferred adapter; its own `adapter=` option (a case-sensitive
    // substring of the driver's adapter name) reaches the others.
    try {
      return await openOnDawn([...dawnOptions, `adapter=${adapterName}`], hideWarnings, common);
    } catch (second) {
      throw new GpuAdapterError(
        'name-mismatch',
        `${error.detail}; Dawn's adapter=${adapterName} found none either: ${messageOf(second)}`,
        { cause: second },
      );
    }
  }
}

async function openOnDawn(
  dawnOptions: string[],
  hideWarnings: boolean,
  opts: Omit<GpuContextOptions, 'gpu' | 'keepAlive'>,
): Promise<GpuContext> {
  const dawnInstance = create(dawnOptions);
  const gpu = hideWarnings ? quietAdapterRequests(dawnInstance) : dawnInstance;
  // The context owns the instance: if V8 collects it while the device lives, Dawn crashes the process.
  return GpuContext.create({ ...opts, gpu, keepAlive: dawnInstance });
}

function dawnWarningsHidden(option: string | undefined): boolean {
  const [value, source] =
    option !== undefined
      ? [option, 'dawnWarnings']
      : [process.env.GRAFT_DAWN_WARNINGS?.trim() || 'show', 'GRAFT_DAWN_WARNINGS'];
  if (value !== 'show' && value !== 'hide') {
    throw new GpuError('create GPU context', `${source} is '${value}'; accepted: 'show' or 'hide'`);
  }
  return value === 'hide';
}

/** `gpu` whose requestAdapter() keeps Dawn's limit warnings (printed inside the call) off stderr. */
function quietAdapterRequests(gpu: GPU): GPU {
  return {
    __brand: gpu.__brand,
    wgslLanguageFeatures: gpu.wgslLanguageFeatures,
    getPreferredCanvasFormat: () => gpu.getPreferredCanvasFormat(),
    requestAdapter: (options) => withoutDawnLimitWarnings(() => gpu.requestAdapter(options)),
  };
}

let globalsInstalled = false;

/** Dawn's objects expect GPUBufferUsage, GPUMapMode, ... as globals, as in a browser. */
function installWebGpuGlobals(): void {
  if (globalsInstalled) return;
  const target = globalThis as Record<string, unknown>;
  for (const [name, value] of Object.entries(globals as Record<string, unknown>)) {
    if (!(name in target)) target[name] = value;
  }
  globalsInstalled = true;
}

function withNodeAdvice(error: unknown): unknown {
  if (!(error instanceof GpuAdapterError)) return error;
  if (error.problem === 'no-adapter') return new GpuAdapterError('no-adapter', NO_ADAPTER_FIX, { cause: error });
  if (error.problem === 'null-backend') {
    return new GpuAdapterError(
      'null-backend',
      `${error.detail}. If this machine has no real adapter: ${NO_ADAPTER_FIX}`,
      { cause: error },
    );
  }
  return error;
}

function messageOf(error: unknown): string {
  if (error instanceof GpuError) return error.detail;
  return error instanceof Error ? error.message : String(error);
}

export { loadModelFile, decodeModelFile, saveModelFile, externalDataReader, readBytes } from './files.ts';
export {
  FileError,
  type FileProblem,
  checkReadableFile,
  checkWritableFolder,
  sweepStaleTemporaries,
  writeFileAtomic,
  writeTextAtomic,
} from './atomic-write.ts';
export * as data from '../data/node/index.ts';
export { saveCheckpoint, loadCheckpoint, loadWeightsFile } from './checkpoint-files.ts';
