// Architecture builders: the classic ImageNet networks with seeded random weights (Keras's
// `weights=None`), laid out as torch.onnx.export (opset 17, eval mode, BatchNormalization kept)
// writes torchvision's models, so a graph built here and a torchvision export share initializer
// names, shapes and ops, and weights can move between them by name.
import { ModelError } from '../errors.ts';
import { Graph, type Dim } from '../ir.ts';
import { prepareGraph } from '../load.ts';
import { ALEXNET_FEATURE_CHANNELS, alexnetClassifier, alexnetFeatures } from './alexnet.ts';
import { GOOGLENET_FEATURE_CHANNELS, googlenetClassifier, googlenetFeatures } from './googlenet.ts';
import { INCEPTION_V3_FEATURE_CHANNELS, inceptionV3Classifier, inceptionV3Features } from './inception-v3.ts';
import { RESNET50_FEATURE_CHANNELS, resnet50Classifier, resnet50Features } from './resnet.ts';
import { TorchLayout } from './torch-layout.ts';
import { VGG_FEATURE_CHANNELS, vggClassifier, vggFeatures } from './vgg.ts';

export type ArchitectureName = 'alexnet' | 'vgg16' | 'vgg19' | 'googlenet' | 'inception_v3' | 'resnet50';

export interface BuildOptions {
  /** Keep the classifier (default true). */
  includeTop?: boolean;
  /** Only with includeTop=false: 'avg' or 'max' global pooling to [N, C]; null (the default)
   * leaves the 4-D feature map, as Keras does. */
  pooling?: 'avg' | 'max' | null;
  /** Size of the final layer when includeTop (default 1000). */
  classes?: number;
  /** Seed of the weight initialisation (default 0): same seed, same weights. */
  seed?: number;
  /** Height and width of the square input (default 224, 299 for inception_v3). */
  inputSize?: number;
  /** The batch dimension: a number, or 'batch' for a symbolic one (default 1). */
  batch?: number | 'batch';
  /**
   * Channel multiplier, 0 < width ≤ 1 (default 1, the published network): every channel count,
   * and the hidden width of AlexNet's and VGG's classifiers, is scaled and rounded to a multiple
   * of 8 (at least 8). Layer names and layout are unchanged. A narrow network for small data
   * and slow devices (the project's own pretrained source network is ResNet-50 at width 0.125).
   */
  width?: number;
}

export interface ArchitectureInfo {
  name: ArchitectureName;
  description: string;
  defaultInputSize: number;
  /** The smallest square input whose feature maps do not vanish. */
  minInputSize: number;
  /** Channels of the last feature map at width 1 (the width of includeTop=false with pooling). */
  featureChannels: number;
  /** torchvision's count, sum(p.numel() for p in model.parameters()), with 1000 classes. */
  publishedParameters: number;
  /** Where publishedParameters comes from. */
  source: string;
}

const TORCHVISION_DOCS = 'torchvision.models documentation (pytorch.org/vision/stable/models), "Params" column';

export const ARCHITECTURES: readonly ArchitectureInfo[] = [
  {
    name: 'alexnet',
    description: 'AlexNet (Krizhevsky 2014 one-GPU variant, torchvision alexnet)',
    defaultInputSize: 224,
    minInputSize: 63,
    featureChannels: ALEXNET_FEATURE_CHANNELS,
    publishedParameters: 61_100_840,
    source: `${TORCHVISION_DOCS}: alexnet 61,100,840`,
  },
  {
    name: 'vgg16',
    description: 'VGG-16, configuration D without batch norm (Simonyan & Zisserman 2015, torchvision vgg16)',
    defaultInputSize: 224,
    minInputSize: 32,
    featureChannels: VGG_FEATURE_CHANNELS,
    publishedParameters: 138_357_544,
    source: `${TORCHVISION_DOCS}: vgg16 138,357,544`,
  },
  {
    name: 'vgg19',
    description: 'VGG-19, configuration E without batch norm (Simonyan & Zisserman 2015, torchvision vgg19)',
    defaultInputSize: 224,
    minInputSize: 32,
    featureChannels: VGG_FEATURE_CHANNELS,
    publishedParameters: 143_667_240,
    source: `${TORCHVISION_DOCS}: vgg19 143,667,240`,
  },
  {
    name: 'googlenet',
    description:
      'GoogLeNet / Inception v1 with batch norm, no auxiliary heads (Szegedy et al. 2015, torchvision googlenet)',
    defaultInputSize: 224,
    minInputSize: 15,
    featureChannels: GOOGLENET_FEATURE_CHANNELS,
    publishedParameters: 6_624_904,
    source: `${TORCHVISION_DOCS}: googlenet 6,624,904 (the pretrained model, whose auxiliary heads are removed)`,
  },
  {
    name: 'inception_v3',
    description: 'Inception-v3 without auxiliary logits (Szegedy et al. 2016, torchvision inception_v3)',
    defaultInputSize: 299,
    minInputSize: 75,
    featureChannels: INCEPTION_V3_FEATURE_CHANNELS,
    publishedParameters: 23_834_568,
    source: `${TORCHVISION_DOCS}: inception_v3 27,161,264 with aux_logits=True, less the AuxLogits branch (conv0 1×1 768→128 + BN 98,560; conv1 5×5 128→768 + BN 2,459,136; fc 768→1000 769,000: 3,326,696)`,
  },
  {
    name: 'resnet50',
    description: 'ResNet-50 v1.5, stride on the 3×3 convolution (He et al. 2016, torchvision resnet50)',
    defaultInputSize: 224,
    minInputSize: 1,
    featureChannels: RESNET50_FEATURE_CHANNELS,
    publishedParameters: 25_557_032,
    source: `${TORCHVISION_DOCS}: resnet50 25,557,032`,
  },
];

