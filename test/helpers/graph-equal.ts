// Structural equality of two Graphs over everything the codec preserves, reporting the path to
// the first difference. Tensors compare by dtype, dims and bytes (so NaN equals NaN bitwise);
// opaque protobuf messages and `extra` records compare deeply (Long, bigint and number equal
// when they denote the same integer; undefined fields equal missing ones).
import type { Graph, Initializer, Node, ValueInfo } from '../../src/graph/ir.ts';
import type { TensorValue } from '../../src/graph/tensor.ts';

/** undefined when a and b are equal; otherwise a human-readable path to the first difference. */
export function describeGraphDifference(a: Graph, b: Graph): string | undefined {
  const fields = new Set<string>([
    'name',
    'docString',
    'irVersion',
    'opsetImports',
    'producerName',
    'producerVersion',
    'domain',
    'modelVersion',
    'modelDocString',
    'metadataProps',
    'extra',
    'inputs',
    'outputs',
    'initializers',
    'values',
    'nodes',
  ]);
  // Fields added to Graph later are compared too (only `source` is deliberately ignored).
  for (const k of [...Object.keys(a), ...Object.keys(b)]) if (k !== 'source') fields.add(k);
  for (const f of fields) {
    const pa = (a as unknown as Record<string, unknown>)[f];
    const pb = (b as unknown as Record<string, unknown>)[f];
    let d: string | undefined;
    switch (f) {
      case 'nodes':
        d = diffNodes(pa as Node[], pb as Node[]);
        break;
      case 'inputs':
      case 'outputs':
        d = diffList(pa as ValueInfo[], pb as ValueInfo[], f, diffValueInfo);
        break;
      case 'initializers':
        d = diffMap(pa as Map<string, Initializer>, pb as Map<string, Initializer>, f, diffInitializer);
        break;
      case 'values':
        d = diffMap(pa as Map<string, ValueInfo>, pb as Map<string, ValueInfo>, f, diffValueInfo);
        break;
      default:
        d = diffDeep(pa, pb, f);
    }
    if (d) return d;
  }
  return undefined;
}

