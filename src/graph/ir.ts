// The one in-memory model: nodes, values with shapes and dtypes, initializers with a trainable
// flag, and the model-level metadata that must survive a decode → encode round trip.
import { ModelError } from './errors.ts';
import type { onnx } from './onnx/onnx-pb.js';
import { isFloatType, sizeOf, type DataType, type TensorValue } from './tensor.ts';

/** A dimension: a number when known, a symbolic name (dim_param), or null when unknown. */
export type Dim = number | string | null;

export interface ValueInfo {
  name: string;
  dtype?: DataType;
  shape?: Dim[];
  docString?: string;
  /** Non-tensor types (sequence, map, optional, sparse) kept as the decoded TypeProto. */
  otherType?: onnx.ITypeProto;
  /** Extra fields of the ValueInfoProto/TypeProto that must round-trip untouched. */
  extra?: Record<string, unknown>;
}

export type Attribute =
  | { type: 'float'; value: number }
  | { type: 'int'; value: number }
  | { type: 'string'; value: string }
  | { type: 'tensor'; value: TensorValue }
  | { type: 'floats'; value: number[] }
  | { type: 'ints'; value: number[] }
  | { type: 'strings'; value: string[] }
  | { type: 'tensors'; value: TensorValue[] }
  /** Subgraphs, sparse tensors and type protos: the engine runs none of them, so they are kept
   * as decoded protobuf objects and written back unchanged. */
  | { type: 'opaque'; proto: onnx.IAttributeProto };

export interface Node {
  name: string;
  opType: string;
  /** '' is the default ONNX domain (also written 'ai.onnx'). */
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Record<string, Attribute>;
  docString?: string;
  extra?: Record<string, unknown>;
}

export interface Initializer {
  name: string;
  value: TensorValue;
  /** Whether training updates it. Float weights start trainable; integer tensors and
   * BatchNormalization running statistics never are. */
  trainable: boolean;
  docString?: string;
  extra?: Record<string, unknown>;
}

export interface OpsetImport {
  domain: string;
  version: number;
}

export class Graph {
  name = '';
  docString = '';
  nodes: Node[] = [];
  inputs: ValueInfo[] = [];
  outputs: ValueInfo[] = [];
  initializers = new Map<string, Initializer>();
  /** Shape and dtype of every value known so far (inputs, outputs, value_info, inferred). */
  values = new Map<string, ValueInfo>();

  // Model-level fields.
  irVersion = 8;
  opsetImports: OpsetImport[] = [{ domain: '', version: 17 }];
  producerName = 'onnx-graft';
  producerVersion = '';
  domain = '';
  modelVersion = 0;
  modelDocString = '';
  metadataProps: { key: string; value: string }[] = [];
  /** Parts of the model the engine does not interpret (functions, training_info, sparse
   * initializers, quantization annotations, graph metadata), kept for the round trip. */
  extra: Record<string, unknown> = {};
  /** Where the model came from, for error messages. */
  source?: string;

  /** The version of the default ONNX opset this model imports. */
  get opset(): number {
    return this.opsetImports.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 1;
  }

  /** Graph inputs that are fed at run time (IR < 4 models also list initializers as inputs). */
  get feedInputs(): ValueInfo[] {
    return this.inputs.filter((i) => !this.initializers.has(i.name));
  }

  /** A map from value name to the node that produces it. */
  producers(): Map<string, Node> {
    const m = new Map<string, Node>();
    for (const n of this.nodes) for (const o of n.outputs) if (o) m.set(o, n);
    return m;
  }

  /** A map from value name to the nodes that read it. */
  consumers(): Map<string, Node[]> {
    const m = new Map<string, Node[]>();
    for (const n of this.nodes) {
      for (const i of n.inputs) {
        if (!i) continue;
        let list = m.get(i);
        if (!list) m.set(i, (list = []));
        if (!list.includes(n)) list.push(n);
      }
    }
    return m;
  }

