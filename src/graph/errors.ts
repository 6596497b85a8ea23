/**
 * An error a user can act on: it names the model file, the node (name and op) where there is
 * one, and says what would have been accepted.
 */
export class ModelError extends Error {
  readonly file?: string;
  readonly nodeName?: string;
  readonly opType?: string;

  constructor(message: string, where: { file?: string; node?: { name: string; opType: string } } = {}) {
    const parts: string[] = [];
    if (where.file) parts.push(where.file);
    if (where.node) parts.push(`node '${where.node.name || '(unnamed)'}' (${where.node.opType})`);
    super(parts.length ? `${parts.join(': ')}: ${message}` : message);
    this.name = 'ModelError';
    this.file = where.file;
    this.nodeName = where.node?.name;
    this.opType = where.node?.opType;
  }
}

/** The host (JavaScript heap or process) could not give the memory a model needs while loading. */
export class HostMemoryError extends ModelError {
  readonly bytes: number;

  constructor(bytes: number, what: string, file: string | undefined, cause: unknown) {
    super(
      `out of host memory: cannot allocate ${bytes} bytes for ${what} (${(cause as Error)?.message ?? String(cause)}); free memory, or load a smaller model`,
      { file },
    );
    this.name = 'HostMemoryError';
    this.bytes = bytes;
    (this as { cause?: unknown }).cause = cause;
  }
}

/** `length` zeroed bytes, or a HostMemoryError naming `what` and the file when the host has no room for them. */
export function allocateHostBytes(length: number, what: string, file: string | undefined): Uint8Array {
  try {
    return new Uint8Array(length);
  } catch (e) {
    if (e instanceof RangeError) throw new HostMemoryError(length, what, file, e);
    throw e;
  }
}
