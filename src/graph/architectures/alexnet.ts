// AlexNet as torchvision builds it (the single-GPU variant of Krizhevsky, Sutskever & Hinton,
// "One weird trick for parallelizing convolutional neural networks", arXiv:1404.5997, 2014):
// five convolutions (64, 192, 384, 256, 256 channels), no LRN, adaptive 6×6 pooling, three
// fully connected layers.
import type { TorchLayout } from './torch-layout.ts';

/** `features.0` … `features.12`: the convolutional trunk, ending in a 256-channel map. */
export function alexnetFeatures(t: TorchLayout, x: string): string {
  const [c1, c2, c3, c4, c5] = [64, 192, 384, 256, 256].map((c) => t.ch(c));
  x = t.relu('features.1', t.conv('features.0', x, { cin: 3, cout: c1, kernel: 11, stride: 4, pad: 2, bias: true }));
  x = t.maxPool('features.2', x, 3, 2);
  x = t.relu('features.4', t.conv('features.3', x, { cin: c1, cout: c2, kernel: 5, pad: 2, bias: true }));
  x = t.maxPool('features.5', x, 3, 2);
  x = t.relu('features.7', t.conv('features.6', x, { cin: c2, cout: c3, kernel: 3, pad: 1, bias: true }));
  x = t.relu('features.9', t.conv('features.8', x, { cin: c3, cout: c4, kernel: 3, pad: 1, bias: true }));
  x = t.relu('features.11', t.conv('features.10', x, { cin: c4, cout: c5, kernel: 3, pad: 1, bias: true }));
  return t.maxPool('features.12', x, 3, 2);
}

export const ALEXNET_FEATURE_CHANNELS = 256;

/** `avgpool` (adaptive 6×6), flatten, and `classifier.1/4/6` with ReLUs 2 and 5 (dropout layers
 * 0 and 3 vanish in an eval-mode export). */
export function alexnetClassifier(t: TorchLayout, x: string, classes: number): string {
  return t.denseClassifier(x, 6, classes, [1, 2, 4, 5, 6]);
}