  /** Reorders `nodes` topologically (stable: keeps file order where it is already valid).
   * Throws a ModelError naming a node on a cycle, or the first input nobody produces. */
  sortTopologically(): void {
    const available = new Set<string>(['']);
    for (const i of this.inputs) available.add(i.name);
    for (const k of this.initializers.keys()) available.add(k);
    const producers = this.producers();
    for (const n of this.nodes) {
      for (const i of n.inputs) {
        if (i && !available.has(i) && !producers.has(i)) {
          throw new ModelError(`input '${i}' is neither a graph input, an initializer nor any node's output`, {
            file: this.source,
            node: n,
          });
        }
      }
    }
    const pending = new Map<Node, number>();
    const waiting = new Map<string, Node[]>();
    const ready: Node[] = [];
    for (const n of this.nodes) {
      const missing = new Set(n.inputs.filter((i) => !available.has(i)));
      pending.set(n, missing.size);
      for (const i of missing) {
        let w = waiting.get(i);
        if (!w) waiting.set(i, (w = []));
        w.push(n);
      }
      if (missing.size === 0) ready.push(n);
    }
    // A min-heap on file position keeps the original order where possible; a simple sorted
    // insertion is fast enough for graphs of a few thousand nodes.
    const position = new Map(this.nodes.map((n, i) => [n, i]));
    ready.sort((a, b) => position.get(a)! - position.get(b)!);
    const order: Node[] = [];
    while (ready.length) {
      const n = ready.shift()!;
      order.push(n);
      for (const o of n.outputs) {
        if (!o || available.has(o)) continue;
        available.add(o);
        for (const w of waiting.get(o) ?? []) {
          const left = pending.get(w)! - 1;
          pending.set(w, left);
          if (left === 0) {
            const p = position.get(w)!;
            let at = ready.findIndex((r) => position.get(r)! > p);
            if (at < 0) at = ready.length;
            ready.splice(at, 0, w);
          }
        }
      }
    }
    if (order.length !== this.nodes.length) {
      const stuck = this.nodes.find((n) => !order.includes(n))!;
      throw new ModelError(
        `the graph has a cycle through this node (its inputs ${stuck.inputs
          .filter((i) => !available.has(i))
          .map((i) => `'${i}'`)
          .join(', ')} depend on its own outputs)`,
        { file: this.source, node: stuck },
      );
    }
    this.nodes = order;
  }

  /** Adds or replaces an initializer; float tensors start trainable unless told otherwise. */
  setInitializer(name: string, value: TensorValue, trainable = isFloatType(value.dtype)): Initializer {
    const previous = this.initializers.get(name);
    const init: Initializer = { name, value, trainable, docString: previous?.docString, extra: previous?.extra };
    this.initializers.set(name, init);
    this.values.set(name, { ...this.values.get(name), name, dtype: value.dtype, shape: [...value.dims] });
    return init;
  }

  /** Number of parameters: elements of floating-point initializers (shape constants excluded). */
  parameterCount(filter: (i: Initializer) => boolean = () => true): number {
    let n = 0;
    for (const init of this.initializers.values()) {
      if (isFloatType(init.value.dtype) && filter(init)) n += sizeOf(init.value.dims);
    }
    return n;
  }

  /** A deep copy (tensor data shared: rewrites replace tensors, they never mutate them). */
  clone(): Graph {
    const g = new Graph();
    Object.assign(g, this);
    g.nodes = this.nodes.map((n) => ({
      ...n,
      inputs: [...n.inputs],
      outputs: [...n.outputs],
      attributes: { ...n.attributes },
    }));
    g.inputs = this.inputs.map((v) => ({ ...v, shape: v.shape && [...v.shape] }));
    g.outputs = this.outputs.map((v) => ({ ...v, shape: v.shape && [...v.shape] }));
    g.initializers = new Map([...this.initializers].map(([k, v]) => [k, { ...v }]));
    g.values = new Map([...this.values].map(([k, v]) => [k, { ...v, shape: v.shape && [...v.shape] }]));
    g.opsetImports = this.opsetImports.map((o) => ({ ...o }));
    g.metadataProps = this.metadataProps.map((p) => ({ ...p }));
    g.extra = { ...this.extra };
    return g;
  }
}
