// Checkpoint mutations that keep the checksum valid: parse the header (safetensors) or the
// metadata (GRAFTCK1), change one JSON value, key or list element (metadata strings that hold
// JSON are edited inside), write the file again and recompute the CRC the way the writer does.
import { crc32 as zlibCrc32 } from 'node:zlib';
import { forgeCheckpoint } from '../helpers/safetensors.ts';
import { below, pick, type Rng } from './mutate-bytes.ts';

const V1_MAGIC = 'GRAFTCK1';
const JSON_VALUES: unknown[] = [
  null,
  -5,
  -1,
  0,
  1e300,
  2 ** 53 + 2,
  4.5,
  'x',
  '',
  '-5',
  '1e300',
  '9007199254740993',
  [],
  {},
  [1e9, 1e9],
  true,
];

/** One CRC-preserving edit of a checkpoint, or undefined when its header does not parse. */
export function mutateCheckpointStructure(
  bytes: Uint8Array,
  rng: Rng,
): { bytes: Uint8Array; what: string } | undefined {
  try {
    if (new TextDecoder().decode(bytes.subarray(0, 8)) === V1_MAGIC) return mutateV1(bytes, rng);
    let what = '';
    const out = forgeCheckpoint(bytes, (header) => {
      // Metadata values that are JSON are edited as JSON, then written back as strings.
      const meta = header.__metadata__ as Record<string, string>;
      const parsed: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(meta)) {
        if (k === 'graft.crc32') continue;
        try {
          parsed[k] = JSON.parse(v) as unknown;
        } catch {
          parsed[k] = v;
        }
      }
      header.__metadata__ = parsed;
      what = editJson(header, rng, 'header');
      const edited = header.__metadata__;
      if (edited !== null && typeof edited === 'object' && !Array.isArray(edited)) {
        header.__metadata__ = Object.fromEntries(
          Object.entries(edited as Record<string, unknown>).map(([k, v]) => [
            k,
            typeof v === 'string' ? v : JSON.stringify(v),
          ]),
        );
      }
    });
    return { bytes: out, what: `${what} (CRC recomputed)` };
  } catch {
    return undefined;
  }
}

function mutateV1(bytes: Uint8Array, rng: Rng): { bytes: Uint8Array; what: string } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const jsonLength = view.getUint32(24, true);
  const total = Number(view.getBigUint64(16, true));
  const region = Math.ceil(jsonLength / 4) * 4;
  const meta = JSON.parse(new TextDecoder().decode(bytes.subarray(32, 32 + jsonLength))) as Record<string, unknown>;
  const data = bytes.subarray(32 + region, total - 4);
  const what = editJson(meta, rng, 'metadata');
  // Tensor offsets are absolute: a longer metadata block shifts the data, so they move with it
  // (until the text's length settles: an offset's digits count too).
  let shift = 0;
  let text = JSON.stringify(meta);
  for (let k = 0; k < 4 && Math.ceil(text.length / 4) * 4 !== region + shift; k++) {
    const next = Math.ceil(text.length / 4) * 4 - region;
    shiftOffsets(meta, next - shift);
    shift = next;
    text = JSON.stringify(meta);
  }
  const json = new TextEncoder().encode(text);
  const padded = Math.max(region + shift, Math.ceil(json.length / 4) * 4);
  const out = new Uint8Array(32 + padded + data.length + 4);
  out.set(bytes.subarray(0, 32));
  out.set(json, 32);
  out.fill(0x20, 32 + json.length, 32 + padded);
  out.set(data, 32 + padded);
  const v = new DataView(out.buffer);
  v.setBigUint64(16, BigInt(out.length), true);
  v.setUint32(24, padded, true);
  v.setUint32(out.length - 4, zlibCrc32(out.subarray(0, out.length - 4)), true);
  return { bytes: out, what: `${what} (CRC recomputed)` };
}

function shiftOffsets(meta: Record<string, unknown>, by: number): void {
  if (!Array.isArray(meta.tensors)) return;
  for (const t of meta.tensors as unknown[]) {
    const r = t as Record<string, unknown> | null;
    if (r && typeof r === 'object' && typeof r.offset === 'number') r.offset += by;
  }
}

/** Replaces, deletes or duplicates one value somewhere in `root`; says what it did. */
function editJson(root: Record<string, unknown>, rng: Rng, name: string): string {
  const sites: { parent: Record<string, unknown> | unknown[]; key: string | number; path: string }[] = [];
  const walk = (v: unknown, path: string): void => {
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        sites.push({ parent: v, key: i, path: `${path}[${i}]` });
        walk(x, `${path}[${i}]`);
      });
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        sites.push({ parent: v as Record<string, unknown>, key: k, path: `${path}.${k}` });
        walk(x, `${path}.${k}`);
      }
    }
  };
  walk(root, name);
  const site = pick(rng, sites);
  const was = JSON.stringify((site.parent as Record<string | number, unknown>)[site.key])?.slice(0, 60);
  const action = below(rng, 6);
  if (action === 0) {
    if (Array.isArray(site.parent)) site.parent.splice(site.key as number, 1);
    else delete site.parent[site.key as string];
    return `delete ${site.path} (was ${was})`;
  }
  if (action === 1 && Array.isArray(site.parent)) {
    site.parent.splice(site.key as number, 0, structuredClone(site.parent[site.key as number]));
    return `duplicate ${site.path}`;
  }
  const value = structuredClone(pick(rng, JSON_VALUES));
  (site.parent as Record<string | number, unknown>)[site.key] = value;
  return `${site.path}: ${was} → ${JSON.stringify(value)}`;
}
