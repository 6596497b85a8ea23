// Checkpoint files on disk (Node only): whole-or-nothing saves and verified loads.
import { existsSync } from 'node:fs';
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
import { readableFileProblem, writeFileAtomic } from './atomic-write.ts';
import { readBytes } from './files.ts';

/**
 * Writes the checkpoint so that `path` always holds either the previous file or the complete new
 * one, whatever kills the process: the bytes go to a temporary file beside it, are fsynced, and
 * the temporary file is renamed over `path`; then the folder is fsynced so the rename itself
 * survives a power loss (writeFileAtomic). A SIGKILLed save can leave a `.name.pid.time.tmp`
 * file behind, never a half-written `path`; the next write to the folder sweeps it. Returns the
 * number of bytes written.
 */
export function saveCheckpoint(path: string, ck: Checkpoint): number {
  const bytes = serializeCheckpoint(ck);
  writeFileAtomic(path, bytes);
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
  const problem = readableFileProblem(path, `a ${what}`);
  if (problem) throw new CheckpointError('missing', path, problem.detail, what);
}
