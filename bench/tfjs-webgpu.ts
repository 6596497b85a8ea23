// TensorFlow.js with its WebGPU backend in Node, on dawn.node: WebGPU globals from the `webgpu`
// package and navigator.gpu = create([]). The Dawn instance dies when V8 collects the object
// create() returned (docs/platform.md, "dawn.node lifetime"), so this module holds it.
import { create, globals } from 'webgpu';

type Tf = typeof import('@tensorflow/tfjs');

// Held for the life of the process: the benchmark exits with process.exit, which Dawn allows.
let dawn: GPU | undefined;
let tf: Tf | undefined;

/** tf with the 'webgpu' backend active (imported lazily: the backend registers itself at import
 * time only when navigator.gpu exists). */
export async function tfjsWebGpu(): Promise<Tf> {
  if (tf) return tf;
  const target = globalThis as Record<string, unknown>;
  for (const [name, value] of Object.entries(globals as Record<string, unknown>)) {
    if (!(name in target)) target[name] = value;
  }
  dawn = create([]);
  Object.defineProperty(globalThis, 'navigator', { value: { gpu: dawn }, configurable: true, writable: true });
  const lib = await import('@tensorflow/tfjs');
  await import('@tensorflow/tfjs-backend-webgpu');
  if (!(await lib.setBackend('webgpu')) || lib.getBackend() !== 'webgpu')
    throw new Error('TF.js: the webgpu backend did not start');
  await lib.ready();
  tf = lib;
  return lib;
}

/** Whether TF.js's WebGPU device has timestamp queries (then tf.time's kernelMs is GPU time). */
export function tfjsHasTimestamps(lib: Tf): boolean {
  const backend = lib.backend() as unknown as { supportTimestampQuery?: boolean };
  return backend.supportTimestampQuery === true;
}
