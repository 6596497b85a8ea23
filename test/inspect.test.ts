// graft inspect on the light models: parameter totals, every output shape, and the CLI's
// table and JSON. Totals are checked against counts computed here from the raw file (weight
// shapes read straight from the ConstantOfShape inputs, without the folder) and against the
// published figures for the same architectures.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Graph } from '../src/graph/ir.ts';
import { summarizeGraph } from '../src/graph/summary.ts';
import { sizeOf, toNumbers } from '../src/graph/tensor.ts';
import { decodeModelFile, loadModelFile } from '../src/node/files.ts';
import { LIGHT_MODELS, REPO_ROOT, lightModelPath, type LightModel } from './helpers/models.ts';

/**
 * Published parameter counts of these exact networks, where one exists:
 * - AlexNet (BVLC Caffe, grouped conv2/4/5): 60,965,224 (Caffe's bvlc_alexnet).
 * - VGG-19: 143,667,240 (Simonyan & Zisserman; torchvision vgg19 gives the same).
 * - ResNet-50 v1: 25,557,032 trainable (torchvision resnet50 gives the same), plus BN running
 *   statistics 2 × 26,560 = 53,120 non-trainable.
 * GoogLeNet (BVLC, with LRN, no BN) and SqueezeNet 1.0 (Caffe) are checked by the raw count only.
 */
const PUBLISHED: Partial<Record<LightModel, { total: number; trainable: number }>> = {
  bvlc_alexnet: { total: 60_965_224, trainable: 60_965_224 },
  vgg19: { total: 143_667_240, trainable: 143_667_240 },
  resnet50: { total: 25_610_152, trainable: 25_557_032 },
};

/** Float parameters counted from the undecoded-by-folding graph: every float initializer the
 * file stores inline, plus every float ConstantOfShape output (its dims read from the int64
 * shape initializer), minus the BN running statistics for the trainable figure. */
function rawCount(raw: Graph): { total: number; trainable: number } {
  const used = new Set(raw.nodes.flatMap((n) => n.inputs));
  const state = new Set(
    raw.nodes.filter((n) => n.opType === 'BatchNormalization').flatMap((n) => [n.inputs[3], n.inputs[4]]),
  );
  const sizes = new Map<string, number>();
  for (const [name, init] of raw.initializers)
    if (init.value.dtype === 'float32' && used.has(name)) sizes.set(name, sizeOf(init.value.dims));
  for (const n of raw.nodes) {
    if (n.opType !== 'ConstantOfShape') continue;
    const dims = toNumbers(raw.initializers.get(n.inputs[0])!.value);
    sizes.set(n.outputs[0], sizeOf(dims));
  }
  let total = 0;
  let trainable = 0;
  for (const [name, size] of sizes) {
    total += size;
    if (!state.has(name)) trainable += size;
  }
  return { total, trainable };
}

describe('graft inspect', () => {
  for (const name of LIGHT_MODELS) {
    it(`${name}: totals, shapes and the classifier`, () => {
      const file = lightModelPath(name);
      const summary = summarizeGraph(loadModelFile(file));
      const expected = rawCount(decodeModelFile(file));
      console.log(
        `${name}: ${summary.parameters.toLocaleString('en-US')} parameters, ${summary.trainableParameters.toLocaleString('en-US')} trainable`,
      );
      expect(summary.parameters).toBe(expected.total);
      expect(summary.trainableParameters).toBe(expected.trainable);
      expect(summary.nonTrainableParameters).toBe(expected.total - expected.trainable);
      const published = PUBLISHED[name];
      if (published) expect({ total: summary.parameters, trainable: summary.trainableParameters }).toEqual(published);
      // Per-node parameters add up to the total: every weight is attributed to one node.
      expect(summary.nodes.reduce((s, n) => s + n.parameters, 0)).toBe(summary.parameters);
      for (const n of summary.nodes) {
        for (const s of n.outputShapes)
          expect(
            s.every((d) => typeof d === 'number' && d > 0),
            `${n.name} ${n.opType}`,
          ).toBe(true);
      }
      const out = summary.outputs[0].shape!;
      expect(out.filter((d) => d !== 1)).toEqual([1000]);
      expect(out[0]).toBe(1);
    });
  }

  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'graft.mjs'), ...args], {
      encoding: 'utf8',
      cwd: REPO_ROOT,
    });

  it('prints the table and totals from the command line', () => {
    const r = cli('inspect', lightModelPath('resnet50'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^#\s+name\s+op\s+output shape\s+parameters\s+trainable$/m);
    expect(r.stdout).toMatch(/Gemm\s+\[1, 1000\]\s+2,049,000\s+yes/);
    expect(r.stdout).toContain('parameters: 25,610,152 (trainable 25,557,032, non-trainable 53,120)');
  });

  it('--json gives the same figures for machines', () => {
    const r = cli('inspect', lightModelPath('squeezenet'), '--json');
    expect(r.status, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout);
    const direct = summarizeGraph(loadModelFile(lightModelPath('squeezenet')));
    expect(json.parameters).toBe(direct.parameters);
    expect(json.nodes.length).toBe(direct.nodes.length);
    expect(json.outputs[0].shape).toEqual([1, 1000, 1, 1]);
  });

  it('a bad file exits 1 with one line naming the file, no stack trace', () => {
    const r = cli('inspect', path.join(REPO_ROOT, 'package.json'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('package.json');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('usage errors exit 2', () => {
    expect(cli('inspect').status).toBe(2);
    expect(cli('inspect', 'a.onnx', '--bogus').status).toBe(2);
    expect(cli('frobnicate').status).toBe(2);
  });
});
