// VGG-16 and VGG-19 without batch normalisation (Simonyan & Zisserman, "Very Deep Convolutional
// Networks for Large-Scale Image Recognition", ICLR 2015, configurations D and E), laid out as
// torchvision's vgg16/vgg19: 3×3 convolutions with padding 1, 2×2 max pooling, adaptive 7×7
// pooling, three fully connected layers.
import type { TorchLayout } from './torch-layout.ts';

export type VggDepth = 16 | 19;

/** Output channels of each 3×3 convolution, 'M' a 2×2 max pool (the paper's columns D and E). */
export const VGG_CONFIGS: Record<VggDepth, (number | 'M')[]> = {
  16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
  19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
};

/** `features.N`, numbered as torchvision's nn.Sequential: conv N, ReLU N+1; a pool takes one index. */
export function vggFeatures(t: TorchLayout, x: string, depth: VggDepth): string {
  let index = 0;
  let channels = 3;
  for (const item of VGG_CONFIGS[depth]) {
    if (item === 'M') {
      x = t.maxPool(`features.${index++}`, x, 2, 2);
      continue;
    }
    x = t.conv(`features.${index++}`, x, { cin: channels, cout: t.ch(item), kernel: 3, pad: 1, bias: true });
    x = t.relu(`features.${index++}`, x);
    channels = t.ch(item);
  }
  return x;
}

export const VGG_FEATURE_CHANNELS = 512;

/** `avgpool` (adaptive 7×7), flatten, `classifier.0/3/6` with ReLUs 1 and 4 (dropouts 2 and 5
 * vanish in eval mode). */
export function vggClassifier(t: TorchLayout, x: string, classes: number): string {
  return t.denseClassifier(x, 7, classes, [0, 1, 3, 4, 6]);
}
