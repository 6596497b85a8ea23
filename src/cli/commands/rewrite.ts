// graft rewrite <in.onnx> --out <out.onnx> …: graph surgery from the command line: cut, remove
// the top, graft a head, freeze / re-initialise, or one of the four transfer-learning cases.
import type { Graph } from '../../graph/ir.ts';
import {
  cutAt,
  describeSelector,
  freeze,
  graft,
  reinit,
  removeTop,
  transfer,
  type DenseSpec,
  type HeadSpec,
  type Selector,
} from '../../graph/surgery/index.ts';
import { loadModelFile, saveModelFile } from '../../node/files.ts';
import { checkModelFile, checkOutputFile } from '../common.ts';
import { flagOptions, parseCommandArgs, UsageError, valueOptions, type CommandSpec } from '../args.ts';

const USAGE =
  'graft rewrite <in.onnx> --out <out.onnx> [--cut NAME] [--no-top] ' +
  '[--head avg|max|flatten|none --classes N [--dense 256,128] [--dropout 0.5] [--no-softmax]] ' +
  '[--freeze PATTERN | --freeze-before NAME | --freeze-all-but N] [--reinit PATTERN] ' +
  '[--case 1|2|3|4 --classes N [--cut NAME] [--reinitialize]] [--seed N]';

