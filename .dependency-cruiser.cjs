// The layering of design.md ("imports point down only") as forbidden imports, checked over every
// folder of src by `npm run layering` (and `npm test`).
//
//   graph IR (ir, tensor, codec, attributes, errors, geometry, crc32, shape-context, subgraph,
//             onnx/)   nothing else in src
//   kernels/   the IR is not its business either: nothing of graph/, ops/, runtime/, train/, ...
//   ops/       kernels/, the graph IR (not the loader or surgery above it)
//   graph/ (load, fold, shape inference, surgery, architectures, metadata, ...)   ops/, the IR
//   runtime/   ops/, kernels/, graph/
//   train/     runtime/, ops/, kernels/, graph/
//   data/      nothing GPU; outside data/node/ no Node built-in either (it runs in a browser)
//   engine (graph, kernels, ops, runtime, train) and data: no Node built-in, no webgpu, no sharp;
//   only src/node/, src/cli/ and src/data/node/ may use them.

const GRAPH_IR =
  '^src/graph/(ir|tensor|codec|attributes|errors|geometry|crc32|shape-context|subgraph)\\.ts$|^src/graph/onnx/';
const NODE_ONLY_PACKAGES = '(^|/)node_modules/(webgpu|sharp)/';

/** A rule forbidding imports from `from` to any of `folders` under src/. */
function above(name, from, folders, comment) {
  return {
    name,
    comment,
    severity: 'error',
    from: typeof from === 'string' ? { path: from } : from,
    to: { path: `^src/(${folders.join('|')})(/|\\.ts$)` },
  };
}

module.exports = {
  forbidden: [
    {
      name: 'graph-ir-is-the-bottom',
      comment: 'The IR (Graph, tensors, the ONNX codec, attribute reading, errors) imports nothing else in src.',
      severity: 'error',
      from: { path: GRAPH_IR },
      to: { path: '^src/', pathNot: GRAPH_IR },
    },
    above(
      'kernels-below-the-ir',
      '^src/kernels/',
      ['graph', 'ops', 'runtime', 'train', 'data', 'cli', 'node', 'index'],
      'kernels/ builds WGSL programs and owns the GPU context; it knows no Graph (design.md).',
    ),
    above(
      'ops-over-kernels-and-graph',
      '^src/ops/',
      ['runtime', 'train', 'data', 'cli', 'node', 'index'],
      'ops/ may import kernels/ and graph/ only.',
    ),
    {
      name: 'ops-see-only-the-ir',
      comment: 'An op reads the IR; the loader, shape-inference driver and surgery sit above ops/ and use it.',
      severity: 'error',
      from: { path: '^src/ops/' },
      to: { path: '^src/graph/', pathNot: GRAPH_IR },
    },
    above(
      'graph-over-ops',
      { path: '^src/graph/', pathNot: GRAPH_IR },
      ['kernels', 'runtime', 'train', 'data', 'cli', 'node', 'index'],
      'Loading, folding, shape inference and surgery use the ops from above the IR, never a GPU layer.',
    ),
    above(
      'runtime-over-ops',
      '^src/runtime/',
      ['train', 'data', 'cli', 'node', 'index'],
      'runtime/ compiles graphs through ops/ into kernel steps.',
    ),
    above(
      'train-over-runtime',
      '^src/train/',
      ['data', 'cli', 'node', 'index'],
      'train/ builds on runtime/, ops/, kernels/, graph/.',
    ),
    above(
      'data-is-not-gpu',
      '^src/data/',
      ['kernels', 'ops', 'runtime', 'train', 'cli', 'node', 'index'],
      'Datasets, decoding and batching run without a GPU.',
    ),
    {
      name: 'data-readers-stay-in-data-node',
      comment: 'Browser-safe data/ code does not reach into the Node readers.',
      severity: 'error',
      from: { path: '^src/data/', pathNot: '^src/data/node/' },
      to: { path: '^src/data/node/' },
    },
    {
      name: 'engine-runs-anywhere',
      comment:
        'Only src/node/, src/cli/ and src/data/node/ may use Node built-ins, webgpu or sharp: the rest runs in a browser.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/(node|cli|data/node)/' },
      to: { dependencyTypes: ['core'] },
    },
    {
      name: 'engine-no-node-packages',
      comment: 'webgpu (Dawn for Node) and sharp (a native addon) are Node-only.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/(node|cli|data/node)/' },
      to: { path: NODE_ONLY_PACKAGES },
    },
    {
      name: 'src-not-to-tests-or-benchmarks',
      comment: 'Production modules carry no test-only code.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench|scripts)/' },
    },
    {
      name: 'no-circular',
      comment: 'A cycle means two modules are one layer: merge them or move the shared part down.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment: '@webgpu/types is a types-only package named in triple-slash references.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true, pathNot: '^@webgpu/types$' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^src/graph/onnx/onnx-pb\\.d\\.ts$' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.mjs', '.cjs', '.d.ts'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
