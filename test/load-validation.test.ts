// Untrusted models: every shape, length and count from the file is checked before anything is
// allocated, and what onnxruntime refuses (unknown attributes, IR versions, element types,
// attribute values outside the op's domain, outputs nothing computes) is refused with a
// ModelError naming the node, the attribute and what would be accepted. Each refusal is checked
// against onnxruntime-node on the same bytes: it refuses them too, or the case says why not.
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { decodeModel } from '../src/graph/codec.ts';
import { ModelError } from '../src/graph/errors.ts';
import { MAX_FOLDED_BYTES } from '../src/graph/fold.ts';
import { loadModel } from '../src/graph/load.ts';
import { onnx } from '../src/graph/onnx/onnx-pb.js';
import { MAX_TENSOR_ELEMENTS } from '../src/graph/tensor.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';
import { expectModelError } from './helpers/model-error.ts';
import { lightModelPath } from './helpers/models.ts';
import { readBytes } from './helpers/onnx-testdata.ts';

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;
const A = onnx.AttributeProto.AttributeType;

type Attr = onnx.IAttributeProto;
const int = (name: string, i: number): Attr => ({ name, type: A.INT, i });
const ints = (name: string, v: number[]): Attr => ({ name, type: A.INTS, ints: v });
const float = (name: string, f: number): Attr => ({ name, type: A.FLOAT, f });

function valueInfo(name: string, dims?: number[], elemType = FLOAT): onnx.IValueInfoProto {
  return {
    name,
    type: { tensor_type: { elem_type: elemType, shape: dims && { dim: dims.map((d) => ({ dim_value: d })) } } },
  };
}

function floatTensor(name: string, dims: number[], seed: number): onnx.ITensorProto {
  const data = randomFloat32Array(
    dims.reduce((a, b) => a * b, 1),
    seed,
  );
  return { name, dims, data_type: FLOAT, raw_data: new Uint8Array(data.buffer) };
}

function int64Tensor(name: string, values: number[], dims = [values.length]): onnx.ITensorProto {
  return { name, dims, data_type: INT64, int64_data: values };
}

interface ModelParts {
  nodes: onnx.INodeProto[];
  inputs: onnx.IValueInfoProto[];
  outputs?: onnx.IValueInfoProto[];
  initializers?: onnx.ITensorProto[];
  ir?: number;
  opset?: number;
}

function modelBytes(p: ModelParts): Uint8Array {
  return onnx.ModelProto.encode({
    ir_version: p.ir ?? 8,
    opset_import: [{ domain: '', version: p.opset ?? 17 }],
    graph: {
      name: 'g',
      node: p.nodes,
      input: p.inputs,
      output: p.outputs ?? [valueInfo('y')],
      initializer: p.initializers ?? [],
    },
  }).finish();
}

/** A Gemm y = alpha·x·B + beta·C over x [3, 4], B [4, 5], C [5], with extra attributes. */
function gemmModel(attributes: Attr[], parts: Partial<ModelParts> = {}): Uint8Array {
  return modelBytes({
    nodes: [{ name: 'fc', op_type: 'Gemm', input: ['x', 'b', 'c'], output: ['y'], attribute: attributes }],
    inputs: [valueInfo('x', [3, 4])],
    initializers: [floatTensor('b', [4, 5], 1), floatTensor('c', [5], 2)],
    ...parts,
  });
}

/** x [1, 4, 5, 5] through one node of `op` (with W [2, 4, 1, 1] for Conv). */
function spatialModel(op: string, attributes: Attr[], opset = 17): Uint8Array {
  const conv = op === 'Conv';
  return modelBytes({
    nodes: [{ name: 'n', op_type: op, input: conv ? ['x', 'w'] : ['x'], output: ['y'], attribute: attributes }],
    inputs: [valueInfo('x', [1, 4, 5, 5])],
    initializers: conv ? [floatTensor('w', [2, 4, 1, 1], 3)] : [],
    opset,
  });
}

/** onnxruntime-node's verdict on the bytes: undefined when it loads and runs them, else its message. */
async function ortRefusal(bytes: Uint8Array, feeds: Record<string, number[]>): Promise<string | undefined> {
  try {
    const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 4 });
    try {
      const inputs: Record<string, ort.Tensor> = {};
      for (const [name, dims] of Object.entries(feeds)) {
        const size = dims.reduce((a, b) => a * b, 1);
        inputs[name] = new ort.Tensor('float32', randomFloat32Array(size, 9), dims);
      }
      await session.run(inputs);
    } finally {
      await session.release();
    }
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

