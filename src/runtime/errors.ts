import { ModelError } from '../graph/errors.ts';

// Errors of the Session API itself: a call it does not accept, as opposed to a model it refuses
// (ModelError) or a GPU failure (GpuError).

/** A call with arguments the API does not accept (a missing `gpu` option, feeds that are not an
 * object of tensors, a model that is neither bytes nor a Graph); the message says what would be. */
export class SessionUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SessionUsageError';
  }
}

/** run() on a session after its dispose(): create a new Session. */
export class SessionDisposedError extends SessionUsageError {
  constructor(operation: string) {
    super(`${operation} on a disposed session; create a new Session to run the model again`);
    this.name = 'SessionDisposedError';
  }
}

/** A model whose weights cannot fit the device (one over maxBufferSize, or all over the session's
 * weightBudgetBytes), refused before anything is uploaded: `bytes` needed, `limit` allowed. */
export class WeightsTooLargeError extends ModelError {
  readonly bytes: number;
  readonly limit: number;

  constructor(message: string, where: { file?: string; bytes: number; limit: number }) {
    super(message, { file: where.file });
    this.name = 'WeightsTooLargeError';
    this.bytes = where.bytes;
    this.limit = where.limit;
  }
}
