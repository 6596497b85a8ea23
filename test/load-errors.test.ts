// Bad input: every malformed model gives a ModelError naming the file and, where there is one,
// the node (name and op); none crashes, hangs or loads quietly wrong.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { encodeModel } from '../src/graph/codec.ts';
import { Graph } from '../src/graph/ir.ts';
import { MAX_SUPPORTED_OPSET } from '../src/graph/load.ts';
import { onnx } from '../src/graph/onnx/onnx-pb.js';
import { loadModelFile, readBytes } from '../src/node/files.ts';
import { lightModelPath } from './helpers/models.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { expectModelError } from './helpers/model-error.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'graft-bad-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, bytes: Uint8Array): string {
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

/** A small valid model: input [1,3,8,8] → Conv(4 filters, 3×3) → Relu → output. */
function tinyModel(): Graph {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: 17 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: [1, 3, 8, 8] }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 1);
  const w = b.weight('w', [4, 3, 3, 3], 'he');
  const c = b.op('Conv', ['x', w], { kernel_shape: [3, 3] }, 'conv');
  const r = b.node('Relu', [c], {}, { name: 'relu', outputs: ['y'] })[0];
  g.outputs = [{ name: r, dtype: 'float32' }];
  return g;
}

describe('bad model files', () => {
  it('the tiny model itself loads (the cases below break one thing each)', () => {
    const g = loadModelFile(write('tiny.onnx', encodeModel(tinyModel())));
    expect(g.values.get('y')?.shape).toEqual([1, 4, 6, 6]);
  });

  it('a truncated file', () => {
    const bytes = readBytes(lightModelPath('squeezenet'));
    const file = write('truncated.onnx', bytes.subarray(0, Math.floor(bytes.length / 2)));
    expectModelError(() => loadModelFile(file), file, /truncated|malformed/);
  });

  it('a file that is not ONNX', () => {
    const text = new TextEncoder().encode('\x89PNG\r\n\x1a\n this is a picture, not a model '.repeat(20));
    const file = write('picture.onnx', text);
    expectModelError(() => loadModelFile(file), file, /not (a valid )?(an )?ONNX model/);
    const json = write('config.onnx', new TextEncoder().encode('{"model": "resnet50", "layers": [1,2,3]}'));
    expectModelError(() => loadModelFile(json), json, /ONNX/);
  });

  it('an empty file and a missing file', () => {
    const empty = write('empty.onnx', new Uint8Array(0));
    expectModelError(() => loadModelFile(empty), empty, /empty/);
    expectModelError(() => loadModelFile(path.join(dir, 'nope.onnx')), 'nope.onnx', /no such file/);
  });

  it('an empty graph', () => {
    const g = new Graph();
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [1] }];
    g.outputs = [{ name: 'x', dtype: 'float32', shape: [1] }];
    const file = write('empty-graph.onnx', encodeModel(g));
    expectModelError(() => loadModelFile(file), file, /empty: it has no nodes/);
  });

  it('an unknown op names the node and lists what is supported', () => {
    const g = tinyModel();
    g.nodes[1].opType = 'FancyActivation';
    const file = write('unknown-op.onnx', encodeModel(g));
    const e = expectModelError(
      () => loadModelFile(file),
      file,
      "node 'relu' (FancyActivation)",
      /supported ops/,
      /Relu/,
    );
    expect(e.nodeName).toBe('relu');
    expect(e.opType).toBe('FancyActivation');
  });

  it('an op from a custom domain', () => {
    const g = tinyModel();
    g.nodes[1].domain = 'com.example';
    g.opsetImports.push({ domain: 'com.example', version: 1 });
    const file = write('custom-domain.onnx', encodeModel(g));
    expectModelError(() => loadModelFile(file), file, "node 'relu' (Relu)", /domain 'com\.example'/);
  });

  it('an opset newer than supported', () => {
    const g = tinyModel();
    g.opsetImports = [{ domain: '', version: MAX_SUPPORTED_OPSET + 1 }];
    const file = write('new-opset.onnx', encodeModel(g));
    expectModelError(
      () => loadModelFile(file),
      file,
      new RegExp(`opset ${MAX_SUPPORTED_OPSET + 1} is newer than supported`),
    );
  });

  it('a graph with a cycle', () => {
    const g = tinyModel();
    // conv reads relu's output: conv → relu → conv.
    g.nodes[0].inputs[0] = 'y';
    const file = write('cycle.onnx', encodeModel(g));
    expectModelError(() => loadModelFile(file), file, /cycle/, /node '(conv|relu)'/);
  });

  it('an input nobody produces', () => {
    const g = tinyModel();
    g.nodes[1].inputs[0] = 'ghost';
    const file = write('dangling.onnx', encodeModel(g));
    expectModelError(() => loadModelFile(file), file, "node 'relu' (Relu)", /'ghost'/);
  });

  it('a shape that cannot be inferred', () => {
    const g = tinyModel();
    g.initializers.get('w')!.value = { dtype: 'float32', dims: [4, 5, 3, 3], data: randomFloat32Array(180, 3) };
    const file = write('bad-shape.onnx', encodeModel(g));
    expectModelError(() => loadModelFile(file), file, "node 'conv' (Conv)", /3 channels/, /expects 5/);

    const h = tinyModel();
    const b = new GraphBuilder(h, 2);
    const shapeIn = 'dynamic_shape';
    h.inputs.push({ name: shapeIn, dtype: 'int64', shape: [2] });
    h.values.set(shapeIn, { ...h.inputs[1] });
    const r = b.op('Reshape', ['y', shapeIn], {}, 'reshape_dynamic');
    h.outputs = [{ name: r }];
    const file2 = write('unknown-reshape.onnx', encodeModel(h));
    expectModelError(() => loadModelFile(file2), file2, "node 'reshape_dynamic' (Reshape)", /must be a constant/);
  });

  it('a declared shape that disagrees with the computed one', () => {
    const g = tinyModel();
    g.values.set('y', { name: 'y', dtype: 'float32', shape: [1, 4, 7, 7] });
    g.outputs = [{ name: 'y', dtype: 'float32', shape: [1, 4, 7, 7] }];
    const file = write('declared.onnx', encodeModel(g));
    expectModelError(
      () => loadModelFile(file),
      file,
      "node 'relu' (Relu)",
      /declared \[1, 4, 7, 7\]/,
      /\[1, 4, 6, 6\]/,
    );
  });

  it('a bad attribute value names the node and what is accepted', () => {
    const g = tinyModel();
    g.nodes[0].attributes.auto_pad = { type: 'string', value: 'SAME_MIDDLE' };
    const file = write('auto-pad.onnx', encodeModel(g));
    expectModelError(() => loadModelFile(file), file, "node 'conv' (Conv)", /auto_pad='SAME_MIDDLE'/, /'SAME_UPPER'/);
  });
});