const GEMM_FEEDS = { x: [3, 4] };
const SPATIAL_FEEDS = { x: [1, 4, 5, 5] };

describe('refused as onnxruntime refuses them', () => {
  it('an unknown attribute (alpha bit-flipped to ampha), named with the ones the op accepts', async () => {
    const bytes = gemmModel([float('ampha', 2)]);
    expectModelError(
      () => loadModel(bytes),
      "node 'fc' (Gemm): unknown attribute 'ampha'; Gemm accepts alpha, beta, transA, transB",
    );
    expect(await ortRefusal(bytes, GEMM_FEEDS)).toMatch(/Unrecognized attribute: ampha/);
    expect(await ortRefusal(gemmModel([float('alpha', 2)]), GEMM_FEEDS)).toBeUndefined();
    expect(loadModel(gemmModel([float('alpha', 2)])).nodes).toHaveLength(1);
  });

  it('an attribute its op has only at other opsets (Squeeze axes after opset 12), and one an attribute-less op gets', async () => {
    const squeeze = (opset: number) =>
      modelBytes({
        nodes: [{ op_type: 'Squeeze', input: ['x'], output: ['y'], attribute: [ints('axes', [0])] }],
        inputs: [valueInfo('x', [1, 3])],
        opset,
      });
    expectModelError(
      () => loadModel(squeeze(13)),
      'the axes attribute was replaced by the axes input in opset 13; Squeeze has no attributes',
    );
    expect(await ortRefusal(squeeze(13), { x: [1, 3] })).toMatch(/Unrecognized attribute: axes/);
    expect(loadModel(squeeze(11)).values.get('y')?.shape).toEqual([3]);
    expect(await ortRefusal(squeeze(11), { x: [1, 3] })).toBeUndefined();

    const shape = (opset: number) =>
      modelBytes({
        nodes: [{ op_type: 'Shape', input: ['x'], output: ['y'], attribute: [int('start', 1)] }],
        inputs: [valueInfo('x', [1, 3])],
        outputs: [valueInfo('y', undefined, INT64)],
        opset,
      });
    expectModelError(
      () => loadModel(shape(13)),
      "attribute 'start' is not part of Shape at opset 13; Shape has no attributes",
    );
    expect(await ortRefusal(shape(13), { x: [1, 3] })).toMatch(/Unrecognized attribute: start/);
    expect(loadModel(shape(15)).initializers.get('y')?.value.dims).toEqual([1]);
    expect(await ortRefusal(shape(15), { x: [1, 3] })).toBeUndefined();

    const relu = spatialModel('Relu', [float('alpha', 1)]);
    expectModelError(() => loadModel(relu), "unknown attribute 'alpha'; Relu has no attributes");
    expect(await ortRefusal(relu, SPATIAL_FEEDS)).toMatch(/Unrecognized attribute: alpha/);
  });

  it('bytes that are not a Uint8Array', () => {
    for (const bad of [null, undefined, 'model.onnx', [1, 2, 3]])
      expectModelError(
        () => decodeModel(bad as unknown as Uint8Array),
        "decodeModel takes the model's bytes as a Uint8Array",
      );
  });

  it('IR versions above 13 (onnxruntime 1.30: "max supported IR version: 13")', async () => {
    expectModelError(() => decodeModel(gemmModel([], { ir: 14 })), 'IR version 14 is not supported (accepted: 0…13');
    expect(await ortRefusal(gemmModel([], { ir: 14 }), GEMM_FEEDS)).toMatch(/max supported IR version: 13/);
    expectModelError(() => decodeModel(gemmModel([], { ir: 2 ** 40 })), /IR version 1099511627776/);
    expect(await ortRefusal(gemmModel([], { ir: 13 }), GEMM_FEEDS)).toBeUndefined();
    expect(loadModel(gemmModel([], { ir: 13 })).irVersion).toBe(13);
  });

  it('an element type the engine does not know (elem_type 23), naming the accepted ones', async () => {
    const bytes = modelBytes({
      nodes: [{ op_type: 'Relu', input: ['x'], output: ['y'] }],
      inputs: [valueInfo('x', [3, 4], 23)],
    });
    expectModelError(() => loadModel(bytes), "value 'x' has elem_type 23", /accepted: 1 \(float32\), .*22 \(int4\)/);
    expect(await ortRefusal(bytes, { x: [3, 4] })).toMatch(/invalid/);
  });

  it('LRN sizes onnxruntime refuses (even, 0, negative) and sizes no kernel can index', async () => {
    for (const size of [2, 0, -3]) {
      const bytes = spatialModel('LRN', [int('size', size)]);
      expectModelError(() => loadModel(bytes), `size=${size}; accepted: an odd integer in 1…2147483647`);
      expect(await ortRefusal(bytes, SPATIAL_FEEDS), `size ${size}`).toMatch(/size_/);
    }
    // onnxruntime accepts it and then fails to allocate 324259173170675968 bytes at run time.
    expectModelError(() => loadModel(spatialModel('LRN', [int('size', 2 ** 52 - 1)])), /size=4503599627370495/);
    expect(loadModel(spatialModel('LRN', [int('size', 3)])).values.get('y')?.shape).toEqual([1, 4, 5, 5]);
  });

  it('Conv and pool windows outside their domain: zero or negative strides, dilations, kernels, pads; huge ones', async () => {
    const cases: [string, Attr[], RegExp, RegExp | undefined][] = [
      ['Conv', [ints('strides', [0, 1])], /strides \[0,1\]: accepted are integers in 1…2147483647/, /strides/],
      ['Conv', [ints('strides', [-1, 1])], /strides \[-1,1\]/, /strides/],
      ['Conv', [ints('dilations', [0, 1])], /dilations \[0,1\]/, /dilations/],
      [
        'Conv',
        [ints('pads', [-1, 0, 0, 0])],
        /pads \[-1,0,0,0\] must have 4 entries, integers in 0…2147483647/,
        /pads/,
      ],
      ['MaxPool', [ints('kernel_shape', [0, 1])], /kernel_shape \[0,1\]/, /kernel_shape/],
      ['MaxPool', [ints('kernel_shape', [1, 1]), ints('strides', [0, 1])], /strides \[0,1\]/, /strides/],
      // onnxruntime runs these (one output position); the kernels index with 32-bit integers.
      ['Conv', [ints('strides', [2 ** 53, 1])], /strides \[9007199254740992,1\]/, undefined],
      ['Conv', [ints('pads', [2 ** 31, 0, 0, 0])], /pads \[2147483648,0,0,0\]/, undefined],
    ];
    for (const [op, attrs, ours, theirs] of cases) {
      const bytes = spatialModel(op, attrs);
      expectModelError(() => loadModel(bytes), `node 'n' (${op})`, ours);
      const verdict = await ortRefusal(bytes, SPATIAL_FEEDS);
      if (theirs) expect(verdict, String(ours)).toMatch(theirs);
    }
    const fine = spatialModel('Conv', [ints('strides', [2, 2]), ints('pads', [1, 1, 1, 1])]);
    expect(loadModel(fine).values.get('y')?.shape).toEqual([1, 2, 4, 4]);
  });

  it('a graph output that no node computes (refused at load, not as an internal error at Session.create)', async () => {
    const bytes = modelBytes({
      nodes: [{ op_type: 'Relu', input: ['x'], output: ['y'] }],
      inputs: [valueInfo('x', [3, 4])],
      outputs: [valueInfo('y'), valueInfo('z', [3, 4])],
    });
    expectModelError(() => loadModel(bytes), "graph output 'z' is not computed by any node");
    expect(await ortRefusal(bytes, { x: [3, 4] })).toMatch(/Graph output \(z\) does not exist/);
  });

  it('a Gemm C that does not broadcast to [M, N] (one way only), at shape inference', async () => {
    // [1, 5] and C [6, 5] broadcast together (to [6, 5]), but Gemm's output is [M, N] = [1, 5].
    const wide = gemmModel([], {
      inputs: [valueInfo('x', [1, 4])],
      initializers: [floatTensor('b', [4, 5], 1), floatTensor('c', [6, 5], 2)],
    });
    expectModelError(() => loadModel(wide), "node 'fc' (Gemm)", /C \[6, 5\] does not broadcast to the output \[1, 5\]/);
    expect(await ortRefusal(wide, { x: [1, 4] })).toBeDefined();
    const mismatched = gemmModel([], { initializers: [floatTensor('b', [4, 5], 1), floatTensor('c', [4], 2)] });
    expectModelError(() => loadModel(mismatched), "node 'fc' (Gemm)", /cannot be broadcast/);
  });

  it('non-finite, negative, fractional or non-list inputShapes', () => {
    const bytes = gemmModel([], {
      inputs: [
        {
          name: 'x',
          type: { tensor_type: { elem_type: FLOAT, shape: { dim: [{ dim_param: 'batch' }, { dim_value: 4 }] } } },
        },
      ],
    });
    for (const dims of [
      [-1, 4],
      [Number.NaN, 4],
      [Infinity, 4],
      [1.5, 4],
      [2 ** 53, 4],
    ])
      expectModelError(
        () => loadModel(bytes, { inputShapes: { x: dims } }),
        `inputShapes['x'] = [${dims.join(', ')}] is not a shape`,
      );
    expectModelError(
      () => loadModel(bytes, { inputShapes: { x: 'big' as unknown as number[] } }),
      "inputShapes['x'] = big is not a shape: it is string",
    );
    expect(loadModel(bytes, { inputShapes: { x: [7, 4] } }).values.get('y')?.shape).toEqual([7, 5]);
  });
});

