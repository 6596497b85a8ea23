// Inference for `graft eval` and `graft predict`: a Session over the model's logits (the input of
// a final Softmax, so probabilities come from one softmax on the host and the loss from exact
// logits), run in fixed-size chunks of images so one plan serves every call.
import type { Graph } from '../graph/ir.ts';
import { setBatchSize } from '../graph/surgery/index.ts';
import type { GpuContext } from '../kernels/gpu-context.ts';
import { Session } from '../runtime/session.ts';
import { UsageError } from './args.ts';

export interface Classifier {
  readonly classes: number;
  /** Logits [count, classes] of `count` NCHW images. */
  logits(images: Float32Array, count: number): Promise<Float32Array>;
  dispose(): void;
}

export async function openClassifier(
  graph: Graph,
  file: string,
  gpu: GpuContext,
  chunk: number,
  size: number,
): Promise<Classifier> {
  if (graph.outputs.length !== 1)
    throw new UsageError(`${file}: expected one output (class scores), found ${graph.outputs.length}`);
  const g = setBatchSize(graph, 'N');
  const out = g.outputs[0].name;
  const producer = g.producers().get(out);
  if (producer?.opType === 'Softmax') g.outputs = [{ name: producer.inputs[0], dtype: 'float32' }];
  const input = g.feedInputs[0].name;
  const dims = [chunk, 3, size, size];
  const session = await Session.create(g, { gpu, inputShapes: { [input]: dims } });
  const logitsName = g.outputs[0].name;
  let classes = 0;
  const per = 3 * size * size;
  return {
    get classes() {
      return classes;
    },
    async logits(images, count) {
      const parts: Float32Array[] = [];
      for (let start = 0; start < count; start += chunk) {
        const take = Math.min(chunk, count - start);
        let data = images.subarray(start * per, (start + take) * per);
        if (take < chunk) {
          data = new Float32Array(chunk * per); // the last chunk padded with zeros
          data.set(images.subarray(start * per, (start + take) * per));
        }
        const result = (await session.run({ [input]: { dims, data } }))[logitsName];
        classes = result.data.length / chunk;
        // [batch, classes], or [batch, classes, 1, 1] as SqueezeNet ends.
        if (result.dims.length < 2 || result.dims[0] !== chunk || result.dims.slice(2).some((d) => d !== 1)) {
          throw new UsageError(
            `${file}: output '${logitsName}' is [${result.dims.join(', ')}]; expected [batch, classes]`,
          );
        }
        parts.push(result.data.slice(0, take * classes));
      }
      const all = new Float32Array(count * classes);
      parts.forEach((p, k) => all.set(p, k * chunk * classes));
      return all;
    },
    dispose: () => session.dispose(),
  };
}