/** Tensor comparison by dtype, dims and element bytes. */
export function describeTensorDifference(a: TensorValue, b: TensorValue, path = 'tensor'): string | undefined {
  if (a.dtype !== b.dtype) return `${path}.dtype: ${a.dtype} vs ${b.dtype}`;
  const dd = diffDeep(a.dims, b.dims, `${path}.dims`);
  if (dd) return dd;
  if (Array.isArray(a.data) !== Array.isArray(b.data)) return `${path}.data: string list vs typed array`;
  if (Array.isArray(a.data)) {
    const sa = a.data,
      sb = b.data as Uint8Array[];
    if (sa.length !== sb.length) return `${path}.data: ${sa.length} strings vs ${sb.length}`;
    for (let i = 0; i < sa.length; i++) {
      const d = diffBytes(sa[i], sb[i], `${path}.data[${i}]`);
      if (d) return d;
    }
    return undefined;
  }
  const ta = a.data as ArrayBufferView,
    tb = b.data as ArrayBufferView;
  if (arrayKind(ta) !== arrayKind(tb)) return `${path}.data: ${arrayKind(ta)} vs ${arrayKind(tb)}`;
  return diffBytes(ta, tb, `${path}.data`, (ta as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT);
}

function diffNodes(a: Node[], b: Node[]): string | undefined {
  if (a.length !== b.length) return `nodes: ${a.length} nodes vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    const na = a[i],
      nb = b[i];
    const at = `nodes[${i}] '${na.name}' (${na.opType})`;
    for (const k of new Set([
      'name',
      'opType',
      'domain',
      'inputs',
      'outputs',
      'docString',
      'extra',
      ...Object.keys(na),
      ...Object.keys(nb),
    ])) {
      if (k === 'attributes') continue;
      const d = diffDeep(
        (na as unknown as Record<string, unknown>)[k],
        (nb as unknown as Record<string, unknown>)[k],
        `${at}.${k}`,
      );
      if (d) return d;
    }
    const ka = Object.keys(na.attributes),
      kb = Object.keys(nb.attributes);
    if (ka.join('\0') !== kb.join('\0')) return `${at}.attributes: [${ka}] vs [${kb}]`;
    for (const k of ka) {
      const aa = na.attributes[k],
        ab = nb.attributes[k];
      const p = `${at}.attributes.${k}`;
      if (aa.type !== ab.type) return `${p}.type: ${aa.type} vs ${ab.type}`;
      if (aa.type === 'tensor') {
        const d = describeTensorDifference(aa.value, (ab as typeof aa).value, `${p}.value`);
        if (d) return d;
      } else if (aa.type === 'tensors') {
        const vb = (ab as typeof aa).value;
        if (aa.value.length !== vb.length) return `${p}.value: ${aa.value.length} tensors vs ${vb.length}`;
        for (let j = 0; j < vb.length; j++) {
          const d = describeTensorDifference(aa.value[j], vb[j], `${p}.value[${j}]`);
          if (d) return d;
        }
      } else {
        const d = diffDeep(aa, ab, p);
        if (d) return d;
      }
    }
  }
  return undefined;
}

function diffValueInfo(a: ValueInfo, b: ValueInfo, path: string): string | undefined {
  for (const k of new Set([
    'name',
    'dtype',
    'shape',
    'docString',
    'otherType',
    'extra',
    ...Object.keys(a),
    ...Object.keys(b),
  ])) {
    const d = diffDeep(
      (a as unknown as Record<string, unknown>)[k],
      (b as unknown as Record<string, unknown>)[k],
      `${path}.${k}`,
    );
    if (d) return d;
  }
  return undefined;
}

function diffInitializer(a: Initializer, b: Initializer, path: string): string | undefined {
  for (const k of new Set(['name', 'trainable', 'docString', 'extra', ...Object.keys(a), ...Object.keys(b)])) {
    if (k === 'value') continue;
    const d = diffDeep(
      (a as unknown as Record<string, unknown>)[k],
      (b as unknown as Record<string, unknown>)[k],
      `${path}.${k}`,
    );
    if (d) return d;
  }
  return describeTensorDifference(a.value, b.value, `${path}.value`);
}

function diffList<T extends { name: string }>(
  a: T[],
  b: T[],
  path: string,
  each: (x: T, y: T, p: string) => string | undefined,
): string | undefined {
  if (a.length !== b.length)
    return `${path}: ${a.length} entries [${a.map((x) => x.name)}] vs ${b.length} [${b.map((x) => x.name)}]`;
  for (let i = 0; i < a.length; i++) {
    const d = each(a[i], b[i], `${path}[${i}] '${a[i].name}'`);
    if (d) return d;
  }
  return undefined;
}

function diffMap<T>(
  a: Map<string, T>,
  b: Map<string, T>,
  path: string,
  each: (x: T, y: T, p: string) => string | undefined,
): string | undefined {
  const ka = [...a.keys()],
    kb = [...b.keys()];
  const onlyA = ka.filter((k) => !b.has(k)),
    onlyB = kb.filter((k) => !a.has(k));
  if (onlyA.length)
    return `${path}: '${onlyA[0]}' only in the first graph${onlyA.length > 1 ? ` (and ${onlyA.length - 1} more)` : ''}`;
  if (onlyB.length)
    return `${path}: '${onlyB[0]}' only in the second graph${onlyB.length > 1 ? ` (and ${onlyB.length - 1} more)` : ''}`;
  for (let i = 0; i < ka.length; i++) {
    // Map order decides the order of initializers (and value_info) when encoding.
    if (ka[i] !== kb[i]) return `${path}: order differs at position ${i}: '${ka[i]}' vs '${kb[i]}'`;
  }
  for (const k of ka) {
    const d = each(a.get(k)!, b.get(k)!, `${path}['${k}']`);
    if (d) return d;
  }
  return undefined;
}

function isLong(v: unknown): v is { low: number; high: number; unsigned: boolean; toString(): string } {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { low?: unknown }).low === 'number' &&
    typeof (v as { high?: unknown }).high === 'number' &&
    'unsigned' in v
  );
}

function asBigInt(v: unknown): bigint | undefined {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (isLong(v)) return BigInt(v.toString());
  return undefined;
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}…` : v);
  if (typeof v === 'bigint') return `${v}n`;
  if (isLong(v)) return `Long(${v.toString()})`;
  if (Array.isArray(v)) return `array(${v.length})`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${v.byteLength} bytes)`;
  if (v && typeof v === 'object') return `{${Object.keys(v).slice(0, 6).join(', ')}}`;
  return String(v);
}

function diffBytes(a: ArrayBufferView, b: ArrayBufferView, path: string, width = 1): string | undefined {
  const ua = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const ub = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  if (ua.length !== ub.length) return `${path}: ${ua.length} bytes vs ${ub.length}`;
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) {
      const e = Math.floor(i / width);
      const at = (x: ArrayBufferView) => (x as unknown as ArrayLike<unknown>)[e];
      return `${path}[${e}]: ${show(at(a))} vs ${show(at(b))} (byte ${i} differs)`;
    }
  }
  return undefined;
}

/** The typed-array class name; Node's Buffer (which protobufjs returns for bytes fields when it
 * decodes a Buffer) counts as the Uint8Array it is. */
function arrayKind(v: ArrayBufferView): string {
  if (v instanceof Uint8Array) return 'Uint8Array';
  return v.constructor.name;
}

function isTensorValue(v: unknown): v is TensorValue {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as TensorValue).dtype === 'string' &&
    Array.isArray((v as TensorValue).dims) &&
    'data' in v
  );
}

/** Deep comparison for plain data, protobufjs messages, typed arrays, Long and Maps. */
function diffDeep(a: unknown, b: unknown, path: string): string | undefined {
  if (a === b) return undefined;
  if (a === undefined || b === undefined || a === null || b === null) return `${path}: ${show(a)} vs ${show(b)}`;
  const ia = asBigInt(a),
    ib = asBigInt(b);
  if (ia !== undefined && ib !== undefined) return ia === ib ? undefined : `${path}: ${show(a)} vs ${show(b)}`;
  if (typeof a === 'number' && typeof b === 'number') return Object.is(a, b) ? undefined : `${path}: ${a} vs ${b}`;
  if (typeof a !== 'object' || typeof b !== 'object') return `${path}: ${show(a)} vs ${show(b)}`;
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b)) {
    if (!ArrayBuffer.isView(a) || !ArrayBuffer.isView(b)) return `${path}: ${show(a)} vs ${show(b)}`;
    if (arrayKind(a) !== arrayKind(b)) return `${path}: ${arrayKind(a)} vs ${arrayKind(b)}`;
    return diffBytes(a, b, path, (a as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1);
  }
  if (isTensorValue(a) && isTensorValue(b)) return describeTensorDifference(a, b, path);
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b)) return `${path}: ${show(a)} vs ${show(b)}`;
    if (a.length !== b.length) return `${path}: length ${a.length} vs ${b.length}`;
    for (let i = 0; i < a.length; i++) {
      const d = diffDeep(a[i], b[i], `${path}[${i}]`);
      if (d) return d;
    }
    return undefined;
  }
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map) || !(b instanceof Map)) return `${path}: ${show(a)} vs ${show(b)}`;
    return diffMap(a, b, path, diffDeep);
  }
  const ra = a as Record<string, unknown>,
    rb = b as Record<string, unknown>;
  const keys = new Set([...Object.keys(ra), ...Object.keys(rb)]);
  for (const k of [...keys].sort()) {
    // An own field set to undefined is the same as an absent one.
    const d = diffDeep(ra[k], rb[k], `${path}.${k}`);
    if (d) return d;
  }
  return undefined;
}