describe('flag attributes read as onnxruntime reads each one', () => {
  /** The output dims onnxruntime computes for x of `dims`. */
  async function ortDims(bytes: Uint8Array, dims: number[]): Promise<readonly number[]> {
    const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 4 });
    try {
      const x = new ort.Tensor(
        'float32',
        randomFloat32Array(
          dims.reduce((p, q) => p * q, 1),
          4,
        ),
        dims,
      );
      return (await session.run({ x }))[session.outputNames[0]].dims;
    } finally {
      await session.release();
    }
  }

  // Gemm's transA/transB: any non-zero value is true; ReduceMean's keepdims and
  // noop_with_empty_axes, MaxPool's ceil_mode and Reshape's allowzero: only 1 is.
  const single = (op: string, attributes: Attr[], opset = 17, extra: Partial<ModelParts> = {}) =>
    modelBytes({
      nodes: [
        {
          name: 'n',
          op_type: op,
          input: ['x', ...(extra.initializers ?? []).map((t) => t.name!)],
          output: ['y'],
          attribute: attributes,
        },
      ],
      inputs: [valueInfo('x', [1, 2, 5, 5])],
      opset,
      ...extra,
    });
  /** A Gemm with `flag` = v over x of `xDims` and B of `bDims` (C sized to the output's columns). */
  const gemmFlag = (flag: string, xDims: number[], bDims: number[]) => (v: number) =>
    gemmModel([int(flag, v)], {
      inputs: [valueInfo('x', xDims)],
      initializers: [floatTensor('b', bDims, 1), floatTensor('c', [flag === 'transB' ? bDims[0] : bDims[1]], 2)],
    });
  const cases: [string, (v: number) => Uint8Array, number[]][] = [
    ['Gemm transA', gemmFlag('transA', [4, 3], [4, 5]), [4, 3]],
    ['Gemm transB', gemmFlag('transB', [3, 5], [4, 5]), [3, 5]],
    ['ReduceMean keepdims', (v) => single('ReduceMean', [ints('axes', [2, 3]), int('keepdims', v)], 13), [1, 2, 5, 5]],
    [
      'ReduceMean noop_with_empty_axes',
      (v) => single('ReduceMean', [int('noop_with_empty_axes', v)], 18),
      [1, 2, 5, 5],
    ],
    [
      'MaxPool ceil_mode',
      (v) => single('MaxPool', [ints('kernel_shape', [2, 2]), ints('strides', [2, 2]), int('ceil_mode', v)]),
      [1, 2, 5, 5],
    ],
    [
      'Reshape allowzero',
      (v) => single('Reshape', [int('allowzero', v)], 17, { initializers: [int64Tensor('s', [1, 0, 25])] }),
      [1, 2, 5, 5],
    ],
  ];
  for (const [what, model, dims] of cases) {
    it(what, async () => {
      for (const v of [0, 1, 2, -1, 10_000_000]) {
        const bytes = model(v);
        const want = await ortDims(bytes, dims).catch(() => undefined);
        if (want === undefined) {
          // onnxruntime refuses (Reshape allowzero = 1 with a 0 in the shape): so do we.
          expect(() => loadModel(bytes), `${what} = ${v}`).toThrow(ModelError);
          continue;
        }
        expect(loadModel(bytes).values.get('y')?.shape, `${what} = ${v}`).toEqual([...want]);
      }
    });
  }
});