describe('external data', () => {
  /** The tiny model with its weight moved to `weights.bin` at an offset. */
  function externalModel(name: string, fileBytes: Uint8Array, declaredLength: number, offset = 16): string {
    const g = tinyModel();
    const model = onnx.ModelProto.decode(encodeModel(g));
    const init = model.graph!.initializer![0];
    delete init.raw_data;
    init.data_location = onnx.TensorProto.DataLocation.EXTERNAL;
    init.external_data = [
      { key: 'location', value: 'weights.bin' },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(declaredLength) },
    ];
    const sub = mkdtempSync(path.join(dir, `${name}-`));
    if (fileBytes.length) writeFileSync(path.join(sub, 'weights.bin'), fileBytes);
    const file = path.join(sub, 'model.onnx');
    writeFileSync(file, onnx.ModelProto.encode(model).finish());
    return file;
  }

  const weights = randomFloat32Array(4 * 3 * 3 * 3, 9);
  const weightBytes = new Uint8Array(weights.buffer);

  it('reads the declared range of the file beside the model', () => {
    const padded = new Uint8Array(16 + weightBytes.length + 8);
    padded.set(weightBytes, 16);
    const g = loadModelFile(externalModel('ok', padded, weightBytes.length));
    expect(Array.from(g.initializers.get('w')!.value.data as Float32Array)).toEqual(Array.from(weights));
  });

  it('a missing external file', () => {
    const file = externalModel('missing', new Uint8Array(0), weightBytes.length);
    expectModelError(() => loadModelFile(file), file, /weights\.bin/, /does not exist/);
  });

  it('an external file shorter than its declared length', () => {
    const file = externalModel('short', weightBytes.subarray(0, 100), weightBytes.length);
    expectModelError(
      () => loadModelFile(file),
      file,
      /weights\.bin/,
      /has 100 bytes/,
      new RegExp(`needs ${weightBytes.length} bytes at offset 16`),
    );
  });

  it('a declared length that does not fit the tensor', () => {
    const file = externalModel('length', weightBytes, 12, 0);
    expectModelError(() => loadModelFile(file), file, /tensor 'w'/, /length 12/);
  });
});
