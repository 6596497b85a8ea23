// graft inspect <model.onnx> [--json] [--batch N]: a per-node table and parameter totals.
import { decodeModelFile } from '../../node/files.ts';
import { checkModelFile } from '../common.ts';
import { prepareGraph } from '../../graph/load.ts';
import { cutPoints, formatCutPoints, setBatchSize } from '../../graph/surgery/index.ts';
import { summarizeGraph, type GraphSummary } from '../../graph/summary.ts';
import type { Dim } from '../../graph/ir.ts';
import { flagOptions, parseCommandArgs, UsageError, valueOptions, type CommandSpec } from '../args.ts';

export const inspectCommand: CommandSpec = {
  name: 'inspect',
  usage: 'graft inspect <model.onnx> [--json] [--input [name=]8x3x224x224]',
  summary: 'per-node table (name, op, output shape, parameters, trainable) and totals',
  run(argv) {
    const args = parseCommandArgs(argv, {
      options: { ...flagOptions('json'), ...valueOptions('input') },
      positional: 1,
      usage: this.usage,
    });
    checkModelFile(args.positional[0]);
    let graph = decodeModelFile(args.positional[0]);
    const inputShapes = args.values.input
      ? parseInputShape(
          args.values.input,
          graph.feedInputs.map((i) => i.name),
        )
      : {};
    // Zoo models declare a batch of 1: another batch size is applied after preparing (as training
    // does), flattens included, instead of contradicting the declared shape.
    let batch: number | undefined;
    for (const input of graph.feedInputs) {
      const want = inputShapes[input.name];
      const declared = input.shape;
      if (
        !want ||
        !declared ||
        declared.length !== want.length ||
        typeof declared[0] !== 'number' ||
        declared[0] === want[0]
      )
        continue;
      if (declared.every((d, i) => i === 0 || typeof d !== 'number' || d === want[i])) {
        batch = want[0];
        inputShapes[input.name] = [declared[0], ...want.slice(1)];
      }
    }
    // Symbolic dimensions (a dynamic batch, say) are bound to 1 unless --input says otherwise,
    // so that torch's shape-computation chains fold and every shape is a number.
    for (const input of graph.feedInputs) {
      if (inputShapes[input.name] || !input.shape?.some((d) => typeof d !== 'number')) continue;
      inputShapes[input.name] = input.shape.map((d) => (typeof d === 'number' ? d : 1));
      process.stderr.write(
        `note: input '${input.name}' has symbolic dimensions [${input.shape.join(', ')}]; inspecting with [${inputShapes[input.name].join(', ')}] (choose with --input ${input.name}=${inputShapes[input.name].join('x')})\n`,
      );
    }
    prepareGraph(graph, { inputShapes });
    if (batch !== undefined) graph = setBatchSize(graph, batch);
    const summary = summarizeGraph(graph);
    if (args.values.json) {
      process.stdout.write(JSON.stringify({ ...summary, cutPoints: cutPoints(graph) }, null, 2) + '\n');
    } else {
      process.stdout.write(formatSummary(summary) + '\n' + formatCutPoints(cutPoints(graph)));
    }
    return 0;
  },
};

/** --input [name=]DxDxD; without a name, the model's one input. */
function parseInputShape(text: string, inputs: string[]): Record<string, number[]> {
  const at = text.lastIndexOf('=');
  const dims = text.slice(at + 1);
  if (!/^\d+(x\d+)*$/.test(dims))
    throw new UsageError(
      `--input expects [name=]DxDxD (e.g. 8x3x224x224 or ${inputs[0] ?? 'data_0'}=8x3x224x224), got '${text}'`,
    );
  let name = at < 0 ? undefined : text.slice(0, at);
  if (name === undefined) {
    if (inputs.length !== 1)
      throw new UsageError(
        `--input: the model has ${inputs.length} inputs (${inputs.join(', ')}); name one, as name=${dims}`,
      );
    name = inputs[0];
  }
  return { [name]: dims.split('x').map(Number) };
}

const shapeText = (s: Dim[] | undefined) => (s ? `[${s.map((d) => (d === null ? '?' : d)).join(', ')}]` : '?');
const count = (n: number) => n.toLocaleString('en-US');

export function formatSummary(s: GraphSummary): string {
  const rows = s.nodes.map((n, i) => [
    String(i),
    n.name || '(unnamed)',
    n.opType,
    n.outputShapes.map(shapeText).join(' '),
    n.parameters ? count(n.parameters) : '',
    n.trainable,
  ]);
  const header = ['#', 'name', 'op', 'output shape', 'parameters', 'trainable'];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]) =>
    r
      .map((cell, c) => (c === 4 ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd();
  const out = [
    `model: ${s.source ?? '(in memory)'}  (opset ${s.opset})`,
    ...s.inputs.map((i) => `input:  ${i.name} ${i.dtype ?? ''} ${shapeText(i.shape)}`),
    ...s.outputs.map((o) => `output: ${o.name} ${o.dtype ?? ''} ${shapeText(o.shape)}`),
    '',
    line(header),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    '',
    `parameters: ${count(s.parameters)} (trainable ${count(s.trainableParameters)}, non-trainable ${count(s.nonTrainableParameters)})`,
  ];
  return out.join('\n') + '\n';
}