describe('nothing allocated before its size is checked', () => {
  it('large fills made in the second pass keep their place among the initializers (light SqueezeNet)', () => {
    const bytes = readBytes(lightModelPath('squeezenet'));
    const fills = decodeModel(bytes)
      .nodes.filter((n) => n.opType === 'ConstantOfShape')
      .map((n) => n.outputs[0]);
    const names = [...loadModel(bytes).initializers.keys()].filter((n) => fills.includes(n));
    // Both sizes of fill are there (else the order would not be tested).
    expect(names.length).toBe(fills.length);
    expect(names).toEqual(fills);
  });

  /** The process's resident memory grows by less than this across a refused load. */
  const SMALL_GROWTH = 256 * 2 ** 20;

  function expectRefusedWithoutAllocating(bytes: Uint8Array, ...fragments: (string | RegExp)[]): void {
    const before = process.memoryUsage().rss;
    expectModelError(() => loadModel(bytes), ...fragments);
    expect(process.memoryUsage().rss - before).toBeLessThan(SMALL_GROWTH);
  }

  /** ConstantOfShape(shape) → Add(x, fill) → y, x of `xDims`. */
  function fillModel(shape: number[], xDims: number[]): Uint8Array {
    return modelBytes({
      nodes: [
        {
          name: 'fill',
          op_type: 'ConstantOfShape',
          input: ['s'],
          output: ['f'],
          attribute: [{ name: 'value', type: A.TENSOR, t: { dims: [1], data_type: FLOAT, float_data: [0.5] } }],
        },
        { name: 'add', op_type: 'Add', input: ['x', 'f'], output: ['y'] },
      ],
      inputs: [valueInfo('x', xDims)],
      initializers: [int64Tensor('s', shape)],
    });
  }

  it('ConstantOfShape with a huge, negative or over-cap shape: a ModelError, no RangeError', async () => {
    expectRefusedWithoutAllocating(fillModel([2 ** 40], [1]), "node 'fill' (ConstantOfShape)", /MAX_TENSOR_ELEMENTS/);
    expectRefusedWithoutAllocating(fillModel([1, 4, -3, 3], [1]), "node 'fill'", /dim -3 is not an integer/);
    expect(await ortRefusal(fillModel([1, 4, -3, 3], [1]), { x: [1] })).toMatch(/non-negative/);
    expectRefusedWithoutAllocating(
      fillModel([100_000, 100_000], [1]),
      /10000000000 elements, over MAX_TENSOR_ELEMENTS/,
    );
    // Within the element cap, but over what folding may materialise.
    expectRefusedWithoutAllocating(
      fillModel([2 ** 29, 2], [1]),
      "node 'fill' (ConstantOfShape)",
      `budget for constants computed while loading (MAX_FOLDED_BYTES`,
    );
    expect(2 ** 30 * 4).toBeGreaterThan(MAX_FOLDED_BYTES);
  });

  it('a large fill is materialised only once the rest of the graph is sound', () => {
    // 1 GiB of fill, within every cap, feeding an Add whose shapes cannot broadcast.
    expectRefusedWithoutAllocating(fillModel([2 ** 28], [3]), "node 'add' (Add)", /cannot be broadcast/);
    // The same fill made small loads and folds (the deferral changes nothing for sound graphs).
    const g = loadModel(fillModel([2 ** 17], [2 ** 17]));
    expect(g.initializers.get('f')?.value.dims).toEqual([2 ** 17]);
    expect(g.values.get('y')?.shape).toEqual([2 ** 17]);
  });

  it('Range with a zero, non-finite or huge count; folded arithmetic that broadcasts past the cap', () => {
    const range = (start: number, limit: number, delta: number) =>
      modelBytes({
        nodes: [{ name: 'r', op_type: 'Range', input: ['a', 'b', 'd'], output: ['y'] }],
        inputs: [],
        initializers: [int64Tensor('a', [start], []), int64Tensor('b', [limit], []), int64Tensor('d', [delta], [])],
      });
    expectRefusedWithoutAllocating(range(0, 2 ** 40, 1), "node 'r' (Range)", /MAX_TENSOR_ELEMENTS/);
    expectRefusedWithoutAllocating(range(0, 10, 0), "node 'r' (Range)", /delta is 0/);
    expect(loadModel(range(0, 10, 3)).initializers.get('y')?.value.dims).toEqual([4]);

    const add = modelBytes({
      nodes: [{ name: 'outer', op_type: 'Add', input: ['p', 'q'], output: ['y'] }],
      inputs: [],
      initializers: [
        int64Tensor('p', new Array(2 ** 15).fill(1), [2 ** 15, 1]),
        int64Tensor('q', new Array(2 ** 17).fill(2), [1, 2 ** 17]),
      ],
    });
    expectRefusedWithoutAllocating(add, "node 'outer' (Add)", /4294967296 elements, over MAX_TENSOR_ELEMENTS/);
  });

  it('tensor dims that are huge or disagree with the stored bytes, and a negative external offset', () => {
    const relu = (init: onnx.ITensorProto) =>
      modelBytes({
        nodes: [{ op_type: 'Add', input: ['x', init.name!], output: ['y'] }],
        inputs: [valueInfo('x', [1])],
        initializers: [init],
      });
    const four = new Uint8Array(4);
    expectRefusedWithoutAllocating(
      relu({ name: 'w', dims: [2 ** 40], data_type: FLOAT, raw_data: four }),
      "tensor 'w' has invalid dims [1099511627776]",
      /MAX_TENSOR_ELEMENTS/,
    );
    expectRefusedWithoutAllocating(
      relu({ name: 'w', dims: [2 ** 20, 2 ** 20], data_type: FLOAT, raw_data: four }),
      /1099511627776 elements, over MAX_TENSOR_ELEMENTS = 2147483647/,
    );
    expectRefusedWithoutAllocating(
      relu({ name: 'w', dims: [1_000_000], data_type: FLOAT, raw_data: four }),
      /raw_data has 4 bytes, expected 4000000/,
    );
    expectRefusedWithoutAllocating(
      relu({ name: 'w', dims: [1_000_000], data_type: FLOAT, float_data: [1] }),
      /float_data has 1 values, expected 1000000/,
    );
    const external = relu({
      name: 'w',
      dims: [1],
      data_type: FLOAT,
      data_location: onnx.TensorProto.DataLocation.EXTERNAL,
      external_data: [
        { key: 'location', value: 'w.bin' },
        { key: 'offset', value: '-8' },
      ],
    });
    expectModelError(
      () => decodeModel(external, { readExternal: () => new Uint8Array(4) }),
      "external_data offset '-8' is not a non-negative integer",
    );
    expect(MAX_TENSOR_ELEMENTS).toBe(2 ** 31 - 1);
  });

  it('a declared dim no tensor can have, on a graph input', () => {
    const bytes = modelBytes({
      nodes: [{ op_type: 'Relu', input: ['x'], output: ['y'] }],
      inputs: [valueInfo('x', [3, -12321])],
    });
    expectModelError(() => loadModel(bytes), "value 'x' is declared [3, -12321]: dim -12321 is not an integer");
  });

  it('seeded random shapes for ConstantOfShape: refused exactly when a dim is negative or the size over the caps', () => {
    const random = mulberry32(13);
    for (let i = 0; i < 40; i++) {
      const dims = Array.from({ length: 1 + Math.floor(random() * 3) }, () =>
        Math.floor((random() - 0.1) * 2 ** (random() * 24)),
      );
      const elements = dims.reduce((a, b) => a * b, 1);
      const bad = dims.some((d) => d < 0) || elements > MAX_TENSOR_ELEMENTS || elements * 4 > MAX_FOLDED_BYTES;
      const bytes = fillModel(dims, [1]);
      if (bad) expectRefusedWithoutAllocating(bytes, "node 'fill' (ConstantOfShape)");
      else if (elements > 0 && elements <= 2 ** 22) {
        // Add(x [1], fill) broadcasts to the fill's shape.
        expect(loadModel(bytes).values.get('y')?.shape, `[${dims}]`).toEqual(dims);
      }
    }
  });
});
