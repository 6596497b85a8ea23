#!/usr/bin/env node
// npm run gen:onnx: regenerates the typed ONNX messages (src/graph/onnx/onnx-pb.js + .d.ts) from
// the vendored official onnx.proto with protobufjs-cli. `--out DIR` writes them elsewhere (the
// test that checks the checked-in files are current uses it).
//
// Options, and why:
//   static-module, --es6         plain ESM code, no reflection or .proto parsing at run time
//   --wrap onnx-pb-wrapper.tmpl  imports the CommonJS runtime by default import (see the template)
//   --keep-case                  field names as the spec spells them (ir_version, raw_data, ...)
//   --dependency .../minimal.js  the small runtime; the explicit .js resolves under plain Node ESM
//   int64 stays number|Long      (no --force-number) so int64_data keeps all 64 bits
//   --no-create/verify/convert/delimited/typeurl/service   unused by the codec
import { pbjs, pbts } from 'protobufjs-cli';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const onnxDir = join(repoRoot, 'src/graph/onnx');
const outFlag = process.argv.indexOf('--out');
const outDir = outFlag >= 0 ? resolve(process.argv[outFlag + 1]) : onnxDir;
mkdirSync(outDir, { recursive: true });
const js = join(outDir, 'onnx-pb.js');
const dts = join(outDir, 'onnx-pb.d.ts');

await run(pbjs, [
  '--target',
  'static-module',
  '--es6',
  '--wrap',
  join(repoRoot, 'scripts/onnx-pb-wrapper.tmpl'),
  '--keep-case',
  '--dependency',
  'protobufjs/minimal.js',
  '--no-create',
  '--no-verify',
  '--no-convert',
  '--no-delimited',
  '--no-typeurl',
  '--no-service',
  '--out',
  js,
  join(onnxDir, 'onnx.proto'),
]);
await run(pbts, ['--out', dts, js]);

function run(tool, args) {
  return new Promise((done, fail) => tool.main(args, (err) => (err ? fail(err) : done())));
}
