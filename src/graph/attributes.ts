// Typed reads of node attributes, with errors that name the node.
import { ModelError } from './errors.ts';
import type { Graph, Node } from './ir.ts';
import type { TensorValue } from './tensor.ts';

export class AttributeReader {
  constructor(
    readonly node: Node,
    readonly file?: string,
  ) {}

  has(name: string): boolean {
    return name in this.node.attributes;
  }

  int(name: string, fallback?: number): number {
    const a = this.node.attributes[name];
    if (!a) return this.missing(name, fallback);
    if (a.type !== 'int') throw this.error(`attribute '${name}' must be an int, got ${a.type}`);
    return a.value;
  }

  float(name: string, fallback?: number): number {
    const a = this.node.attributes[name];
    if (!a) return this.missing(name, fallback);
    if (a.type === 'float' || a.type === 'int') return a.value;
    throw this.error(`attribute '${name}' must be a float, got ${a.type}`);
  }

  string(name: string, fallback?: string): string {
    const a = this.node.attributes[name];
    if (!a) return this.missing(name, fallback);
    if (a.type !== 'string') throw this.error(`attribute '${name}' must be a string, got ${a.type}`);
    return a.value;
  }

  ints(name: string, fallback?: number[]): number[] {
    const a = this.node.attributes[name];
    if (!a) return this.missing(name, fallback);
    if (a.type !== 'ints') throw this.error(`attribute '${name}' must be a list of ints, got ${a.type}`);
    return a.value;
  }

  floats(name: string, fallback?: number[]): number[] {
    const a = this.node.attributes[name];
    if (!a) return this.missing(name, fallback);
    if (a.type !== 'floats') throw this.error(`attribute '${name}' must be a list of floats, got ${a.type}`);
    return a.value;
  }

  tensor(name: string): TensorValue | undefined {
    const a = this.node.attributes[name];
    if (!a) return undefined;
    if (a.type !== 'tensor') throw this.error(`attribute '${name}' must be a tensor, got ${a.type}`);
    return a.value;
  }

  /** A string attribute restricted to the values the engine implements. */
  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const v = this.string(name, fallback);
    if (!(allowed as readonly string[]).includes(v)) {
      throw this.error(
        `attribute ${name}='${v}' is not supported; accepted: ${allowed.map((x) => `'${x}'`).join(', ')}`,
      );
    }
    return v as T;
  }

  error(message: string): ModelError {
    return new ModelError(message, { file: this.file, node: this.node });
  }

  private missing<T>(name: string, fallback: T | undefined): T {
    if (fallback === undefined) throw this.error(`required attribute '${name}' is missing`);
    return fallback;
  }
}

export function attributesOf(graph: Graph, node: Node): AttributeReader {
  return new AttributeReader(node, graph.source);
}
