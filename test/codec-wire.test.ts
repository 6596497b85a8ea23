// The ONNX decoder reads the protobuf wire as strictly as protobuf's C++ parser, which
// onnxruntime uses: each hand-made case below is loaded by onnxruntime-node too, and the engine
// must refuse exactly what it refuses and, where both accept, read the same model (fuzz seeds 312,
// 2107, 4320, 5972, 9757, 11770, 12895 and 19 more found these).
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { decodeModel } from '../src/graph/codec.ts';
import { ModelError } from '../src/graph/errors.ts';
import { readBytes, TESTDATA_ROOT } from './helpers/onnx-testdata.ts';

const BASE = readBytes(`${TESTDATA_ROOT}/node/test_relu/model.onnx`);

function varint(value: number | bigint): number[] {
  let v = BigInt(value);
  const out: number[] = [];
  do {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? byte | 0x80 : byte);
  } while (v > 0n);
  return out;
}
const tag = (field: number, wire: number) => varint((field << 3) | wire);
const concat = (...parts: (Uint8Array | number[])[]) => Uint8Array.from(parts.flatMap((p) => [...p]));

/** Where ModelProto's graph field (7, length-delimited) sits in BASE. */
function graphField(): { start: number; lengthBytes: number; length: number; body: Uint8Array } {
  let pos = 0;
  while (pos < BASE.length) {
    const start = pos;
    let key = 0;
    for (let shift = 0; ; shift += 7) {
      const b = BASE[pos++];
      key |= (b & 0x7f) << shift;
      if (b < 0x80) break;
    }
    const wire = key & 7;
    if (wire === 0) while (BASE[pos++] >= 0x80);
    else if (wire === 2) {
      const lengthStart = pos;
      let length = 0;
      for (let shift = 0; ; shift += 7) {
        const b = BASE[pos++];
        length += (b & 0x7f) * 2 ** shift;
        if (b < 0x80) break;
      }
      if (key >>> 3 === 7) {
        return { start, lengthBytes: pos - lengthStart, length, body: BASE.subarray(pos, pos + length) };
      }
      pos += length;
    } else throw new Error(`test_relu's model uses wire type ${wire} at the top level`);
  }
  throw new Error('no graph in test_relu');
}

async function ortAccepts(bytes: Uint8Array): Promise<boolean> {
  try {
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], logSeverityLevel: 4 });
    await session.release();
    return true;
  } catch {
    return false;
  }
}

function engineReads(bytes: Uint8Array) {
  try {
    return decodeModel(bytes, { file: 'wire.onnx' });
  } catch (error) {
    expect(error, 'a refusal must be a ModelError').toBeInstanceOf(ModelError);
    expect((error as Error).message).toContain('wire.onnx');
    return undefined;
  }
}

const graph = graphField();
const inflatedGraphLength = concat(
  BASE.subarray(0, graph.start),
  tag(7, 2),
  varint(BigInt(graph.length) + 2n ** 32n),
  graph.body,
  BASE.subarray(graph.start + 1 + graph.lengthBytes + graph.length),
);

const cases: {
  name: string;
  bytes: Uint8Array;
  accepted: boolean;
  check?: (g: NonNullable<ReturnType<typeof engineReads>>) => void;
}[] = [
  { name: 'the model as written', bytes: BASE, accepted: true },
  { name: 'a tag over 32 bits', bytes: concat(BASE, [0xff, 0xff, 0xff, 0xff, 0x7f, 0x00]), accepted: false },
  { name: 'field number 0', bytes: concat(BASE, [0x00, 0x01]), accepted: false },
  { name: 'wire type 6', bytes: concat(BASE, tag(20, 6), [0x01]), accepted: false },
  { name: 'wire type 7', bytes: concat(BASE, tag(20, 7), [0x01]), accepted: false },
  { name: 'an end-group tag outside a group', bytes: concat(BASE, tag(20, 4)), accepted: false },
  { name: "the graph's length prefix inflated by 2^32", bytes: inflatedGraphLength, accepted: false },
  {
    name: 'an unknown field as a well-formed group',
    bytes: concat(BASE, tag(20, 3), tag(1, 0), [0x05], tag(20, 4)),
    accepted: true,
  },
  {
    name: 'a group whose end tag names another field',
    bytes: concat(BASE, tag(20, 3), tag(1, 0), [0x05], tag(21, 4)),
    accepted: false,
  },
  {
    // C++ keeps a known field that arrives with another wire type as an unknown field.
    name: 'producer_name sent as a varint is skipped',
    bytes: concat(BASE, tag(2, 0), varint(300)),
    accepted: true,
    check: (g) => expect(g.producerName).toBe(decodeModel(BASE).producerName),
  },
  {
    // C++ merges a singular message field given twice: the second graph only renames the first.
    name: 'a second graph field is merged into the first',
    bytes: concat(BASE, tag(7, 2), varint(2 + 'merged'.length), tag(2, 2), varint('merged'.length), [
      ...new TextEncoder().encode('merged'),
    ]),
    accepted: true,
    check: (g) => {
      expect(g.name).toBe('merged');
      expect(g.nodes.map((n) => n.opType)).toEqual(['Relu']);
    },
  },
];

describe('protobuf wire strictness, against onnxruntime-node', () => {
  for (const c of cases) {
    it(`${c.name}: ${c.accepted ? 'read' : 'refused'} as onnxruntime does`, async () => {
      expect(await ortAccepts(c.bytes), 'onnxruntime-node').toBe(c.accepted);
      const read = engineReads(c.bytes);
      expect(read !== undefined, 'the engine').toBe(c.accepted);
      if (read && c.check) c.check(read);
    });
  }
});
