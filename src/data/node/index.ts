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
  readImageFile,
  IMAGE_EXTENSIONS,
  type ImageFolderDataset,
  type ImageFolderOptions,
} from './image-folder.ts';
