// The reproducers of issue 13, each a named case: bad input ends in a typed error that names
// the node, op, attribute, argument or file; where onnxruntime accepts (non-zero transA, NaN
// input), the engine must answer as it does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeModel, decodeModel } from '../src/graph/codec.ts';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import { onnx } from '../src/graph/onnx/onnx-pb.js';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session, type SessionOptions } from '../src/runtime/session.ts';
import { deserializeCheckpoint } from '../src/train/checkpoint.ts';
import { checkpointCorpus, type Feed } from './fuzz/corpus.ts';
import { isTyped } from './fuzz/target.ts';
import { lightModelPath } from './helpers/models.ts';
import { readBytes, readTestDataSets, TESTDATA_ROOT } from './helpers/onnx-testdata.ts';
import { runOrt } from './helpers/reference-models.ts';
import { forgeCheckpoint } from './helpers/safetensors.ts';

let gpu: GpuContext;
beforeAll(async () => {
  gpu = await createNodeGpuContext();
});
afterAll(() => gpu?.dispose());

/** A node test's model bytes (edited by `edit`) and its first data set's inputs. */
function nodeCase(name: string, edit: (m: onnx.ModelProto) => void = () => {}) {
  const dir = `${TESTDATA_ROOT}/node/${name}`;
  const model = onnx.ModelProto.decode(readBytes(`${dir}/model.onnx`));
  edit(model);
  const [set] = readTestDataSets(dir, { sets: 1, outputs: false });
  const feeds: Record<string, Feed> = {};
  model.graph!.input!.forEach((input, k) => {
    feeds[input.name!] = { dims: [...set.inputs[k].dims], data: set.inputs[k].data as Float32Array };
  });
  return { bytes: onnx.ModelProto.encode(model).finish(), feeds };
}

/** decode → prepare → Session.create → run, as a user's program would. */
async function pipeline(bytes: Uint8Array, feeds: Record<string, Feed>, options: Partial<SessionOptions> = {}) {
  const file = 'mutant.onnx';
  const graph = prepareGraph(decodeModel(bytes, { file }));
  const session = await Session.create(graph, { gpu, file, ...options });
  try {
    return await session.run(feeds);
  } finally {
    session.dispose();
  }
}

