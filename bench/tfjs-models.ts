// VGG-16 and ResNet-50 (v1.5) as TensorFlow.js layers models, channels-last, with torchvision's
// layer shapes, for the training benchmark (bench/train.ts). Each builder records which torch
// module every layer with weights stands for, so `load` copies the weights of a graph built by
// src/graph/architectures (torchvision names) into it: both engines start from the same weights,
// and their first losses on the same batch must agree, which checks that the architectures match.
//
// Padding as torch computes it: a stride-1 convolution with pad (k−1)/2 is 'same' (identical);
// a strided one with padding gets an explicit ZeroPadding2D and 'valid' ('same' would pad the
// bottom/right only). ResNet's 3×3/2 max pool pads with zeros instead of −∞, which is the same
// result because it reads ReLU outputs (≥ 0).
//
// A Dense layer whose kernel exceeds the device's storage-binding limit (VGG-16's fc6, 25088×4096,
// 392 MiB, on a 128 MiB adapter) cannot run in TF.js's WebGPU backend; it is built as several
// Dense layers over column blocks of the same kernel, concatenated: the same function and weights.
import type * as tfjs from '@tensorflow/tfjs';

type Tf = typeof tfjs;
type Sym = tfjs.SymbolicTensor;

/** A graph initializer: torchvision dims and data. */
export type WeightSource = (name: string) => { dims: readonly number[]; data: Float32Array };

export interface TfjsNet {
  model: tfjs.LayersModel;
  /** The last Dense layer: the 10-class head that head-only rows train. */
  head: tfjs.layers.Layer;
  /** Input → the head's input (the frozen body of the head-only rows): [batch, features]. */
  body: tfjs.LayersModel;
  /** [batch, features] → logits through the head's own weights (training on cached features). */
  headModel: tfjs.LayersModel;
  features: number;
  /** Dense layers split into column blocks to fit the binding limit: torch path and block count. */
  splits: { path: string; blocks: number }[];
  /** Copies the weights of a torchvision-layout graph (src/graph/architectures) into the layers. */
  load(weights: WeightSource): void;
}

export type TfjsArchitecture = 'resnet50' | 'vgg16';

interface Loaded {
  /** One layer, or the column blocks of a split Dense layer. */
  layers: tfjs.layers.Layer[];
  /** Torch module path: `<path>.weight`, `<path>.bias`, `<path>.running_mean`, … */
  path: string;
  kind: 'conv' | 'bn' | 'dense';
  /** Dense after a flatten of an NHWC map [h, w, c] (torch flattens NCHW). */
  flattenedFrom?: [number, number, number];
}

/**
 * Builds `name` for square inputs of `size` with `classes` outputs (logits, no softmax);
 * `maxBindingBytes`: the device's maxStorageBufferBindingSize (larger Dense kernels are split).
 */
