// onnx-graft's data layer with its Node file readers (fs, zlib). Browser code imports ../index.ts.
export * from '../index.ts';
export { readIdxFile } from './idx-files.ts';
export {
  fashionMnist,
  idxImageDataset,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_ROOT,
  type IdxImageDataset,
} from './fashion-mnist.ts';
export {
  imageFolder,
  listImageFolder,
  readImageFile,
  IMAGE_EXTENSIONS,
  type ImageFolderDataset,
  type ImageFolderListing,
  type ImageFolderOptions,
} from './image-folder.ts';
export {
  cmykToRgb,
  decodeImageBytes,
  decodeImageFile,
  JPEG_DECODERS,
  type JpegDecoder,
  type NativeDecodeOptions,
} from './decode-native.ts';
export {
  loadImageFiles,
  openImageFolder,
  type ImageBatchOptions,
  type ImageFolderOpenOptions,
  type ImageFolderSource,
  type ImageLoaderOptions,
  type SkippedFile,
} from './image-loader.ts';
export { defaultWorkerCount } from './image-pool.ts';
export {
  readDigits,
  DigitsFormatError,
  DIGITS_CLASSES,
  DIGITS_LEVELS,
  SKLEARN_DIGITS_PATH,
  type DigitsDataset,
} from './digits.ts';
