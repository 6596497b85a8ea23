import { it, expect } from 'vitest';
import { setBatchSize } from '../src/graph/surgery/batch.ts';
import { adaptToInputSize } from '../src/graph/surgery/resize.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { onnxBytesForOrt, randomizedLightModel, runOrt } from './helpers/reference-models.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { relL2 } from './helpers/reference-ops.ts';
it('ort bn training mode', async () => {
  const batch = 4;
  const { graph: small } = adaptToInputSize(randomizedLightModel('resnet50', 91), 64);
  const graph = setBatchSize(small, batch);
  console.log('opset', graph.opset);
  const ortGraph = graph.clone();
  ortGraph.opsetImports = ortGraph.opsetImports.map((o) => (o.domain === '' || o.domain === 'ai.onnx' ? { ...o, version: Math.max(o.version, 15) } : o));
  for (const n of ortGraph.nodes) if (n.opType === 'BatchNormalization') { n.attributes.training_mode = { type: 'int', value: 1 }; n.outputs = [n.outputs[0], n.outputs[0] + '_rm', n.outputs[0] + '_rv']; delete n.attributes.spatial; delete n.attributes.consumed_inputs; }
  const x = randomFloat32Array(batch * 3 * 64 * 64, 5);
  const input = graph.feedInputs[0].name;
  const want = await runOrt(onnxBytesForOrt(ortGraph), { [input]: { dims: [batch, 3, 64, 64], data: x } }, 'cpu');
  const gpu = await createNodeGpuContext();
  const constants = new ConstantStore(gpu);
  for (const limit of [undefined, 600_000]) {
    const plan = await TrainingPlan.create(gpu, graph, { constants, maxBindingBytes: limit });
    const got = await plan.evaluate(new Map([[input, x]]), undefined, true);
    console.log(limit, plan.slicing, relL2(got.logits!, want[graph.outputs[0].name].data));
    plan.dispose();
  }
  constants.dispose(); gpu.dispose();
}, 600000);
