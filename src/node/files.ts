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
  checkRange(path, offset, length, size, what);
  const out = allocateHostBytes(length, what, path);
  readInto(fd, path, offset, out, what);
  return out;
}

function checkRange(path: string, offset: number, length: number, size: number, what: string): void {
  if (offset + length > size)
    throw new ModelError(`${what} needs ${length} bytes at offset ${offset}, but the file has ${size} bytes`, {
      file: path,
    });
}

/** Fills `out` with the bytes at `offset` of the open file `fd`. */
function readInto(fd: number, path: string, offset: number, out: Uint8Array, what: string): void {
  let done = 0;
  while (done < out.byteLength) {
    const n = readSync(fd, out, done, out.byteLength - done, offset + done);
    if (n === 0)
      throw new ModelError(`${what}: the file ended after ${offset + done} bytes (it shrank while being read)`, {
        file: path,
      });
    done += n;
  }
}

/**
 * Runs `use` on a ByteSource over the file at `path`, read through one descriptor for the call's
 * duration. A read after the call (a tensor left in the file) opens the file again, and is
 * refused with a ModelError if the file changed since (its inode, size or modification time).
 */
function withFileSource<T>(path: string, use: (source: ByteSource) => T): T {
  let fd: number | undefined = openSync(path, 'r');
  const opened = fstatSync(fd);
  const size = opened.size;
  const withFd = <R>(read: (fd: number) => R): R => {
    if (fd !== undefined) return read(fd);
    let later: number;
    try {
      later = openSync(path, 'r');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      throw new ModelError(
        `cannot open the file again (${code}: moved, deleted or unreadable) since it was loaded with its tensors left in it; load it again`,
        { file: path },
      );
    }
    try {
      const now = fstatSync(later);
      if (now.ino !== opened.ino || now.size !== size || now.mtimeMs !== opened.mtimeMs)
        throw new ModelError(
          'the file changed (its size, modification time or inode) since it was loaded with its tensors left in it; load it again',
          { file: path },
        );
      return read(later);
    } finally {
      closeSync(later);
    }
  };
  const what = 'the model';
  try {
    return use({
      byteLength: size,
      // What withFd checks before reading the file again: reads under one identity see one content.
      identity: `file ${path} device ${opened.dev} inode ${opened.ino} size ${size} modified ${opened.mtimeMs}`,
      read: (offset, length) => withFd((f) => readRange(f, path, offset, length, size, what)),
      readStrided: (offset, length, stride, count, out) => {
        if (count > 0) checkRange(path, offset, (count - 1) * stride + length, size, what);
        withFd((f) => {
          for (let i = 0; i < count; i++)
            readInto(f, path, offset + i * stride, out.subarray(i * length, (i + 1) * length), what);
        });
      },
    });
  } finally {
    closeSync(fd);
    fd = undefined;
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

export interface ModelFileOptions {
  /**
   * Leave each large tensor (raw_data of 4 KiB or more) in the file: its data is read from the
   * file each time it is asked for, and the runtime reads the largest weights in pieces as it
   * uploads them, so neither the Graph nor a session made from it holds the weights on the host.
   * The file must not change while the Graph is used: a read then throws a ModelError.
   */
  leaveTensorsInFile?: boolean;
}

/**
 * Decodes a model file (no folding or inference): for round trips and tools. The file is read
 * in pieces: its structure, then each large tensor into a buffer of its own (or, with
 * leaveTensorsInFile, when its data is asked for).
 */
export function decodeModelFile(path: string, options: ModelFileOptions = {}): Graph {
  checkModelFile(path);
  return withFileSource(path, (source) =>
    decodeModelSource(source, {
      file: path,
      readExternal: externalDataReader(path),
      leaveTensorsInSource: options.leaveTensorsInFile,
    }),
  );
}

/** Loads a model file ready for the runtime: decoded (as decodeModelFile), folded, every shape inferred. */
export function loadModelFile(path: string, options: PrepareOptions & ModelFileOptions = {}): Graph {
  return prepareGraph(decodeModelFile(path, options), options);
}

/** Encodes and writes a model atomically (see writeFileAtomic: the folder is checked first). */
export function saveModelFile(graph: Graph, path: string, options: EncodeOptions = {}): void {
  writeFileAtomic(path, encodeModel(graph, options));
}
