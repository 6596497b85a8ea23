// Node-only file access for models: reading with external data, and atomic writes.
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import { encodeModel, type EncodeOptions } from '../graph/codec.ts';
import { allocateHostBytes, ModelError } from '../graph/errors.ts';
import type { Graph } from '../graph/ir.ts';
import { prepareGraph, type PrepareOptions } from '../graph/load.ts';
import type { ExternalDataReader } from '../graph/codec.ts';
import { decodeModelSource, type ByteSource } from '../graph/model-source.ts';
import { readableFileProblem, writeFileAtomic } from './atomic-write.ts';

export { writeFileAtomic } from './atomic-write.ts';

/** A file's bytes as a Uint8Array that owns its memory, read straight into it (no second copy). */
export function readBytes(path: string): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    return readRange(fd, path, 0, size, size, 'the file');
  } finally {
    closeSync(fd);
  }
}

/**
 * `length` bytes at `offset` of the open file `fd` (of `size` bytes), in a buffer of their own;
 * the range is checked against the size before anything is allocated.
 */
function readRange(fd: number, path: string, offset: number, length: number, size: number, what: string): Uint8Array {
  if (offset + length > size)
    throw new ModelError(`${what} needs ${length} bytes at offset ${offset}, but the file has ${size} bytes`, {
      file: path,
    });
  const out = allocateHostBytes(length, what, path);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, length - done, offset + done);
    if (n === 0)
      throw new ModelError(`${what}: the file ended after ${offset + done} bytes (it shrank while being read)`, {
        file: path,
      });
    done += n;
  }
  return out;
}

/** Runs `use` on a ByteSource over the file at `path`, open for the call's duration. */
function withFileSource<T>(path: string, use: (source: ByteSource) => T): T {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    return use({ byteLength: size, read: (offset, length) => readRange(fd, path, offset, length, size, 'the model') });
  } finally {
    closeSync(fd);
  }
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
      return readRange(fd, path, offset, want, size, `external data file '${location}'`);
    } finally {
      closeSync(fd);
    }
  };
}

function checkModelFile(path: string): void {
  if (!existsSync(path)) throw new ModelError('no such file', { file: path });
  const problem = readableFileProblem(path, 'an .onnx file');
  if (problem) throw new ModelError(problem.detail, { file: path });
}

/**
 * Decodes a model file (no folding or inference): for round trips and tools. The file is read
 * in pieces: its structure, then each large tensor into a buffer of its own.
 */
export function decodeModelFile(path: string): Graph {
  checkModelFile(path);
  return withFileSource(path, (source) =>
    decodeModelSource(source, { file: path, readExternal: externalDataReader(path) }),
  );
}

/** Loads a model file ready for the runtime: decoded (as decodeModelFile), folded, every shape inferred. */
export function loadModelFile(path: string, options: PrepareOptions = {}): Graph {
  return prepareGraph(decodeModelFile(path), options);
}

/** Encodes and writes a model atomically (see writeFileAtomic: the folder is checked first). */
export function saveModelFile(graph: Graph, path: string, options: EncodeOptions = {}): void {
  writeFileAtomic(path, encodeModel(graph, options));
}
