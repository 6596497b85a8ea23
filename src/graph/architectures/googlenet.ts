// GoogLeNet (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015) as torchvision's
// googlenet with aux_logits=False and transform_input=False: every convolution is a BasicConv2d
// (convolution without bias, BatchNormalization with epsilon 0.001, ReLU), max pools round up
// (ceil_mode), and the "5×5" branch uses a 3×3 kernel as torchvision's does.
import type { TorchLayout } from './torch-layout.ts';

/** Inception module: 1×1 | 1×1 → 3×3 | 1×1 → 3×3 | 3×3 max pool → 1×1 (the paper's Table 1 columns). */
export interface GoogLeNetInception {
  name: string;
  cin: number;
  ch1x1: number;
  ch3x3red: number;
  ch3x3: number;
  ch5x5red: number;
  ch5x5: number;
  poolProj: number;
}

const module = (
  name: string,
  cin: number,
  ch1x1: number,
  ch3x3red: number,
  ch3x3: number,
  ch5x5red: number,
  ch5x5: number,
  poolProj: number,
): GoogLeNetInception => ({ name, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, poolProj });

/** The trunk after the stem, in order; 'pool' entries are ceil-mode max pools `[kernel, stride]`. */
export const GOOGLENET_BODY: (GoogLeNetInception | { pool: string; kernel: number; stride: number })[] = [
  module('inception3a', 192, 64, 96, 128, 16, 32, 32),
  module('inception3b', 256, 128, 128, 192, 32, 96, 64),
  { pool: 'maxpool3', kernel: 3, stride: 2 },
  module('inception4a', 480, 192, 96, 208, 16, 48, 64),
  module('inception4b', 512, 160, 112, 224, 24, 64, 64),
  module('inception4c', 512, 128, 128, 256, 24, 64, 64),
  module('inception4d', 512, 112, 144, 288, 32, 64, 64),
  module('inception4e', 528, 256, 160, 320, 32, 128, 128),
  { pool: 'maxpool4', kernel: 2, stride: 2 },
  module('inception5a', 832, 256, 160, 320, 32, 128, 128),
  module('inception5b', 832, 384, 192, 384, 48, 128, 128),
];

export function googlenetFeatures(t: TorchLayout, x: string): string {
  x = t.basicConv('conv1', x, { cin: 3, cout: t.ch(64), kernel: 7, stride: 2, pad: 3 });
  x = t.maxPool('maxpool1', x, 3, 2, 0, true);
  x = t.basicConv('conv2', x, { cin: t.ch(64), cout: t.ch(64), kernel: 1 });
  x = t.basicConv('conv3', x, { cin: t.ch(64), cout: t.ch(192), kernel: 3, pad: 1 });
  x = t.maxPool('maxpool2', x, 3, 2, 0, true);
  for (const item of GOOGLENET_BODY) {
    x = 'pool' in item ? t.maxPool(item.pool, x, item.kernel, item.stride, 0, true) : inception(t, x, item);
  }
  return x;
}

export const GOOGLENET_FEATURE_CHANNELS = 1024;

/** `avgpool` (global), flatten, `fc` (the dropout before it vanishes in eval mode). */
export function googlenetClassifier(t: TorchLayout, x: string, classes: number): string {
  return t.linear('fc', t.flatten('', t.adaptiveAvgPool('avgpool', x, 1)), t.channels(x), classes);
}

/** The module's channel counts scaled by the width multiplier; `cin` is the incoming map's (the
 * table's `cin` holds at width 1 only). */
function inception(t: TorchLayout, x: string, table: GoogLeNetInception): string {
  const p = table.name;
  const cin = t.channels(x);
  const [ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, poolProj] = [
    table.ch1x1,
    table.ch3x3red,
    table.ch3x3,
    table.ch5x5red,
    table.ch5x5,
    table.poolProj,
  ].map((c) => t.ch(c));
  const b1 = t.basicConv(`${p}.branch1`, x, { cin, cout: ch1x1, kernel: 1 });
  let b2 = t.basicConv(`${p}.branch2.0`, x, { cin, cout: ch3x3red, kernel: 1 });
  b2 = t.basicConv(`${p}.branch2.1`, b2, { cin: ch3x3red, cout: ch3x3, kernel: 3, pad: 1 });
  let b3 = t.basicConv(`${p}.branch3.0`, x, { cin, cout: ch5x5red, kernel: 1 });
  b3 = t.basicConv(`${p}.branch3.1`, b3, { cin: ch5x5red, cout: ch5x5, kernel: 3, pad: 1 });
  let b4 = t.maxPool(`${p}.branch4.0`, x, 3, 1, 1, true);
  b4 = t.basicConv(`${p}.branch4.1`, b4, { cin, cout: poolProj, kernel: 1 });
  return t.concat(p, [b1, b2, b3, b4]);
}
