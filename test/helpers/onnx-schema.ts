// The vendored onnx.proto read by protobufjs's reflection (parser, fromObject), for tests that
// build messages from plain objects: an independent reading of the same schema as the generated
// classes the codec uses.
import fs from 'node:fs';
import path from 'node:path';
import protobuf from 'protobufjs';

export const ONNX_PROTO_FILE = path.join(import.meta.dirname, '../../src/graph/onnx/onnx.proto');

let root: protobuf.Root | undefined;

/** The reflected type `onnx.<name>` (field names as the spec spells them). */
export function onnxReflectedType(name: string): protobuf.Type {
  root ??= protobuf.parse(fs.readFileSync(ONNX_PROTO_FILE, 'utf8'), { keepCase: true }).root;
  return root.lookupType(`onnx.${name}`);
}
