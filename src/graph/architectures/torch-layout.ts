// Emits layers the way torch.onnx.export (opset 17, eval mode, BatchNormalization not fused)
// writes torchvision models: initializers named by the module path (`layer1.0.conv1.weight`),
// nodes named by the module scope (`/layer1/layer1.0/conv1/Conv`), outputs `<node>_output_0`.
// Shapes are inferred as each node is added, so a builder can read a feature map's size (the
// adaptive pools need it) and a too-small input fails at the layer that no longer fits.
import { GraphBuilder } from '../builder.ts';
import type { Dim, Graph, Node } from '../ir.ts';
import { ShapeContext, shapeRuleFor } from '../shape-inference.ts';

export interface ConvSpec {
  cin: number;
  cout: number;
  /** A square size or [height, width]. */
  kernel: number | [number, number];
  stride?: number;
  /** Symmetric padding: a size for both axes or [height, width]. */
  pad?: number | [number, number];
  bias?: boolean;
}

/** Where a node sits: a module path (`layer1.0.relu`: the module's call, counted for reuse), or
 * `{ within: path }` for a functional op in that module's forward (torch.cat, F.relu, +). */
export type At = string | { within: string };

export class TorchLayout {
  readonly builder: GraphBuilder;
  /** How often each module has been called: torch names a module's second call `relu_1`. */
  private readonly calls = new Map<string, number>();

  /** `width`: the channel multiplier every family applies through ch() (1: the published network). */
  constructor(
    readonly graph: Graph,
    seed: number,
    readonly width = 1,
  ) {
    this.builder = new GraphBuilder(graph, seed);
  }

  /** A published channel count scaled by the width multiplier: a multiple of 8 (whole SIMD
   * vectors for the kernels), at least 8; exactly `channels` at width 1. */
  ch(channels: number): number {
    return scaleChannels(channels, this.width);
  }

  /** The channel dimension of a 4-D (or [N, C]) value. */
  channels(value: string): number {
    return this.shape(value)[1] as number;
  }

  /** The input shape, [N, C, H, W] with symbolic or numeric N. */
  addInput(name: string, shape: Dim[]): string {
    this.graph.inputs.push({ name, dtype: 'float32', shape: [...shape] });
    this.graph.values.set(name, { name, dtype: 'float32', shape: [...shape] });
    return name;
  }

  shape(value: string): Dim[] {
    const shape = this.graph.values.get(value)?.shape;
    if (!shape) throw new Error(`internal: no shape for '${value}'`);
    return shape;
  }

  /** The spatial size [H, W] of a 4-D value. */
  spatial(value: string): [number, number] {
    const [, , h, w] = this.shape(value);
    return [h as number, w as number];
  }

  /** Conv weight `<path>.weight` [cout, cin, kh, kw] (He normal) and optional zero bias. */
  conv(path: string, x: string, spec: ConvSpec): string {
    const [kh, kw] = pair(spec.kernel);
    const [ph, pw] = pair(spec.pad ?? 0);
    const stride = spec.stride ?? 1;
    const inputs = [x, this.builder.weight(`${path}.weight`, [spec.cout, spec.cin, kh, kw], 'he')];
    if (spec.bias) inputs.push(this.builder.weight(`${path}.bias`, [spec.cout], 'zeros'));
    return this.op(path, 'Conv', inputs, {
      dilations: [1, 1],
      group: 1,
      kernel_shape: [kh, kw],
      pads: [ph, pw, ph, pw],
      strides: [stride, stride],
    });
  }

  /** Inference-form BatchNormalization (training_mode 0; momentum 0.9 is 1 − torch's 0.1): gamma
   * ones, beta zeros, running mean 0 and variance 1 (the statistics are state, never trained). */
  batchNorm(path: string, x: string, channels: number, epsilon: number): string {
    const inputs = [
      x,
      this.builder.weight(`${path}.weight`, [channels], 'ones'),
      this.builder.weight(`${path}.bias`, [channels], 'zeros'),
      this.builder.weight(`${path}.running_mean`, [channels], 'zeros', false),
      this.builder.weight(`${path}.running_var`, [channels], 'ones', false),
    ];
    return this.op(path, 'BatchNormalization', inputs, {
      epsilon: { float: epsilon },
      momentum: { float: 0.9 },
      training_mode: 0,
    });
  }

