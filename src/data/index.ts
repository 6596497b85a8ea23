// onnx-graft's data layer, browser-safe: images, decoding, transforms, datasets, batching.
// File-backed datasets (Fashion-MNIST, image folders) are in ./node/index.ts.
export {
  byteImage,
  checkImage,
  clampByte,
  describeSize,
  floatImage,
  isFloatImage,
  toBytes,
  toFloat,
  type ByteImage,
  type FloatImage,
  type Image,
} from './tensor-image.ts';
export {
  applyTransform,
  CAFFE_BGR,
  centerCrop,
  compose,
  crop,
  grayscaleToRgb,
  horizontalFlip,
  IMAGENET_TORCHVISION,
  imagenetEval,
  normalize,
  randomCrop,
  randomHorizontalFlip,
  resampleCoefficients,
  resize,
  resizeShorter,
  roundHalfEven,
  steps,
  type NormalizeSpec,
  type RandomCropOptions,
  type ResizeOptions,
  type Rng,
  type Transform,
} from './transforms.ts';
export { parseIdx, type IdxArray, type IdxType } from './idx.ts';
export { decodeImage, decodeImageAsync, sniffImageFormat, type DecodeOptions, type ImageFormat } from './decode.ts';
export { decodePng, decodePngAsync, inflateWithPlatform, isPng, type AsyncInflate, type Inflate } from './png.ts';
export {
  checkIndex,
  classCount,
  inMemoryDataset,
  shuffle,
  split,
  subset,
  type Dataset,
  type Sample,
} from './datasets.ts';
export { batches, epochOrder, sampleRng, sampleSeed, type Batch, type BatchOptions } from './batcher.ts';
export { DataError } from './errors.ts';
export {
  CROP_AUGMENTS,
  evalTransform,
  randomResizedCrop,
  toGray,
  trainTransform,
  type Augment,
  type CropAugment,
  type Preprocess,
} from './preprocess.ts';
export { mixSeed, permutation, seededRandom } from './seed.ts';
