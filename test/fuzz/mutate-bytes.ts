// Raw byte mutations of any file, and the ones that follow protobuf's wire format (huge varints,
// inflated length prefixes), each drawn from a seeded generator so a seed names its mutant.

export type Rng = () => number;

/** An integer in [0, n). */
export function below(rng: Rng, n: number): number {
  return Math.floor(rng() * n);
}

export function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[below(rng, items.length)];
}

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x20, 0x22];

/** One raw mutation of `bytes` (a new array), and a short description of it. */
export function mutateRaw(bytes: Uint8Array, rng: Rng): { bytes: Uint8Array; what: string } {
  const n = bytes.length;
  const at = below(rng, Math.max(n, 1));
  const kind = below(rng, 7);
  switch (kind) {
    case 0: {
      const out = bytes.slice();
      const flips = 1 + below(rng, 4);
      const where: number[] = [];
      for (let k = 0; k < flips && n > 0; k++) {
        const bit = below(rng, n * 8);
        out[bit >> 3] ^= 1 << (bit & 7);
        where.push(bit);
      }
      return { bytes: out, what: `flip bits ${where.join(',')}` };
    }
    case 1: {
      const out = bytes.slice();
      const len = Math.min(1 + below(rng, 8), n - at);
      for (let k = 0; k < len; k++) out[at + k] = rng() < 0.5 ? pick(rng, INTERESTING_BYTES) : below(rng, 256);
      return { bytes: out, what: `overwrite ${len} bytes at ${at}` };
    }
    case 2:
      return { bytes: bytes.slice(0, at), what: `truncate to ${at}` };
    case 3: {
      const len = 1 + below(rng, Math.min(256, n - at));
      const to = below(rng, n + 1);
      return { bytes: splice(bytes, to, 0, bytes.subarray(at, at + len)), what: `duplicate [${at},+${len}) at ${to}` };
    }
    case 4: {
      const len = Math.min(1 + below(rng, Math.min(256, n - at)), n - at);
      return { bytes: splice(bytes, at, len, new Uint8Array(0)), what: `remove [${at},+${len})` };
    }
    case 5:
    case 6: {
      const fields = scanWire(bytes);
      const sites = fields.filter((f) => f.kind === (kind === 5 ? 'varint' : 'length'));
      const site = sites.length > 0 ? pick(rng, sites) : pick(rng, fields.length > 0 ? fields : [undefined]);
      if (!site) return { bytes: bytes.slice(0, at), what: `truncate to ${at} (no wire fields)` };
      const value =
        site.kind === 'varint'
          ? pick(rng, [2n ** 64n - 1n, 2n ** 63n, 2n ** 32n, 2n ** 31n, 2n ** 53n + 1n])
          : BigInt(site.value) + pick(rng, [1n, 7n, 4096n, 2n ** 31n, 2n ** 32n, 2n ** 62n]);
      return {
        bytes: splice(bytes, site.at, site.size, encodeVarint(value)),
        what: `${site.kind === 'varint' ? 'huge varint' : 'inflated length'} ${value} at ${site.at} (was ${site.value})`,
      };
    }
    default:
      throw new Error('unreachable');
  }
}

export interface WireSite {
  kind: 'varint' | 'length';
  /** Byte offset and size of the varint (a value, or a length prefix). */
  at: number;
  size: number;
  value: number;
}

/** Every varint value and length prefix of a protobuf message, nested messages included (a
 * length-delimited field is scanned as a message when it parses as one). Empty if not protobuf. */
export function scanWire(bytes: Uint8Array): WireSite[] {
  const out: WireSite[] = [];
  try {
    scan(bytes, 0, bytes.length, 0, out);
  } catch {
    return [];
  }
  return out;
}

function scan(bytes: Uint8Array, start: number, end: number, depth: number, out: WireSite[]): void {
  let p = start;
  while (p < end) {
    const tag = readVarint(bytes, p, end);
    p += tag.size;
    const wire = Number(tag.value & 7n);
    if (tag.value >> 3n === 0n) throw new Error('field 0');
    if (wire === 0) {
      const v = readVarint(bytes, p, end);
      out.push({ kind: 'varint', at: p, size: v.size, value: Number(v.value) });
      p += v.size;
    } else if (wire === 1) p += 8;
    else if (wire === 5) p += 4;
    else if (wire === 2) {
      const len = readVarint(bytes, p, end);
      const body = p + len.size;
      if (body + Number(len.value) > end) throw new Error('length past end');
      out.push({ kind: 'length', at: p, size: len.size, value: Number(len.value) });
      if (depth < 24) {
        const nested: WireSite[] = [];
        try {
          scan(bytes, body, body + Number(len.value), depth + 1, nested);
          out.push(...nested);
        } catch {
          // bytes or a string, not a message
        }
      }
      p = body + Number(len.value);
    } else throw new Error(`wire type ${wire}`);
    if (p > end) throw new Error('field past end');
  }
}

function readVarint(bytes: Uint8Array, at: number, end: number): { value: bigint; size: number } {
  let value = 0n;
  for (let k = 0; k < 10 && at + k < end; k++) {
    const b = bytes[at + k];
    value |= BigInt(b & 0x7f) << BigInt(7 * k);
    if ((b & 0x80) === 0) return { value, size: k + 1 };
  }
  throw new Error('bad varint');
}

export function encodeVarint(value: bigint): Uint8Array {
  const out: number[] = [];
  let v = BigInt.asUintN(64, value);
  do {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? b | 0x80 : b);
  } while (v > 0n);
  return new Uint8Array(out);
}

/** bytes with `remove` bytes at `at` replaced by `insert`. */
export function splice(bytes: Uint8Array, at: number, remove: number, insert: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length - remove + insert.length);
  out.set(bytes.subarray(0, at), 0);
  out.set(insert, at);
  out.set(bytes.subarray(at + remove), at + insert.length);
  return out;
}