  /** Linear as torch exports it: Gemm(x, W[out, in], b) with transB=1. */
  linear(path: string, x: string, inFeatures: number, outFeatures: number): string {
    const w = this.builder.weight(`${path}.weight`, [outFeatures, inFeatures], 'he');
    const b = this.builder.weight(`${path}.bias`, [outFeatures], 'zeros');
    return this.op(path, 'Gemm', [x, w, b], { alpha: { float: 1 }, beta: { float: 1 }, transB: 1 });
  }

  relu(at: At, x: string): string {
    return this.op(at, 'Relu', [x]);
  }

  maxPool(at: At, x: string, kernel: number, stride: number, pad = 0, ceil = false): string {
    return this.op(at, 'MaxPool', [x], {
      ceil_mode: ceil ? 1 : 0,
      kernel_shape: [kernel, kernel],
      pads: [pad, pad, pad, pad],
      strides: [stride, stride],
    });
  }

  /** F.avg_pool2d with count_include_pad=True (torch's default). */
  averagePool(at: At, x: string, kernel: number, stride: number, pad = 0): string {
    return this.op(at, 'AveragePool', [x], {
      ceil_mode: 0,
      count_include_pad: 1,
      kernel_shape: [kernel, kernel],
      pads: [pad, pad, pad, pad],
      strides: [stride, stride],
    });
  }

  /**
   * nn.AdaptiveAvgPool2d(target). As the exporter: GlobalAveragePool for 1×1, AveragePool with
   * kernel = stride = size/target when the size is a multiple of the target. Other sizes (a small
   * input under AlexNet or VGG) torch cannot export; here they become two MatMuls with constant
   * averaging matrices (windows [⌊i·S/T⌋, ⌈(i+1)·S/T⌉) as torch computes them), so the
   * classifier keeps its torchvision shape at any input size.
   */
  adaptiveAvgPool(path: string, x: string, target: number): string {
    if (target === 1) return this.op(path, 'GlobalAveragePool', [x]);
    const [h, w] = this.spatial(x);
    if (h % target === 0 && w % target === 0) {
      const kh = h / target;
      const kw = w / target;
      return this.op(path, 'AveragePool', [x], { ceil_mode: 0, kernel_shape: [kh, kw], strides: [kh, kw] });
    }
    const columns = this.constant(`${path}.adaptive_columns`, [w, target], averagingMatrix(w, target, false));
    const rows = this.constant(`${path}.adaptive_rows`, [target, h], averagingMatrix(h, target, true));
    const scope = this.scopeOf(path);
    const pooledColumns = this.op({ scope }, 'MatMul', [x, columns]);
    return this.op({ scope }, 'MatMul', [rows, pooledColumns]);
  }

  /** Global average or max pooling to [N, C, 1, 1] (the headless `pooling` option). */
  globalPool(within: string, x: string, kind: 'avg' | 'max'): string {
    return this.op({ within }, kind === 'avg' ? 'GlobalAveragePool' : 'GlobalMaxPool', [x]);
  }

  /** torch.flatten(x, 1). */
  flatten(within: string, x: string): string {
    return this.op({ within }, 'Flatten', [x], { axis: 1 });
  }

  add(within: string, a: string, b: string): string {
    return this.op({ within }, 'Add', [a, b]);
  }

  /** torch.cat(xs, 1). */
  concat(within: string, xs: string[]): string {
    return this.op({ within }, 'Concat', xs, { axis: 1 });
  }

  /** Conv + BatchNormalization + Relu: GoogLeNet's and Inception-v3's BasicConv2d
   * (modules `<path>.conv`, `<path>.bn`, ReLU applied functionally). */
  basicConv(path: string, x: string, spec: Omit<ConvSpec, 'bias'>, epsilon = 0.001): string {
    const c = this.conv(`${path}.conv`, x, { ...spec, bias: false });
    const b = this.batchNorm(`${path}.bn`, c, spec.cout, epsilon);
    return this.relu({ within: path }, b);
  }

