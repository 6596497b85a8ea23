// Structure-aware ONNX mutations: decode with the generated messages, change one field (a
// number to an extreme, a name by one letter or to another name of the model, an element of a
// repeated field removed or duplicated), encode again.
import { onnx } from '../../src/graph/onnx/onnx-pb.js';
import { below, pick, type Rng } from './mutate-bytes.ts';

const INTEGERS = [
  0,
  1,
  -1,
  2,
  3,
  4,
  -5,
  10_000_000,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 + 1,
  2 ** 53,
  -(2 ** 53),
  -12321,
  65536,
  1e15,
];
const FLOATS = [NaN, Infinity, -Infinity, 0, -0, 1e38, -1e38, 1e-45, 1e300, -1, 2];
// Fields holding floats; every other number is an integer (enum, count, int32/int64).
const FLOAT_FIELDS = new Set(['f', 'floats', 'float_data', 'double_data']);

interface Site {
  describe: string;
  apply: (rng: Rng) => string;
}

/** One structural mutation of a model's bytes, or undefined when the bytes do not decode. */
export function mutateModelStructure(bytes: Uint8Array, rng: Rng): { bytes: Uint8Array; what: string } | undefined {
  let model: onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch {
    return undefined;
  }
  const names = new Set<string>();
  const sites: Site[] = [];
  collect(model, 'model', sites, names);
  if (sites.length === 0) return undefined;
  const site = pick(rng, sites);
  const change = site.apply(rng);
  return { bytes: onnx.ModelProto.encode(model).finish(), what: `${site.describe}: ${change}` };

  function collect(msg: object, path: string, out: Site[], seen: Set<string>): void {
    const record = msg as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      const v = record[key];
      const here = `${path}.${key}`;
      if (typeof v === 'string') {
        seen.add(v);
        out.push({
          describe: here,
          apply: (r) => {
            record[key] = mutateString(v, r, names);
            return `'${v}' → '${String(record[key])}'`;
          },
        });
      } else if (typeof v === 'number' || isLong(v)) {
        out.push({
          describe: here,
          apply: (r) => {
            const to = mutateNumber(key, r);
            record[key] = to;
            return `${String(v)} → ${to}`;
          },
        });
      } else if (v instanceof Uint8Array) {
        out.push({ describe: here, apply: (r) => mutateBytesField(record, key, v, r) });
      } else if (Array.isArray(v)) {
        collectArray(v, key, here, out, seen);
      } else if (v !== null && typeof v === 'object') {
        collect(v, here, out, seen);
      }
    }
  }

  function collectArray(arr: unknown[], key: string, here: string, out: Site[], seen: Set<string>): void {
    if (arr.length > 0) {
      out.push({
        describe: here,
        apply: (r) => {
          const i = below(r, arr.length);
          if (r() < 0.5) {
            arr.splice(i, 1);
            return `remove [${i}] of ${arr.length + 1}`;
          }
          arr.splice(i, 0, arr[i]);
          return `duplicate [${i}]`;
        },
      });
    }
    if (arr.length === 0) return;
    if (typeof arr[0] === 'number' || isLong(arr[0])) {
      out.push({
        describe: here,
        apply: (r) => {
          const i = below(r, arr.length);
          const to = mutateNumber(key, r);
          const was = String(arr[i]);
          arr[i] = to;
          return `[${i}] ${was} → ${to}`;
        },
      });
    } else if (typeof arr[0] === 'string') {
      for (const s of arr as string[]) seen.add(s);
      out.push({
        describe: here,
        apply: (r) => {
          const i = below(r, arr.length);
          const was = arr[i] as string;
          arr[i] = mutateString(was, r, names);
          return `[${i}] '${was}' → '${arr[i]}'`;
        },
      });
    } else {
      // Messages: each element's fields are sites of their own. Large repeated float payloads
      // are one site (above), not one per element.
      arr.forEach((m, i) => {
        if (m !== null && typeof m === 'object' && !(m instanceof Uint8Array)) collect(m, `${here}[${i}]`, out, seen);
      });
    }
  }
}

function mutateNumber(field: string, rng: Rng): number {
  if (FLOAT_FIELDS.has(field) && rng() < 0.7) return pick(rng, FLOATS);
  if (rng() < 0.8) return pick(rng, INTEGERS);
  return below(rng, 64) - 8;
}

function mutateString(s: string, rng: Rng, names: Set<string>): string {
  switch (below(rng, 5)) {
    case 0: {
      // One letter changed, as a bit flip in a name would ('alpha' → 'ampha').
      if (s.length === 0) return 'x';
      const i = below(rng, s.length);
      return s.slice(0, i) + String.fromCharCode(97 + below(rng, 26)) + s.slice(i + 1);
    }
    case 1:
      return '';
    case 2:
      return pick(rng, [...names].sort());
    case 3:
      return s + s;
    default:
      return `${s}_missing`;
  }
}

function mutateBytesField(record: Record<string, unknown>, key: string, v: Uint8Array, rng: Rng): string {
  switch (below(rng, 3)) {
    case 0:
      record[key] = v.subarray(0, below(rng, v.length + 1));
      return `truncated to ${(record[key] as Uint8Array).length} of ${v.length} bytes`;
    case 1: {
      const out = v.slice();
      // float32 NaN / Inf / huge at a random aligned spot (raw tensor data is little-endian).
      const at = 4 * below(rng, Math.floor(out.length / 4));
      const value = pick(rng, [NaN, Infinity, -Infinity, 3e38, 1e-40]);
      if (out.length >= 4) new DataView(out.buffer).setFloat32(at, value, true);
      record[key] = out;
      return `float ${value} at byte ${at}`;
    }
    default: {
      const out = new Uint8Array(v.length + 4 + below(rng, 64));
      out.set(v);
      record[key] = out;
      return `extended from ${v.length} to ${out.length} bytes`;
    }
  }
}

function isLong(v: unknown): boolean {
  return v !== null && typeof v === 'object' && 'low' in v && 'high' in v;
}