export const rewriteCommand: CommandSpec = {
  name: 'rewrite',
  usage: USAGE,
  summary:
    'cut a model, remove or graft a classifier head, freeze or re-initialise layers, or apply transfer case 1–4; writes a new .onnx',
  run(argv) {
    const args = parseCommandArgs(argv, {
      options: {
        ...flagOptions('no-top', 'no-softmax', 'reinitialize'),
        ...valueOptions(
          'out',
          'cut',
          'head',
          'classes',
          'dense',
          'dropout',
          'freeze',
          'freeze-before',
          'freeze-all-but',
          'reinit',
          'case',
          'seed',
        ),
      },
      positional: 1,
      usage: USAGE,
    });
    const o = args.values;
    const usage = (what: string) => new UsageError(`${what}\nusage: ${USAGE}`);
    if (!o.out) throw usage('--out <out.onnx> is required');
    const seed = o.seed === undefined ? 0 : integer('--seed', o.seed, -(2 ** 31));
    const classes = o.classes === undefined ? undefined : integer('--classes', o.classes, 1);
    const freezeSelectors = [
      o.freeze !== undefined && ({ pattern: o.freeze } as Selector),
      o['freeze-before'] !== undefined && ({ before: o['freeze-before'] } as Selector),
      o['freeze-all-but'] !== undefined &&
        ({ allButLast: integer('--freeze-all-but', o['freeze-all-but'], 0) } as Selector),
    ].filter((s): s is Selector => s !== false);
    if (freezeSelectors.length > 1) throw usage('use one of --freeze, --freeze-before and --freeze-all-but');

    checkModelFile(args.positional[0]);
    checkOutputFile(o.out, '--out');
    let graph: Graph = loadModelFile(args.positional[0]);
    const report: string[] = [];
    const warnings: string[] = [];

    if (o.case !== undefined) {
      const c = integer('--case', o.case, 1);
      if (c > 4) throw usage(`--case must be 1, 2, 3 or 4, got ${o.case}`);
      if (classes === undefined) throw usage('--case needs --classes N');
      if (o.head !== undefined || args.values['no-top'] || o.dense !== undefined || o.dropout !== undefined)
        throw usage('--case builds its own head: leave out --head, --no-top, --dense and --dropout');
      if (o.cut !== undefined && c !== 2) throw usage('--cut goes with --case 2 only');
      if (args.values.reinitialize && c !== 4) throw usage('--reinitialize goes with --case 4 only');
      const result = transfer(graph, {
        case: c as 1 | 2 | 3 | 4,
        classes,
        cutAt: o.cut,
        seed,
        reinitialize: args.values.reinitialize,
        softmax: args.values['no-softmax'] ? false : undefined,
      });
      graph = result.graph;
      warnings.push(...result.summary.warnings);
      report.push(
        `transfer case ${c}: new layers attach at '${result.summary.cutPoint}'; new weights ${result.summary.newWeights.join(', ')}`,
      );
    } else {
      if (args.values.reinitialize) throw usage('--reinitialize goes with --case 4');
      if (o.cut !== undefined && args.values['no-top']) throw usage('use --cut or --no-top, not both');
      if (o.cut !== undefined) {
        const cut = cutAt(graph, o.cut);
        graph = cut.graph;
        warnings.push(...cut.warnings);
        report.push(`cut at '${cut.tensor}' ${shapeText(cut.shape)}`);
      }
      if (args.values['no-top']) {
        const top = removeTop(graph);
        graph = top.graph;
        report.push(
          `removed the top (${top.head.nodes.length} nodes: ${top.head.nodes.map((n) => n.opType).join(' → ')}); features '${top.tensor}' ${shapeText(top.shape)}`,
        );
      }
      if (o.head !== undefined) {
        if (classes === undefined) throw usage('--head needs --classes N');
        if (!['avg', 'max', 'flatten', 'none'].includes(o.head))
          throw usage(`--head must be avg, max, flatten or none, got '${o.head}'`);
        const spec: HeadSpec = {
          pooling: o.head as HeadSpec['pooling'],
          classes,
          seed,
          dense: o.dense === undefined ? undefined : parseDense(o.dense),
          dropout: o.dropout === undefined ? undefined : Number(o.dropout),
          softmax: !args.values['no-softmax'],
        };
        const grafted = graft(graph, spec);
        graph = grafted.graph;
        warnings.push(...grafted.warnings);
        report.push(
          `grafted a head on '${grafted.input}': ${grafted.nodes.length} nodes, ${count(grafted.parameters)} new parameters, output '${grafted.output}'`,
        );
      } else if (
        classes !== undefined ||
        o.dense !== undefined ||
        o.dropout !== undefined ||
        args.values['no-softmax']
      ) {
        throw usage(
          '--classes, --dense, --dropout and --no-softmax describe a head: add --head avg|max|flatten|none (or use --case)',
        );
      }
    }

    for (const selector of freezeSelectors) {
      const n = freeze(graph, selector);
      report.push(
        `froze ${describeSelector(selector)}: ${n.initializers} initializers, ${count(n.parameters)} parameters (${n.changed} newly frozen)`,
      );
    }
    if (o.reinit !== undefined) {
      const n = reinit(graph, { pattern: o.reinit }, { seed });
      report.push(
        `re-initialised ${n.layers} layers matching /${o.reinit}/: ${n.initializers} initializers, ${count(n.parameters)} parameters`,
      );
    }

    saveModelFile(graph, o.out);
    const trainable = graph.parameterCount((i) => i.trainable);
    const frozen = graph.parameterCount((i) => !i.trainable);
    const outputs = graph.outputs.map((v) => `${v.name} ${shapeText(graph.values.get(v.name)?.shape)}`).join(', ');
    for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    process.stdout.write(
      [
        ...report,
        `output: ${outputs}`,
        `parameters: ${count(trainable + frozen)} (trainable ${count(trainable)}, frozen ${count(frozen)})`,
        `wrote ${o.out}`,
      ].join('\n') + '\n',
    );
    return 0;
  },
};

function integer(flag: string, text: string, min: number): number {
  const n = Number(text);
  if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min)
    throw new UsageError(`${flag} expects an integer ≥ ${min}, got '${text}'\nusage: ${USAGE}`);
  return n;
}

/** "256,128" or "256:relu,64:sigmoid" → dense layer specs. */
function parseDense(text: string): DenseSpec[] {
  return text.split(',').map((part) => {
    const [units, activation = 'relu'] = part.trim().split(':');
    if (!/^\d+$/.test(units) || Number(units) < 1)
      throw new UsageError(
        `--dense expects units like 256,128 (optionally 256:relu, 64:sigmoid, 10:none), got '${text}'\nusage: ${USAGE}`,
      );
    if (!['relu', 'sigmoid', 'none'].includes(activation))
      throw new UsageError(
        `--dense activation '${activation}' is not accepted; accepted: relu, sigmoid, none\nusage: ${USAGE}`,
      );
    return { units: Number(units), activation: activation as DenseSpec['activation'] };
  });
}

const count = (n: number) => n.toLocaleString('en-US');
const shapeText = (s: (number | string | null)[] | undefined) =>
  s ? `[${s.map((d) => (d === null ? '?' : d)).join(', ')}]` : '[?]';