  /** AlexNet's and VGG's top: `avgpool` (adaptive `pool`×`pool`), flatten, then Linear-ReLU,
   * Linear-ReLU, Linear in `classifier`, at the nn.Sequential indexes given (the Dropouts that
   * also take an index vanish in an eval-mode export); the width multiplier scales the 4096
   * hidden units too. */
  denseClassifier(
    x: string,
    pool: number,
    classes: number,
    indexes: readonly [number, number, number, number, number],
  ): string {
    const [linear1, relu1, linear2, relu2, linear3] = indexes.map((i) => `classifier.${i}`);
    const hidden = this.ch(4096);
    const flat = this.channels(x) * pool * pool;
    x = this.flatten('', this.adaptiveAvgPool('avgpool', x, pool));
    x = this.relu(relu1, this.linear(linear1, x, flat, hidden));
    x = this.relu(relu2, this.linear(linear2, x, hidden, hidden));
    return this.linear(linear3, x, hidden, classes);
  }

  /** Renames the graph's final value to `name` and declares it the output, with its shape (as
   * torch.onnx.export writes it; onnx.checker refuses a graph output without one). */
  finish(value: string, name: string): void {
    const producer = this.graph.nodes.find((n) => n.outputs.includes(value));
    if (!producer) throw new Error(`internal: '${value}' has no producer`);
    producer.outputs = producer.outputs.map((o) => (o === value ? name : o));
    const info = this.graph.values.get(value);
    this.graph.values.delete(value);
    this.graph.values.set(name, { ...info, name });
    this.graph.outputs.push({ name, dtype: 'float32', shape: info?.shape ? [...info.shape] : undefined });
  }

  /** A node in torch's scope naming ('' for the model's own forward). */
  private op(
    at: At | { scope: string },
    opType: string,
    inputs: string[],
    attributes: Parameters<GraphBuilder['node']>[2] = {},
  ): string {
    const scope = typeof at === 'string' ? this.scopeOf(at, true) : 'within' in at ? this.scopeOf(at.within) : at.scope;
    this.builder.node(opType, inputs, attributes, { name: `${scope}/${opType}` });
    // The builder made the node's name unique (`/avgpool/MatMul_1`); torch's output name follows it.
    const node = this.graph.nodes[this.graph.nodes.length - 1];
    node.outputs = [this.builder.unique(`${node.name}_output_0`)];
    this.infer(node);
    return node.outputs[0];
  }

  /** A float constant that is not a parameter (the adaptive pooling matrices). */
  private constant(name: string, dims: number[], data: Float32Array): string {
    const unique = this.builder.unique(name);
    this.graph.setInitializer(unique, { dtype: 'float32', dims, data }, false);
    return unique;
  }

  /** torch's scope name for a module path: `layer2.0.downsample.0` → `/layer2/layer2.0/downsample/downsample.0`
   * (children of a Sequential carry their parent's name), `_N` appended on the module's N-th reuse. */
  private scopeOf(path: string, call = false): string {
    if (!path) return '';
    const parts = path.split('.');
    const out = parts.map((p, i) => (i > 0 && /^\d+$/.test(p) ? `${parts[i - 1]}.${p}` : p));
    if (call) {
      const n = this.calls.get(path) ?? 0;
      this.calls.set(path, n + 1);
      if (n > 0) out[out.length - 1] += `_${n}`;
    }
    return '/' + out.join('/');
  }

  /** Shape inference for the node just added (prepareGraph redoes it for the whole graph). */
  private infer(node: Node): void {
    const ctx = new ShapeContext(
      this.graph,
      node,
      this.graph.opset,
      (name) => this.graph.initializers.get(name)?.value,
    );
    const inferred = shapeRuleFor(this.graph, node)(ctx);
    node.outputs.forEach((o, i) =>
      this.graph.values.set(o, { name: o, dtype: inferred[i].dtype, shape: inferred[i].shape }),
    );
  }
}

/** `channels`·`width` rounded to a multiple of 8, at least 8; `channels` itself at width 1. */
export function scaleChannels(channels: number, width: number): number {
  if (width === 1) return channels;
  return Math.max(8, Math.round((channels * width) / 8) * 8);
}

function pair(v: number | [number, number]): [number, number] {
  return typeof v === 'number' ? [v, v] : v;
}

/** The [size, target] matrix (or its transpose) averaging torch's adaptive pooling windows. */
function averagingMatrix(size: number, target: number, transpose: boolean): Float32Array {
  const m = new Float32Array(size * target);
  for (let i = 0; i < target; i++) {
    const start = Math.floor((i * size) / target);
    const end = Math.ceil(((i + 1) * size) / target);
    for (let s = start; s < end; s++) m[transpose ? i * size + s : s * target + i] = 1 / (end - start);
  }
  return m;
}
