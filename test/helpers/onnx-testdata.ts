// Access to the ONNX backend conformance data shipped by Debian's libonnx-testdata package:
// <root>/<suite>/<case>/model.onnx plus test_data_set_N/{input,output}_i.pb (TensorProtos).
import fs from 'node:fs';
import path from 'node:path';
import { decodeTensor } from '../../src/graph/codec.ts';
import { onnx } from '../../src/graph/onnx/onnx-pb.js';
import type { TensorValue } from '../../src/graph/tensor.ts';

export const TESTDATA_ROOT = process.env.ONNX_TESTDATA_ROOT ?? '/usr/share/libonnx-testdata/data';

export type Suite = 'node' | 'simple' | 'pytorch-converted' | 'pytorch-operator';

export interface TestCase {
  name: string;
  dir: string;
  modelPath: string;
}

/** Throws (so the calling test fails, never skips) when the conformance data is not installed. */
export function requireTestdata(suite?: Suite): string {
  const dir = suite ? path.join(TESTDATA_ROOT, suite) : TESTDATA_ROOT;
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new Error(
      `ONNX conformance test data not found at ${dir}. ` +
        'Install it with `sudo bash scripts/setup-system.sh` (Debian/Ubuntu package libonnx-testdata).',
    );
  }
  return dir;
}

/** The cases of one suite that have a model.onnx, sorted by name. */
export function listCases(suite: Suite): TestCase[] {
  const root = requireTestdata(suite);
  return fs
    .readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => ({ name: e.name, dir: path.join(root, e.name), modelPath: path.join(root, e.name, 'model.onnx') }))
    .filter((c) => fs.existsSync(c.modelPath))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** A file's bytes in a Uint8Array of its own (readFileSync may return a view into a shared
 * pool for small files; this copy starts at offset 0 and owns its buffer). */
export function readBytes(file: string): Uint8Array {
  const buf = fs.readFileSync(file);
  const out = new Uint8Array(buf.byteLength);
  out.set(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength));
  return out;
}

/** Decodes a serialized TensorProto file with the project's own schema and tensor decoder. */
export function readTensorProto(file: string): TensorValue {
  return decodeTensor(onnx.TensorProto.decode(readBytes(file)), { file });
}

export interface ReadTestDataOptions {
  /** Read only the first `sets` data sets. */
  sets?: number;
  /** Also read output_i.pb (default true). */
  outputs?: boolean;
}

/** Every test_data_set_N of a case (sorted by N), with inputs and outputs in index order.
 * Files holding a SequenceProto, MapProto or OptionalProto (the cases with non-tensor inputs
 * or outputs) do not decode as TensorProto: callers check the graph's types first. */
export function readTestDataSets(
  caseDir: string,
  options: ReadTestDataOptions = {},
): { inputs: TensorValue[]; outputs: TensorValue[] }[] {
  const sets = fs
    .readdirSync(caseDir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && /^test_data_set_\d+$/.test(e.name))
    .map((e) => e.name)
    .sort((a, b) => Number(a.slice(14)) - Number(b.slice(14)))
    .slice(0, options.sets ?? Infinity);
  return sets.map((s) => {
    const dir = path.join(caseDir, s);
    const files = fs.readdirSync(dir);
    const read = (prefix: string) =>
      files
        .filter((f) => new RegExp(`^${prefix}_\\d+\\.pb$`).test(f))
        .sort((a, b) => Number(a.slice(prefix.length + 1, -3)) - Number(b.slice(prefix.length + 1, -3)))
        .map((f) => readTensorProto(path.join(dir, f)));
    return { inputs: read('input'), outputs: options.outputs === false ? [] : read('output') };
  });
}
