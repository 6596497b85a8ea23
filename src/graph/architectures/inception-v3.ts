// Inception-v3 (Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception Architecture
// for Computer Vision", CVPR 2016) as torchvision's inception_v3 with aux_logits=False and
// transform_input=False, for 299×299 inputs: BasicConv2d (convolution without bias,
// BatchNormalization with epsilon 0.001, ReLU), modules Mixed_5b … Mixed_7c (torchvision's
// InceptionA–E), global average pooling and `fc`.
import type { ConvSpec, TorchLayout } from './torch-layout.ts';

type Conv = Omit<ConvSpec, 'bias' | 'cin'>;

export function inceptionV3Features(t: TorchLayout, x: string): string {
  x = basic(t, 'Conv2d_1a_3x3', x, { cout: 32, kernel: 3, stride: 2 });
  x = basic(t, 'Conv2d_2a_3x3', x, { cout: 32, kernel: 3 });
  x = basic(t, 'Conv2d_2b_3x3', x, { cout: 64, kernel: 3, pad: 1 });
  x = t.maxPool('maxpool1', x, 3, 2);
  x = basic(t, 'Conv2d_3b_1x1', x, { cout: 80, kernel: 1 });
  x = basic(t, 'Conv2d_4a_3x3', x, { cout: 192, kernel: 3 });
  x = t.maxPool('maxpool2', x, 3, 2);
  x = inceptionA(t, 'Mixed_5b', x, 32);
  x = inceptionA(t, 'Mixed_5c', x, 64);
  x = inceptionA(t, 'Mixed_5d', x, 64);
  x = inceptionB(t, 'Mixed_6a', x);
  x = inceptionC(t, 'Mixed_6b', x, 128);
  x = inceptionC(t, 'Mixed_6c', x, 160);
  x = inceptionC(t, 'Mixed_6d', x, 160);
  x = inceptionC(t, 'Mixed_6e', x, 192);
  x = inceptionD(t, 'Mixed_7a', x);
  x = inceptionE(t, 'Mixed_7b', x);
  return inceptionE(t, 'Mixed_7c', x);
}

export const INCEPTION_V3_FEATURE_CHANNELS = 2048;

/** `avgpool` (global), flatten, `fc` (the dropout before it vanishes in eval mode). */
export function inceptionV3Classifier(t: TorchLayout, x: string, classes: number): string {
  return t.linear('fc', t.flatten('', t.adaptiveAvgPool('avgpool', x, 1)), t.channels(x), classes);
}

/** BasicConv2d `path` with its published `cout` scaled by the width multiplier, reading the incoming map's channels. */
function basic(t: TorchLayout, path: string, x: string, spec: Conv): string {
  return t.basicConv(path, x, { ...spec, cin: t.channels(x), cout: t.ch(spec.cout) });
}

/** A chain of BasicConv2d `<module>.<name>`. */
function chain(t: TorchLayout, module: string, x: string, convs: [string, Conv][]): string {
  for (const [name, spec] of convs) x = basic(t, `${module}.${name}`, x, spec);
  return x;
}

/** 35×35 module: 1×1 | 1×1 → 5×5 | 1×1 → 3×3 → 3×3 | 3×3 average pool → 1×1. */
function inceptionA(t: TorchLayout, m: string, x: string, poolFeatures: number): string {
  const b1 = chain(t, m, x, [['branch1x1', { cout: 64, kernel: 1 }]]);
  const b5 = chain(t, m, x, [
    ['branch5x5_1', { cout: 48, kernel: 1 }],
    ['branch5x5_2', { cout: 64, kernel: 5, pad: 2 }],
  ]);
  const b3 = chain(t, m, x, [
    ['branch3x3dbl_1', { cout: 64, kernel: 1 }],
    ['branch3x3dbl_2', { cout: 96, kernel: 3, pad: 1 }],
    ['branch3x3dbl_3', { cout: 96, kernel: 3, pad: 1 }],
  ]);
  const pool = chain(t, m, t.averagePool({ within: m }, x, 3, 1, 1), [
    ['branch_pool', { cout: poolFeatures, kernel: 1 }],
  ]);
  return t.concat(m, [b1, b5, b3, pool]);
}