export function buildTfjsNet(
  tf: Tf,
  name: TfjsArchitecture,
  size: number,
  classes: number,
  maxBindingBytes = Infinity,
): TfjsNet {
  const loaded: Loaded[] = [];
  const splits: TfjsNet['splits'] = [];
  const input = tf.input({ shape: [size, size, 3] });
  // Zero initial weights: `load` overwrites them, and random ones would cost seconds for VGG-16.
  const zeros = 'zeros';
  const conv = (
    x: Sym,
    path: string,
    filters: number,
    kernel: number,
    stride: number,
    pad: number,
    options: { bias?: boolean; relu?: boolean } = {},
  ): Sym => {
    let padding: 'same' | 'valid' = 'valid';
    if (pad > 0 && stride === 1 && 2 * pad === kernel - 1) padding = 'same';
    else if (pad > 0) x = tf.layers.zeroPadding2d({ padding: pad }).apply(x) as Sym;
    const layer = tf.layers.conv2d({
      filters,
      kernelSize: kernel,
      strides: stride,
      padding,
      useBias: options.bias ?? false,
      activation: options.relu ? 'relu' : 'linear',
      kernelInitializer: zeros,
    });
    loaded.push({ layers: [layer], path, kind: 'conv' });
    return layer.apply(x) as Sym;
  };
  const dense = (
    x: Sym,
    path: string,
    units: number,
    relu: boolean,
    flattenedFrom?: [number, number, number],
  ): { y: Sym; layer: tfjs.layers.Layer } => {
    const inputs = x.shape[1] as number;
    let blocks = 1;
    while (inputs * (units / blocks) * 4 > maxBindingBytes || units % blocks) blocks++;
    const layers = Array.from({ length: blocks }, () =>
      tf.layers.dense({ units: units / blocks, activation: relu ? 'relu' : 'linear', kernelInitializer: zeros }),
    );
    loaded.push({ layers, path, kind: 'dense', flattenedFrom });
    if (blocks === 1) return { y: layers[0].apply(x) as Sym, layer: layers[0] };
    splits.push({ path, blocks });
    return { y: tf.layers.concatenate().apply(layers.map((l) => l.apply(x) as Sym)) as Sym, layer: layers[0] };
  };

  let features: Sym;
  let logits: Sym;
  let head: tfjs.layers.Layer;
  if (name === 'vgg16') {
    // torchvision vgg16: configuration D, conv + ReLU, 2×2 pools, adaptive 7×7 pool, three linears
    // (its dropouts are left out on both sides: the ONNX-layout graph has none).
    let x: Sym = input;
    let index = 0;
    for (const item of [
      64,
      64,
      'M',
      128,
      128,
      'M',
      256,
      256,
      256,
      'M',
      512,
      512,
      512,
      'M',
      512,
      512,
      512,
      'M',
    ] as const) {
      if (item === 'M') {
        x = tf.layers.maxPooling2d({ poolSize: 2, strides: 2, padding: 'valid' }).apply(x) as Sym;
        index++;
        continue;
      }
      x = conv(x, `features.${index}`, item, 3, 1, 1, { bias: true, relu: true });
      index += 2;
    }
    const side = x.shape[1] as number;
    if (side !== 7) x = adaptiveAvgPool(tf, side, 7).apply(x) as Sym;
    x = tf.layers.flatten().apply(x) as Sym;
    x = dense(x, 'classifier.0', 4096, true, [7, 7, 512]).y;
    features = dense(x, 'classifier.3', 4096, true).y;
    ({ y: logits, layer: head } = dense(features, 'classifier.6', classes, false));
  } else {
    // torchvision resnet50 (v1.5): bottlenecks with the stride on the 3×3, projection shortcuts.
    const bn = (x: Sym, path: string): Sym => {
      const layer = tf.layers.batchNormalization({ axis: 3, epsilon: 1e-5, momentum: 0.9 });
      loaded.push({ layers: [layer], path, kind: 'bn' });
      return layer.apply(x) as Sym;
    };
    const relu = (x: Sym) => tf.layers.reLU().apply(x) as Sym;
    let x = relu(bn(conv(input, 'conv1', 64, 7, 2, 3), 'bn1'));
    x = tf.layers.zeroPadding2d({ padding: 1 }).apply(x) as Sym;
    x = tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'valid' }).apply(x) as Sym;
    let channels = 64;
    const stages = [
      [3, 64, 1],
      [4, 128, 2],
      [6, 256, 2],
      [3, 512, 2],
    ] as const;
    stages.forEach(([blocks, width, firstStride], s) => {
      for (let b = 0; b < blocks; b++) {
        const path = `layer${s + 1}.${b}`;
        const stride = b === 0 ? firstStride : 1;
        const out = width * 4;
        let y = relu(bn(conv(x, `${path}.conv1`, width, 1, 1, 0), `${path}.bn1`));
        y = relu(bn(conv(y, `${path}.conv2`, width, 3, stride, 1), `${path}.bn2`));
        y = bn(conv(y, `${path}.conv3`, out, 1, 1, 0), `${path}.bn3`);
        const shortcut =
          stride !== 1 || channels !== out
            ? bn(conv(x, `${path}.downsample.0`, out, 1, stride, 0), `${path}.downsample.1`)
            : x;
        x = relu(tf.layers.add().apply([y, shortcut]) as Sym);
        channels = out;
      }
    });
    features = tf.layers.globalAveragePooling2d({}).apply(x) as Sym;
    ({ y: logits, layer: head } = dense(features, 'fc', classes, false));
  }

  const model = tf.model({ inputs: input, outputs: logits });
  const body = tf.model({ inputs: input, outputs: features });
  const width = features.shape[1] as number;
  const headInput = tf.input({ shape: [width] });
  const headModel = tf.model({ inputs: headInput, outputs: head.apply(headInput) as Sym });
  return { model, head, body, headModel, features: width, splits, load: (weights) => loadWeights(tf, loaded, weights) };
}

