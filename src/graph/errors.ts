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
