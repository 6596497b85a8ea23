// Child process for test/atomic-write.test.ts: writes a ~32 MB model and an ~8 MB checkpoint into
// a folder over and over, generation after generation, until it is killed (or once, with --once).
// argv: <folder> <first generation> [--once]. Prints "wrote <generation>" after both files are in.
import { join } from 'node:path';
import { saveCheckpoint } from '../../src/node/checkpoint-files.ts';
import { decodeModelFile, saveModelFile } from '../../src/node/files.ts';
import { architectureFingerprint } from '../../src/train/checkpoint.ts';
import { payload, PAYLOAD_ELEMENTS } from './atomic-write-payload.ts';

const [folder, first, once] = process.argv.slice(2);
const graph = decodeModelFile(join(import.meta.dirname, '../../models-onnx/light/light_squeezenet.onnx'));
process.stdout.write('ready\n');
for (let gen = Number(first); ; gen++) {
  const data = payload(gen);
  const third = { dims: [PAYLOAD_ELEMENTS / 3], data: data.subarray(0, PAYLOAD_ELEMENTS / 3) };
  graph.setInitializer('payload', { dtype: 'float32', dims: [PAYLOAD_ELEMENTS], data });
  graph.setInitializer('ck_payload', { dtype: 'float32', ...third });
  saveModelFile(graph, join(folder, 'model.onnx'));
  saveCheckpoint(join(folder, 'state.ckpt'), {
    fingerprint: architectureFingerprint(graph),
    weights: new Map([['ck_payload', third]]),
    step: gen,
    epoch: gen,
  });
  process.stdout.write(`wrote ${gen}\n`);
  if (once === '--once') break;
  // A synchronous loop would never let the SIGINT handler run; real commands return to the loop too.
  await new Promise((resolve) => setImmediate(resolve));
}