/** The error `run` ends in: a typed one whose message names each of `mentions`. */
async function expectTypedError(run: () => unknown, mentions: (string | RegExp)[]): Promise<Error> {
  let error: unknown;
  try {
    await run();
  } catch (e) {
    error = e;
  }
  expect(error, 'no error: the bad input was accepted').toBeInstanceOf(Error);
  const e = error as Error;
  expect(isTyped(e), `untyped ${e.constructor.name}: ${e.message}`).toBe(true);
  for (const m of mentions) {
    const pattern = typeof m === 'string' ? new RegExp(escape(m), 'i') : m;
    expect(pattern.test(e.message), `${e.constructor.name} '${e.message}' does not mention ${pattern}`).toBe(true);
  }
  return e;
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function attribute(m: onnx.ModelProto, op: string, name: string): onnx.IAttributeProto {
  const node = m.graph!.node!.find((n) => n.op_type === op)!;
  let a = node.attribute!.find((x) => x.name === name);
  if (!a) node.attribute!.push((a = new onnx.AttributeProto({ name, type: onnx.AttributeProto.AttributeType.INT })));
  return a;
}

function expectClose(got: Record<string, Feed>, want: Record<string, Feed>): void {
  for (const [name, w] of Object.entries(want)) {
    expect(got[name].dims).toEqual(w.dims);
    for (let i = 0; i < w.data.length; i++) {
      const a = got[name].data[i];
      const b = w.data[i];
      if (Number.isNaN(b)) expect(a, `${name}[${i}]`).toBeNaN();
      else
        expect(Math.abs(a - b), `${name}[${i}]: ${a} vs onnxruntime ${b}`).toBeLessThanOrEqual(
          1e-3 + 1e-3 * Math.abs(b),
        );
    }
  }
}

/** A one-node graph from the builder, as ONNX bytes. */
function tinyModel(build: (b: GraphBuilder, g: Graph) => string, input: { name: string; shape: (number | string)[] }) {
  const g = new Graph();
  g.inputs = [{ name: input.name, dtype: 'float32', shape: input.shape }];
  g.values.set(input.name, { name: input.name, dtype: 'float32', shape: input.shape });
  const y = build(new GraphBuilder(g, 3), g);
  g.outputs = [{ name: y, dtype: 'float32' }];
  return g;
}

describe('issue 13 reproducers: models', () => {
  it('Gemm transA = 10,000,000 is true, as in onnxruntime (not a silent wrong answer)', async () => {
    const { bytes, feeds } = nodeCase('test_gemm_transposeA', (m) => (attribute(m, 'Gemm', 'transA').i = 10_000_000));
    expectClose(await pipeline(bytes, feeds), await runOrt(bytes, feeds));
  });

  it("an unknown attribute ('alpha' → 'ampha') is refused, naming node, op and attribute", async () => {
    const { bytes, feeds } = nodeCase('test_gemm_alpha', (m) => (attribute(m, 'Gemm', 'alpha').name = 'ampha'));
    await expectTypedError(() => pipeline(bytes, feeds), ['Gemm', 'ampha']);
  });

  it('IR version 15 is refused', async () => {
    const { bytes, feeds } = nodeCase('test_relu', (m) => (m.ir_version = 15));
    await expectTypedError(() => pipeline(bytes, feeds), [/IR version/i, '15']);
  });

  it('an invalid elem_type (23) is refused, naming the value', async () => {
    const { bytes, feeds } = nodeCase('test_relu', (m) => (m.graph!.input![0].type!.tensor_type!.elem_type = 23));
    await expectTypedError(() => pipeline(bytes, feeds), ['23', 'x']);
  });

  it('an even LRN size is refused, naming node, op and attribute', async () => {
    const { bytes, feeds } = nodeCase('test_lrn', (m) => (attribute(m, 'LRN', 'size').i = 4));
    await expectTypedError(() => pipeline(bytes, feeds), ['LRN', 'size']);
  });

  it('LRN alpha 0 and beta 0 are refused, as onnxruntime refuses them (seed 10083)', async () => {
    for (const name of ['alpha', 'beta']) {
      const { bytes, feeds } = nodeCase('test_lrn', (m) => (attribute(m, 'LRN', name).f = 0));
      await expectTypedError(() => pipeline(bytes, feeds), ['LRN', name, '> 0']);
    }
  });

  it('an attribute given twice is refused, naming it (seed 10091)', async () => {
    const { bytes, feeds } = nodeCase('test_lrn', (m) => {
      const node = m.graph!.node![0];
      node.attribute!.push({ ...node.attribute![0] });
    });
    await expectTypedError(() => pipeline(bytes, feeds), ['LRN', 'twice']);
  });

  it('a value defined twice, or a graph input listed twice, is refused (seeds 113, 10078)', async () => {
    const twice = nodeCase('test_relu', (m) => m.graph!.node!.push({ ...m.graph!.node![0] }));
    await expectTypedError(() => pipeline(twice.bytes, twice.feeds), ['defined twice', 'Relu']);
    // Edited after the inputs are read: the data set has one tensor per distinct input.
    const model = onnx.ModelProto.decode(twice.bytes);
    model.graph!.node!.pop();
    model.graph!.input!.push({ ...model.graph!.input![0] });
    const inputTwice = onnx.ModelProto.encode(model).finish();
    await expectTypedError(() => pipeline(inputTwice, twice.feeds), ['listed twice', 'x']);
  });

  it('what onnxruntime refuses on loading is refused, naming what is wrong (fuzz seeds 37, 53, 208, 388, 646, 851, 2577)', async () => {
    const cases: [string, string, (m: onnx.ModelProto) => void, string[]][] = [
      ['too many inputs', 'test_softmax_axis_0', (m) => m.graph!.node![0].input!.push('x'), ['Softmax', '2 inputs']],
      [
        'no element type on an input',
        'test_relu',
        (m) => (m.graph!.input![0].type!.tensor_type!.elem_type = 0),
        ["'x'", 'elem_type 0'],
      ],
      [
        'an output declared with another dtype',
        'test_relu',
        (m) => (m.graph!.output![0].type!.tensor_type!.elem_type = 4),
        ['Relu', 'uint16'],
      ],
      ['an attribute without a type', 'test_lrn', (m) => (attribute(m, 'LRN', 'size').type = 0), ['size', 'no type']],
      [
        'an attribute of no ONNX type',
        'test_lrn',
        (m) => (attribute(m, 'LRN', 'size').type = 99 as onnx.AttributeProto.AttributeType),
        ['size', 'type 99'],
      ],
      ['no default-domain opset', 'test_relu', (m) => (m.opset_import = []), ['opset']],
    ];
    for (const [what, name, edit, mentions] of cases) {
      const { bytes, feeds } = nodeCase(name, edit);
      await expectTypedError(() => pipeline(bytes, feeds), mentions).catch((e: Error) => {
        throw new Error(`${what}: ${e.message}`);
      });
    }
  });

  it('a graph input declared with other dims than its initializer is refused (seeds 2577, 13403)', async () => {
    const { bytes, feeds } = nodeCase('test_relu');
    // Edited after the feeds are read: the data set has no tensor for an initialized input.
    const model = onnx.ModelProto.decode(bytes);
    model.graph!.initializer!.push({ name: 'w', dims: [2], data_type: 1, float_data: [1, 2] });
    model.graph!.input!.push({
      name: 'w',
      type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_value: 3 }] } } },
    });
    const edited = onnx.ModelProto.encode(model).finish();
    await expectTypedError(() => pipeline(edited, feeds), ["'w'", 'declared [3]', 'dims [2]']);
    // And with the right dims but another element type (seed 13403).
    model.graph!.input!.at(-1)!.type!.tensor_type!.shape!.dim![0].dim_value = 2;
    model.graph!.input!.at(-1)!.type!.tensor_type!.elem_type = 7;
    const retyped = onnx.ModelProto.encode(model).finish();
    await expectTypedError(() => pipeline(retyped, feeds), ["'w'", 'declared int64', 'initializer is float32']);
  });

  it('a required input left out is refused before folding reads it (seeds 210, 497)', async () => {
    const { bytes, feeds } = nodeCase('test_identity', (m) => (m.graph!.node![0].input = ['']));
    await expectTypedError(() => pipeline(bytes, feeds), ['Identity', 'input 0 is required']);
  });

  it('a huge LRN size (2^52 − 1) is a ModelError naming the attribute, not an internal assert', async () => {
    const { bytes, feeds } = nodeCase('test_lrn', (m) => (attribute(m, 'LRN', 'size').i = 2 ** 52 - 1));
    await expectTypedError(() => pipeline(bytes, feeds), ['LRN', 'size']);
  });

  it('a huge Conv stride (2^53) is a ModelError naming the attribute', async () => {
    const g = tinyModel(
      (b) => b.op('Conv', ['x', b.weight('w', [2, 1, 3, 3], 'he')], { kernel_shape: [3, 3], strides: [2 ** 53, 1] }),
      { name: 'x', shape: [1, 1, 8, 8] },
    );
    const feeds = { x: { dims: [1, 1, 8, 8], data: new Float32Array(64).fill(0.5) } };
    await expectTypedError(() => pipeline(encodeModel(g), feeds), ['Conv', 'strides']);
  });

  it('a graph output that no node produces is refused by name, not as an internal error', async () => {
    const { bytes, feeds } = nodeCase('test_relu', (m) => {
      m.graph!.output!.push(new onnx.ValueInfoProto({ name: 'nowhere', type: m.graph!.output![0].type }));
    });
    const e = await expectTypedError(() => pipeline(bytes, feeds), ['nowhere']);
    expect(e.message).not.toMatch(/internal/);
  });

  it('a Gemm C that does not broadcast is a ModelError naming node and op', async () => {
    const { bytes, feeds } = nodeCase('test_gemm_default_vector_bias', (m) => {
      m.graph!.input![2].type!.tensor_type!.shape!.dim = [new onnx.TensorShapeProto.Dimension({ dim_value: 3 })];
    });
    feeds[Object.keys(feeds)[2]] = { dims: [3], data: new Float32Array([1, 2, 3]) };
    await expectTypedError(() => pipeline(bytes, feeds), ['Gemm']);
  });

  it('ConstantOfShape with a huge shape is refused before anything is allocated', async () => {
    const g = tinyModel(
      (b) => b.op('Add', ['x', b.op('ConstantOfShape', [b.int64('shape', [2 ** 20, 2 ** 20, 2 ** 10])])]),
      { name: 'x', shape: [1] },
    );
    const bytes = encodeModel(g);
    await expectTypedError(() => prepareGraph(decodeModel(bytes, { file: 'huge.onnx' })), ['ConstantOfShape']);
  });

  it('inputShapes with batch −1 is refused naming the input', async () => {
    const g = tinyModel((b) => b.op('Gemm', ['x', b.weight('w', [3, 4], 'he')], { transB: 1 }), {
      name: 'x',
      shape: ['N', 4],
    });
    await expectTypedError(() => Session.create(g, { gpu, inputShapes: { x: [-1, 4] } }), ['x', '-1']);
  });

  it('bad calls are typed errors naming the argument: run(undefined), run(null), create(null), no gpu, after dispose', async () => {
    const { bytes, feeds } = nodeCase('test_relu');
    const session = await Session.create(bytes, { gpu });
    await expectTypedError(
      () => session.run(undefined as unknown as Record<string, Feed>),
      [/object of input tensors/i],
    );
    await expectTypedError(() => session.run(null as unknown as Record<string, Feed>), [/object of input tensors/i]);
    session.dispose();
    await expectTypedError(() => session.run(feeds), [/dispos/i]);
    await expectTypedError(() => Session.create(null as unknown as Uint8Array, { gpu }), [/model/i]);
    await expectTypedError(() => Session.create(bytes, {} as SessionOptions), [/gpu/i]);
  });

  for (const [what, value] of [
    ['NaN', NaN],
    ['Inf', Infinity],
  ] as const) {
    it(`an all-${what} input gives what onnxruntime gives (NaN), not plausible probabilities (SqueezeNet)`, async () => {
      const bytes = readBytes(lightModelPath('squeezenet'));
      const input = decodeModel(bytes).feedInputs[0].name;
      const feeds = { [input]: { dims: [1, 3, 224, 224], data: new Float32Array(3 * 224 * 224).fill(value) } };
      const want = await runOrt(bytes, feeds);
      expect([...Object.values(want)[0].data].some(Number.isNaN)).toBe(true);
      expectClose(await pipeline(bytes, feeds), want);
    });
  }
  it('before opset 7 an elementwise op does not broadcast, and a Gemm C must be [M, N] (seeds 12643, 16122)', async () => {
    const sub = nodeCase('test_sub_bcast', (m) => (m.opset_import![0].version = 3));
    await expectTypedError(() => pipeline(sub.bytes, sub.feeds), ['Sub', 'before opset 7']);
    const gemm = nodeCase('test_gemm_default_vector_bias', (m) => (m.opset_import![0].version = 2));
    await expectTypedError(() => pipeline(gemm.bytes, gemm.feeds), ['Gemm', 'broadcast=1']);
  });

  it('an old opset that onnxruntime has no kernel for runs as onnxruntime runs it at opset 7 (seeds 6316, 4766)', async () => {
    for (const [name, op] of [
      ['test_sub', 'Sub'],
      ['test_gemm_default_matrix_bias', 'Gemm'],
    ] as const) {
      const old = nodeCase(name, (m) => (m.opset_import![0].version = 4));
      const at7 = nodeCase(name, (m) => (m.opset_import![0].version = 7));
      await expect(runOrt(old.bytes, old.feeds), `onnxruntime has a ${op}(1) kernel now`).rejects.toThrow(
        /Could not find an implementation/,
      );
      expectClose(await pipeline(old.bytes, old.feeds), await runOrt(at7.bytes, at7.feeds));
    }
  });

  it('an input declared without dims, fed with some, is a typed refusal, not an internal error (seed 3432)', async () => {
    const { bytes, feeds } = nodeCase(
      'test_mul_example',
      (m) => (m.graph!.input![1].type!.tensor_type!.shape!.dim = []),
    );
    const e = await expectTypedError(() => pipeline(bytes, feeds), ["'y'", 'declared []']);
    expect(e.message).not.toMatch(/internal/);
  });

  it("Dropout's ratio must be a scalar (seed 10508)", async () => {
    const { bytes, feeds } = nodeCase('test_dropout_default', (m) => (m.graph!.node![0].input = ['x', 'x']));
    await expectTypedError(() => pipeline(bytes, feeds), ['Dropout', 'ratio', 'scalar']);
  });

  it('a pool pad as large as its kernel is refused, as onnxruntime refuses it (seeds 12233, 14973)', async () => {
    const { bytes, feeds } = nodeCase(
      'test_maxpool_2d_pads',
      (m) => (attribute(m, 'MaxPool', 'pads').ints = [0, 0, 0, 3]),
    );
    await expectTypedError(() => pipeline(bytes, feeds), ['MaxPool', 'pads', 'kernel_shape']);
  });

  it('a negative Flatten axis before opset 11 is refused (seed 12562)', async () => {
    const { bytes, feeds } = nodeCase('test_flatten_negative_axis1', (m) => (m.opset_import![0].version = 9));
    await expectTypedError(() => pipeline(bytes, feeds), ['Flatten', 'axis -1', 'opset 11']);
  });

  it('a domain imported at two versions is refused (seed 17560)', async () => {
    const { bytes, feeds } = nodeCase('test_gemm_alpha', (m) => {
      m.opset_import!.push(new onnx.OperatorSetIdProto({ domain: '', version: 55 }));
    });
    await expectTypedError(() => pipeline(bytes, feeds), ['twice', '55']);
  });

  it('a pool kernel far larger than its input answers at once (no loop over the kernel)', async () => {
    const huge = 65_536;
    for (const [name, op, includePad] of [
      ['test_maxpool_2d_default', 'MaxPool', undefined],
      ['test_averagepool_2d_default', 'AveragePool', 0],
      ['test_averagepool_2d_default', 'AveragePool', 1],
    ] as const) {
      const ints = (m: onnx.ModelProto, attr: string, values: number[]) =>
        Object.assign(attribute(m, op, attr), { type: onnx.AttributeProto.AttributeType.INTS, ints: values });
      const { bytes, feeds } = nodeCase(name, (m) => {
        ints(m, 'kernel_shape', [huge, huge]);
        ints(m, 'strides', [huge, huge]);
        ints(m, 'pads', [huge - 1, huge - 1, huge - 1, huge - 1]);
        if (includePad !== undefined) attribute(m, op, 'count_include_pad').i = includePad;
        m.graph!.output![0].type!.tensor_type!.shape = null;
      });
      // The reference pools the part of each window inside the input directly (a float64 loop over
      // a 65536² window would take minutes); onnxruntime-node agrees with it.
      const [x] = Object.values(feeds);
      const [n, c, h, w] = x.dims;
      const out = 2; // (32 + 2·65535 − 65536) / 65536 + 1
      const want = new Float32Array(n * c * out * out);
      for (let plane = 0; plane < n * c; plane++) {
        for (let oh = 0; oh < out; oh++) {
          for (let ow = 0; ow < out; ow++) {
            const [r0, c0] = [oh * huge - (huge - 1), ow * huge - (huge - 1)];
            const rows = [Math.max(0, r0), Math.min(h, r0 + huge)];
            const cols = [Math.max(0, c0), Math.min(w, c0 + huge)];
            let best = -Infinity;
            let sum = 0;
            for (let i = rows[0]; i < rows[1]; i++) {
              for (let j = cols[0]; j < cols[1]; j++) {
                const v = x.data[(plane * h + i) * w + j];
                best = Math.max(best, v);
                sum += v;
              }
            }
            // count_include_pad counts the window's positions inside the padded input.
            const padded = (Math.min(h + huge - 1, r0 + huge) - r0) * (Math.min(w + huge - 1, c0 + huge) - c0);
            const valid = (rows[1] - rows[0]) * (cols[1] - cols[0]);
            want[(plane * out + oh) * out + ow] = op === 'MaxPool' ? best : sum / (includePad ? padded : valid);
          }
        }
      }
      const got = await pipeline(bytes, feeds);
      const [name0] = Object.keys(got);
      expectClose(got, { [name0]: { dims: [n, c, out, out], data: want } });
      expectClose(got, await runOrt(bytes, feeds));
    }
  });
});

