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
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
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
writeFileSync(js, routeThroughStrictWire(readFileSync(js, 'utf8')));
await run(pbts, ['--out', dts, js]);

/**
 * Rewrites pbjs's decoders to read through `$wire` (defined in onnx-pb-wrapper.tmpl): each field
 * case first checks the wire type its field takes (a packed repeated scalar takes two) and skips
 * the field as unknown otherwise; tags, lengths, bytes and strings are read strictly; a singular
 * message field read twice is merged. Throws if the generated code has a shape this does not know,
 * so a protobufjs upgrade cannot silently drop a check.
 */
function routeThroughStrictWire(code) {
  const scalarWire = { int32: 0, int64: 0, uint64: 0, bool: 0, float: 5, double: 1 };
  let cases = 0;
  code = code.replace(/^( +)case (\d+): \{\n([\s\S]*?)\n\1 {4}\}\n/gm, (whole, indent, field, body) => {
    const scalar = /reader\.(int32|int64|uint64|bool|float|double)\(\)/.exec(body);
    const lengthDelimited = /\.decode\(reader, reader\.uint32\(\)|reader\.(bytes|string)\(\)/.test(body);
    const packed = /if \(\(tag & 7\) === 2\) \{/.test(body);
    let wires;
    if (lengthDelimited && !scalar) wires = [2];
    else if (scalar && !lengthDelimited) wires = packed ? [2, scalarWire[scalar[1]]] : [scalarWire[scalar[1]]];
    else throw new Error(`gen-onnx: cannot tell the wire type of field ${field} from:\n${body}`);
    cases++;
    const accepted = wires.map((w) => `(tag & 7) !== ${w}`).join(' && ');
    const check = `${indent}        if (${accepted}) {\n${indent}            $wire.skip(reader, tag, long);\n${indent}            break;\n${indent}        }\n`;
    return `${indent}case ${field}: {\n${check}${body}\n${indent}    }\n`;
  });
  const rewrites = [
    [/let tag = reader\.uint32\(\);/g, 'let tag = $wire.tag(reader);'],
    [
      /(message\.\w+) = (\$root\.onnx\.[\w.]+\.decode\(reader, )reader\.uint32\(\)(, undefined, long \+ 1\));/g,
      '$1 = $wire.merge($1, $2$wire.size(reader)$3);',
    ],
    [/\.decode\(reader, reader\.uint32\(\)/g, '.decode(reader, $wire.size(reader)'],
    [/let end2 = reader\.uint32\(\) \+ reader\.pos;/g, 'let end2 = $wire.size(reader) + reader.pos;'],
    [/reader\.bytes\(\)/g, '$wire.bytes(reader)'],
    [/reader\.string\(\)/g, '$wire.string(reader)'],
    [/reader\.skipType\(tag & 7, long\);/g, '$wire.skip(reader, tag, long);'],
  ];
  for (const [pattern, replacement] of rewrites) code = code.replace(pattern, replacement);
  const left = code.match(/reader\.(uint32|skipType|bytes|string)\(/g);
  if (cases === 0 || left) throw new Error(`gen-onnx: decoders not fully routed through $wire (${left ?? 'no cases'})`);
  return code;
}

function run(tool, args) {
  return new Promise((done, fail) => tool.main(args, (err) => (err ? fail(err) : done())));
}