export const ARCHITECTURE_NAMES: readonly ArchitectureName[] = ARCHITECTURES.map((a) => a.name);

export function isArchitectureName(name: string): name is ArchitectureName {
  return (ARCHITECTURE_NAMES as readonly string[]).includes(name);
}

/** The table entry for `name`, or an error listing the accepted names. */
export function architectureInfo(name: string): ArchitectureInfo {
  const info = ARCHITECTURES.find((a) => a.name === name);
  if (!info) throw new ModelError(`unknown architecture '${name}'; accepted: ${ARCHITECTURE_NAMES.join(', ')}`);
  return info;
}

/**
 * Builds `name` with seeded random weights: He-normal convolution and linear weights, zero
 * biases, BatchNormalization gamma 1, beta 0, running mean 0, running variance 1 (the running
 * statistics not trainable). Graph input `input` [batch, 3, size, size], output `output`; the
 * returned graph is prepared (validated, every shape inferred).
 */
export function buildArchitecture(name: ArchitectureName, options: BuildOptions = {}): Graph {
  const info = architectureInfo(name);
  const o = resolveOptions(info, options);
  const family = FAMILIES[info.name];

  const graph = new Graph();
  graph.name = info.name;
  graph.irVersion = 8;
  graph.opsetImports = [{ domain: '', version: 17 }];
  graph.modelDocString = `${info.description}${o.width === 1 ? '' : `, width ${o.width}`}; seeded random weights (seed ${o.seed}), torchvision ONNX layout`;
  const t = new TorchLayout(graph, o.seed, o.width);
  let x = family.features(t, t.addInput('input', [o.batch, 3, o.inputSize, o.inputSize]));
  if (o.includeTop) x = family.classifier(t, x, o.classes);
  else if (o.pooling) x = t.flatten('', t.globalPool('', x, o.pooling));
  t.finish(x, 'output');
  return prepareGraph(graph);
}

interface Family {
  features(t: TorchLayout, x: string): string;
  classifier(t: TorchLayout, x: string, classes: number): string;
}

const FAMILIES: Record<ArchitectureName, Family> = {
  alexnet: { features: alexnetFeatures, classifier: alexnetClassifier },
  vgg16: { features: (t, x) => vggFeatures(t, x, 16), classifier: vggClassifier },
  vgg19: { features: (t, x) => vggFeatures(t, x, 19), classifier: vggClassifier },
  googlenet: { features: googlenetFeatures, classifier: googlenetClassifier },
  inception_v3: { features: inceptionV3Features, classifier: inceptionV3Classifier },
  resnet50: { features: resnet50Features, classifier: resnet50Classifier },
};

interface ResolvedOptions {
  includeTop: boolean;
  pooling: 'avg' | 'max' | null;
  classes: number;
  seed: number;
  inputSize: number;
  batch: Dim;
  width: number;
}

function resolveOptions(info: ArchitectureInfo, options: BuildOptions): ResolvedOptions {
  const includeTop = options.includeTop ?? true;
  const pooling = options.pooling ?? null;
  const classes = options.classes ?? 1000;
  const seed = options.seed ?? 0;
  const inputSize = options.inputSize ?? info.defaultInputSize;
  const batch = options.batch ?? 1;
  const width = options.width ?? 1;
  const bad = (what: string) => new ModelError(`${info.name}: ${what}`);
  if (pooling !== null && pooling !== 'avg' && pooling !== 'max')
    throw bad(`pooling '${String(pooling)}' is not accepted; accepted: 'avg', 'max' or null`);
  if (includeTop && pooling !== null)
    throw bad(
      `pooling '${pooling}' applies only without the classifier (includeTop=false); with the top the classifier's own pooling is used`,
    );
  if (!Number.isInteger(classes) || classes < 1) throw bad(`classes must be a positive integer, got ${classes}`);
  if (!includeTop && options.classes !== undefined && classes !== 1000)
    throw bad(
      `classes (${classes}) sizes the classifier, which includeTop=false removes; leave it out or keep the top`,
    );
  if (!Number.isInteger(seed)) throw bad(`seed must be an integer, got ${seed}`);
  if (!Number.isInteger(inputSize) || inputSize < info.minInputSize) {
    throw bad(
      `inputSize ${inputSize} is not accepted: it must be an integer ≥ ${info.minInputSize} (smaller inputs shrink the feature maps to nothing); default ${info.defaultInputSize}`,
    );
  }
  if (batch !== 'batch' && (!Number.isInteger(batch) || batch < 1))
    throw bad(`batch must be a positive integer or 'batch' (symbolic), got ${String(batch)}`);
  if (typeof width !== 'number' || !(width > 0 && width <= 1)) {
    throw bad(
      `width ${String(width)} is not accepted: the channel multiplier must be a number with 0 < width ≤ 1 (1: the published network; 0.25: a quarter of every channel count)`,
    );
  }
  return { includeTop, pooling, classes, seed, inputSize, batch, width };
}