describe('issue 13 reproducers: checkpoints (CRC valid, contents not)', () => {
  const [adam] = checkpointCorpus();
  const forged = (edit: (meta: Record<string, string>, header: Record<string, unknown>) => void) =>
    forgeCheckpoint(adam.bytes, (header) => edit(header.__metadata__ as Record<string, string>, header));
  const load = (bytes: Uint8Array) => () =>
    deserializeCheckpoint(bytes, { source: 'forged.safetensors', expected: adam.expected });

  it('fingerprint without parameters', async () => {
    const bytes = forged((meta) => {
      const f = JSON.parse(meta['graft.fingerprint']) as Record<string, unknown>;
      delete f.parameters;
      meta['graft.fingerprint'] = JSON.stringify(f);
    });
    const e = await expectTypedError(load(bytes), ['forged.safetensors', 'fingerprint']);
    expect(e.name).toBe('CheckpointError');
  });

  it('a null tensor entry', async () => {
    const bytes = forged((_, header) => (header['c.weight'] = null));
    const e = await expectTypedError(load(bytes), ['forged.safetensors', 'c.weight']);
    expect(e.name).toBe('CheckpointError');
  });

  it('epoch 1e300 and step −5', async () => {
    for (const [key, value] of [
      ['graft.epoch', '1e300'],
      ['graft.epoch', String(10n ** 300n)],
      ['graft.step', '-5'],
    ]) {
      const e = await expectTypedError(load(forged((meta) => (meta[key] = value))), [key.slice(6)]);
      expect(e.name).toBe('CheckpointError');
    }
  });
});
