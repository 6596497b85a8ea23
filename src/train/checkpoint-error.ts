// The one error type for checkpoint and weight files (its own module: the safetensors reader and
// the checkpoint layer both throw it).

export type CheckpointProblem =
  'missing' | 'truncated' | 'not-a-checkpoint' | 'version' | 'checksum' | 'corrupt' | 'architecture';

export class CheckpointError extends Error {
  constructor(
    readonly problem: CheckpointProblem,
    /** The file (or other source) the bytes came from; '' when unknown. */
    readonly file: string,
    readonly detail: string,
    /** What the file was meant to be, as the message names it. */
    what = 'checkpoint',
  ) {
    super(`${file ? `${what} ${file}` : what}: ${detail}`);
    this.name = 'CheckpointError';
  }
}
