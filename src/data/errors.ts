/**
 * Bad data a user can fix: a missing or malformed folder, an image that does not decode, classes
 * that do not match a model. Names the file or folder (`file`) and says what would be accepted.
 */
export class DataError extends Error {
  readonly file?: string;

  constructor(message: string, where: { file?: string; cause?: unknown } = {}) {
    super(
      where.file ? `${where.file}: ${message}` : message,
      where.cause === undefined ? undefined : { cause: where.cause },
    );
    this.name = 'DataError';
    this.file = where.file;
  }
}
