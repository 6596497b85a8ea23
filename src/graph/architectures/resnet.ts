// ResNet-50 v1.5 as torchvision's resnet50 (He, Zhang, Ren & Sun, "Deep Residual Learning for
// Image Recognition", CVPR 2016, the 50-layer bottleneck network; v1.5 puts the stride on the
// 3×3 convolution instead of the first 1×1): convolutions without bias, BatchNormalization with
// epsilon 1e-5, a 1×1 convolution + BatchNormalization on each shortcut that changes shape.
import type { TorchLayout } from './torch-layout.ts';

/** Blocks per stage, bottleneck width of the stage (its output is 4× the width), first stride. */
export const RESNET50_STAGES: { blocks: number; width: number; stride: number }[] = [
  { blocks: 3, width: 64, stride: 1 },
  { blocks: 4, width: 128, stride: 2 },
  { blocks: 6, width: 256, stride: 2 },
  { blocks: 3, width: 512, stride: 2 },
];

const EXPANSION = 4;
const EPSILON = 1e-5;

/** The stem (`conv1`, `bn1`, `relu`, `maxpool`) and `layer1` … `layer4`: a 2048-channel map
 * (at width 1; the width multiplier scales the stem and each stage's bottleneck width, and a
 * block's output stays 4× its bottleneck width, as in torchvision's width_per_group). */
export function resnet50Features(t: TorchLayout, x: string): string {
  const stem = t.ch(64);
  x = t.conv('conv1', x, { cin: 3, cout: stem, kernel: 7, stride: 2, pad: 3 });
  x = t.relu('relu', t.batchNorm('bn1', x, stem, EPSILON));
  x = t.maxPool('maxpool', x, 3, 2, 1);
  let channels = stem;
  RESNET50_STAGES.forEach((stage, s) => {
    for (let b = 0; b < stage.blocks; b++) {
      x = bottleneck(t, `layer${s + 1}.${b}`, x, channels, t.ch(stage.width), b === 0 ? stage.stride : 1);
      channels = t.ch(stage.width) * EXPANSION;
    }
  });
  return x;
}

export const RESNET50_FEATURE_CHANNELS = 512 * EXPANSION;

/** `avgpool` (global), flatten, `fc`. */
export function resnet50Classifier(t: TorchLayout, x: string, classes: number): string {
  return t.linear('fc', t.flatten('', t.adaptiveAvgPool('avgpool', x, 1)), t.channels(x), classes);
}

/** 1×1 reduce, 3×3 (carrying the stride), 1×1 expand; the shortcut is projected when the shape changes. */
function bottleneck(t: TorchLayout, path: string, x: string, cin: number, width: number, stride: number): string {
  const cout = width * EXPANSION;
  let y = t.relu(
    `${path}.relu`,
    t.batchNorm(`${path}.bn1`, t.conv(`${path}.conv1`, x, { cin, cout: width, kernel: 1 }), width, EPSILON),
  );
  y = t.relu(
    `${path}.relu`,
    t.batchNorm(
      `${path}.bn2`,
      t.conv(`${path}.conv2`, y, { cin: width, cout: width, kernel: 3, stride, pad: 1 }),
      width,
      EPSILON,
    ),
  );
  y = t.batchNorm(`${path}.bn3`, t.conv(`${path}.conv3`, y, { cin: width, cout, kernel: 1 }), cout, EPSILON);
  let shortcut = x;
  if (stride !== 1 || cin !== cout) {
    shortcut = t.conv(`${path}.downsample.0`, x, { cin, cout, kernel: 1, stride });
    shortcut = t.batchNorm(`${path}.downsample.1`, shortcut, cout, EPSILON);
  }
  return t.relu(`${path}.relu`, t.add(path, y, shortcut));
}
