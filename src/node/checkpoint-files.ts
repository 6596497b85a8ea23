// Checkpoint files on disk (Node only): whole-or-nothing saves and verified loads.
import { closeSync, existsSync, fsyncSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  CheckpointError,
  deserializeCheckpoint,
  loadSafetensorsWeights,
  serializeCheckpoint,
  type ArchitectureFingerprint,
  type Checkpoint,
  type CheckpointTensor,
} from '../train/checkpoint.ts';
import type { Graph } from '../graph/ir.ts';
import { readBytes, writeFileAtomic } from './files.ts';

/**
 * Writes the checkpoint so that `path` always holds either the previous file or the complete new
 * one, whatever kills the process: the bytes go to a temporary file beside it, are fsynced, and
 * the temporary file is renamed over `path`; then the folder is fsynced so the rename itself
 * survives a power loss. A killed save can leave a `.name.pid.time.tmp` file behind, never a
 * half-written `path`. Returns the number of bytes written.
 */
export function saveCheckpoint(path: string, ck: Checkpoint): number {
  const bytes = serializeCheckpoint(ck);
  writeFileAtomic(path, bytes);
  syncFolder(dirname(path));
  return bytes.length;
}

/**
 * Reads and verifies a checkpoint file (length, checksum, metadata); with `expectedFingerprint`,
 * refuses one from another architecture, naming the first differing parameter.
 */
export function loadCheckpoint(path: string, expectedFingerprint?: ArchitectureFingerprint): Checkpoint {
  checkFile(path, 'checkpoint');
  return deserializeCheckpoint(readBytes(path), { source: path, expected: expectedFingerprint });
}

/**
 * A safetensors file from another tool (PyTorch, Hugging Face) as weights for `graph`, checked
 * name by name and shape by shape (see loadSafetensorsWeights); restoreGraphWeights puts them in.
 */
export function loadWeightsFile(path: string, graph: Graph): Map<string, CheckpointTensor> {
  checkFile(path, 'weights file');
  return loadSafetensorsWeights(readBytes(path), graph, path);
}

function checkFile(path: string, what: string): void {
  if (!existsSync(path)) throw new CheckpointError('missing', path, 'no such file', what);
  if (statSync(path).isDirectory()) throw new CheckpointError('missing', path, `is a folder, not a ${what}`, what);
}

function syncFolder(folder: string): void {
  // Some systems (Windows, a few network file systems) cannot open or fsync a folder; the file
  // itself is already complete and synced, so this is durability insurance, not correctness.
  let fd: number | undefined;
  try {
    fd = openSync(folder, 'r');
    fsyncSync(fd);
  } catch {
    // see above
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
