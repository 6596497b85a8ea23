// One decode-and-preprocess thread of the image loader's pool (./image-pool.ts): reads a file,
// decodes it (sharp with one libvips thread, since the pool itself is the parallelism), runs the
// evaluation or training transform and sends the floats back, transferring their buffer.

import { parentPort } from 'node:worker_threads';
import sharp from 'sharp';
import { evalTransform, trainTransform } from '../preprocess.ts';
import { seededRandom } from '../seed.ts';
import { decodeImageFile } from './decode-native.ts';
import type { PoolReply, PoolTask } from './image-pool.ts';

sharp.concurrency(1);
sharp.cache(false);

const port = parentPort;
if (!port) throw new Error('image-worker.ts runs as a worker thread of the image loader, not on its own');

port.on('message', (task: PoolTask) => {
  void run(task).then((reply) => {
    if (reply.ok) port.postMessage(reply, [reply.data.buffer as ArrayBuffer]);
    else port.postMessage(reply);
  });
});

async function run(task: PoolTask): Promise<PoolReply> {
  try {
    const image = await decodeImageFile(task.path, { jpeg: task.jpeg });
    const transform = task.augment ? trainTransform(task.spec, task.augment) : evalTransform(task.spec);
    const out = transform(image, seededRandom(task.seed));
    return { id: task.id, ok: true, data: out.data, width: out.width, height: out.height };
  } catch (e) {
    return { id: task.id, ok: false, reason: (e as Error).message };
  }
}