function loadWeights(tf: Tf, loaded: Loaded[], weights: WeightSource): void {
  for (const { layers, path, kind, flattenedFrom } of loaded) {
    const w = weights(`${path}.weight`);
    const hasBias = layers[0].getWeights().length > 1;
    layers.forEach((layer, block) => {
      let values: tfjs.Tensor[];
      if (kind === 'bn') {
        values = ['weight', 'bias', 'running_mean', 'running_var'].map((k) =>
          tf.tensor1d(weights(`${path}.${k}`).data),
        );
      } else if (kind === 'conv') {
        values = [convKernel(w.dims, w.data)];
        if (hasBias) values.push(tf.tensor1d(weights(`${path}.bias`).data));
      } else {
        // Block `block` of a split Dense layer takes its share of the output columns.
        const width = w.dims[0] / layers.length;
        values = [denseKernel(w.dims, w.data, block * width, width, flattenedFrom)];
        if (hasBias)
          values.push(tf.tensor1d(weights(`${path}.bias`).data.subarray(block * width, (block + 1) * width)));
      }
      const want = layer.getWeights().map((t) => t.shape.join('×'));
      const got = values.map((t) => t.shape.join('×'));
      if (want.join() !== got.join())
        throw new Error(`TF.js layer for '${path}': weights ${got.join(', ')} do not fit its ${want.join(', ')}`);
      layer.setWeights(values);
      tf.dispose(values);
    });
  }

  // torch conv [O, I, kh, kw] → TF.js [kh, kw, I, O]
  function convKernel(dims: readonly number[], data: Float32Array): tfjs.Tensor {
    const [o, i, kh, kw] = dims;
    const out = new Float32Array(data.length);
    for (let a = 0; a < o; a++)
      for (let b = 0; b < i; b++)
        for (let y = 0; y < kh; y++)
          for (let x = 0; x < kw; x++) {
            out[((y * kw + x) * i + b) * o + a] = data[((a * i + b) * kh + y) * kw + x];
          }
    return tf.tensor4d(out, [kh, kw, i, o]);
  }

  // torch linear [O, I] → TF.js [I, O] (output columns first…first+width); after a flatten, row
  // (h, w, c) of TF.js is column (c, h, w) of torch.
  function denseKernel(
    dims: readonly number[],
    data: Float32Array,
    first: number,
    width: number,
    from?: [number, number, number],
  ): tfjs.Tensor {
    const i = dims[1];
    const out = new Float32Array(i * width);
    for (let r = 0; r < i; r++) {
      let column = r;
      if (from) {
        const [h, w, c] = from;
        const ch = r % c;
        const hw = (r - ch) / c;
        column = ch * h * w + hw;
      }
      for (let a = 0; a < width; a++) out[r * width + a] = data[(first + a) * i + column];
    }
    return tf.tensor2d(out, [i, width]);
  }
}

/**
 * torch's nn.AdaptiveAvgPool2d(target) for a side that is not a multiple of the target (VGG-16
 * below 224): output i averages rows [⌊i·S/T⌋, ⌈(i+1)·S/T⌉). Two MatMuls with averaging matrices,
 * as onnx-graft's architecture builder lowers it.
 */
function adaptiveAvgPool(tf: Tf, side: number, target: number): tfjs.layers.Layer {
  const windows = Array.from(
    { length: target },
    (_, t) => [Math.floor((t * side) / target), Math.ceil(((t + 1) * side) / target)] as const,
  );
  const averaging = new Float32Array(target * side);
  windows.forEach(([from, to], t) => averaging.fill(1 / (to - from), t * side + from, t * side + to));
  class AdaptiveAvgPool extends tf.layers.Layer {
    static className = 'AdaptiveAvgPool';
    readonly #m = tf.keep(tf.tensor2d(averaging, [target, side]));
    override computeOutputShape(shape: tfjs.Shape): tfjs.Shape {
      return [shape[0], target, target, shape[3]];
    }
    override call(inputs: tfjs.Tensor | tfjs.Tensor[]): tfjs.Tensor {
      return tf.tidy(() => {
        const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tfjs.Tensor4D;
        const [n, , , c] = x.shape;
        // Pool the rows: [H, N·W·C] → [T, N·W·C], then the columns the same way.
        const rows = tf
          .matMul(this.#m, x.transpose([1, 0, 2, 3]).reshape([side, n * side * c]))
          .reshape([target, n, side, c]);
        const cols = tf
          .matMul(this.#m, rows.transpose([2, 1, 0, 3]).reshape([side, n * target * c]))
          .reshape([target, n, target, c]);
        return cols.transpose([1, 2, 0, 3]);
      });
    }
    override dispose(): ReturnType<tfjs.layers.Layer['dispose']> {
      this.#m.dispose();
      return super.dispose();
    }
  }
  return new AdaptiveAvgPool({});
}
