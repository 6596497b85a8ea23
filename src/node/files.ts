// Node-only file access for models: reading with external data, and atomic writes.
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import { encodeModel, type EncodeOptions } from '../graph/codec.ts';
import { ModelError } from '../graph/errors.ts';
import type { Graph } from '../graph/ir.ts';
import { loadModel, type PrepareOptions } from '../graph/load.ts';
import { decodeModel, type ExternalDataReader } from '../graph/codec.ts';
import { readableFileProblem, writeFileAtomic } from './atomic-write.ts';

export { writeFileAtomic } from './atomic-write.ts';

/** A file's bytes as a Uint8Array that owns its memory (small reads come from a shared pool). */
export function readBytes(path: string): Uint8Array {
  const buf = readFileSync(path);
  return new Uint8Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

/** Reads external-data files next to `modelPath`, refusing locations that escape its folder. */
export function externalDataReader(modelPath: string): ExternalDataReader {
  const folder = dirname(modelPath);
  return (location, offset, length) => {
    if (isAbsolute(location) || normalize(location).startsWith('..')) {
      throw new ModelError(`external data location '${location}' must be a relative path inside the model's folder`, {
        file: modelPath,
      });
    }
    const path = join(folder, location);
    if (!existsSync(path))
      throw new ModelError(`external data file '${location}' (looked for ${path}) does not exist`, { file: modelPath });
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      const want = length ?? size - offset;
      if (offset + want > size) {
        throw new ModelError(
          `external data file '${location}' has ${size} bytes; the tensor needs ${want} bytes at offset ${offset}`,
          { file: modelPath },
        );
      }
      const out = new Uint8Array(want);
      let done = 0;
      while (done < want) {
        const n = readSync(fd, out, done, want - done, offset + done);
        if (n === 0) break;
        done += n;
      }
      return out.subarray(0, done);
    } finally {
      closeSync(fd);
    }
  };
}

function readModelBytes(path: string): Uint8Array {
  if (!existsSync(path)) throw new ModelError('no such file', { file: path });
  const problem = readableFileProblem(path, 'an .onnx file');
  if (problem) throw new ModelError(problem.detail, { file: path });
  return readBytes(path);
}

/** Decodes a model file (no folding or inference): for round trips and tools. */
export function decodeModelFile(path: string): Graph {
  return decodeModel(readModelBytes(path), { file: path, readExternal: externalDataReader(path) });
}

/** Loads a model file ready for the runtime: decoded, folded, every shape inferred. */
export function loadModelFile(path: string, options: PrepareOptions = {}): Graph {
  return loadModel(readModelBytes(path), { ...options, file: path, readExternal: externalDataReader(path) });
}

/** Encodes and writes a model atomically (see writeFileAtomic: the folder is checked first). */
export function saveModelFile(graph: Graph, path: string, options: EncodeOptions = {}): void {
  writeFileAtomic(path, encodeModel(graph, options));
}