/** Grid reduction 35 → 17: strided 3×3 | 1×1 → 3×3 → strided 3×3 | strided max pool. */
function inceptionB(t: TorchLayout, m: string, x: string): string {
  const b3 = chain(t, m, x, [['branch3x3', { cout: 384, kernel: 3, stride: 2 }]]);
  const bd = chain(t, m, x, [
    ['branch3x3dbl_1', { cout: 64, kernel: 1 }],
    ['branch3x3dbl_2', { cout: 96, kernel: 3, pad: 1 }],
    ['branch3x3dbl_3', { cout: 96, kernel: 3, stride: 2 }],
  ]);
  const pool = t.maxPool({ within: m }, x, 3, 2);
  return t.concat(m, [b3, bd, pool]);
}

/** 17×17 module with factorised 7×7 convolutions (1×7 and 7×1) of `c7` channels. */
function inceptionC(t: TorchLayout, m: string, x: string, c7: number): string {
  const row: Conv = { cout: c7, kernel: [1, 7], pad: [0, 3] };
  const col: Conv = { cout: c7, kernel: [7, 1], pad: [3, 0] };
  const b1 = chain(t, m, x, [['branch1x1', { cout: 192, kernel: 1 }]]);
  const b7 = chain(t, m, x, [
    ['branch7x7_1', { cout: c7, kernel: 1 }],
    ['branch7x7_2', row],
    ['branch7x7_3', { ...col, cout: 192 }],
  ]);
  const bd = chain(t, m, x, [
    ['branch7x7dbl_1', { cout: c7, kernel: 1 }],
    ['branch7x7dbl_2', col],
    ['branch7x7dbl_3', row],
    ['branch7x7dbl_4', col],
    ['branch7x7dbl_5', { ...row, cout: 192 }],
  ]);
  const pool = chain(t, m, t.averagePool({ within: m }, x, 3, 1, 1), [['branch_pool', { cout: 192, kernel: 1 }]]);
  return t.concat(m, [b1, b7, bd, pool]);
}

/** Grid reduction 17 → 8: 1×1 → strided 3×3 | 1×1 → 1×7 → 7×1 → strided 3×3 | strided max pool. */
function inceptionD(t: TorchLayout, m: string, x: string): string {
  const b3 = chain(t, m, x, [
    ['branch3x3_1', { cout: 192, kernel: 1 }],
    ['branch3x3_2', { cout: 320, kernel: 3, stride: 2 }],
  ]);
  const b7 = chain(t, m, x, [
    ['branch7x7x3_1', { cout: 192, kernel: 1 }],
    ['branch7x7x3_2', { cout: 192, kernel: [1, 7], pad: [0, 3] }],
    ['branch7x7x3_3', { cout: 192, kernel: [7, 1], pad: [3, 0] }],
    ['branch7x7x3_4', { cout: 192, kernel: 3, stride: 2 }],
  ]);
  const pool = t.maxPool({ within: m }, x, 3, 2);
  return t.concat(m, [b3, b7, pool]);
}

/** 8×8 module whose 3×3 branches split into parallel 1×3 and 3×1 convolutions. */
function inceptionE(t: TorchLayout, m: string, x: string): string {
  const row: Conv = { cout: 384, kernel: [1, 3], pad: [0, 1] };
  const col: Conv = { cout: 384, kernel: [3, 1], pad: [1, 0] };
  const b1 = chain(t, m, x, [['branch1x1', { cout: 320, kernel: 1 }]]);
  const s3 = chain(t, m, x, [['branch3x3_1', { cout: 384, kernel: 1 }]]);
  const b3 = t.concat(m, [chain(t, m, s3, [['branch3x3_2a', row]]), chain(t, m, s3, [['branch3x3_2b', col]])]);
  const sd = chain(t, m, x, [
    ['branch3x3dbl_1', { cout: 448, kernel: 1 }],
    ['branch3x3dbl_2', { cout: 384, kernel: 3, pad: 1 }],
  ]);
  const bd = t.concat(m, [chain(t, m, sd, [['branch3x3dbl_3a', row]]), chain(t, m, sd, [['branch3x3dbl_3b', col]])]);
  const pool = chain(t, m, t.averagePool({ within: m }, x, 3, 1, 1), [['branch_pool', { cout: 192, kernel: 1 }]]);
  return t.concat(m, [b1, b3, bd, pool]);
}
