// Labels and preprocessing stored in a model's metadata_props: they survive encode → decode,
// the presets carry the published constants, and malformed entries are refused naming the key.
import { describe, expect, it } from 'vitest';
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import { decodeModel, encodeModel } from '../src/graph/codec.ts';
import { ModelError } from '../src/graph/errors.ts';
import {
  LABELS_KEY,
  PREPROCESS_KEY,
  preprocessPreset,
  readLabels,
  readPreprocess,
  writeLabels,
  writePreprocess,
} from '../src/graph/model-metadata.ts';

const small = () => buildArchitecture('alexnet', { inputSize: 63, classes: 3, seed: 1 });

describe('model metadata', () => {
  it('labels and preprocessing round-trip through the ONNX codec', () => {
    const g = small();
    expect(readLabels(g)).toBeUndefined();
    expect(readPreprocess(g)).toBeUndefined();
    writeLabels(g, ['cat', 'dog', 'ünïcode, "quoted"']);
    const spec = preprocessPreset('caffe', 63);
    writePreprocess(g, spec);
    const back = decodeModel(encodeModel(g));
    expect(readLabels(back)).toEqual(['cat', 'dog', 'ünïcode, "quoted"']);
    expect(readPreprocess(back)).toEqual(spec);
    // Writing again replaces, never duplicates.
    writeLabels(back, ['a', 'b', 'c']);
    expect(back.metadataProps.filter((p) => p.key === LABELS_KEY)).toHaveLength(1);
  });

  it('presets carry the published constants and scale the resize with the input size', () => {
    // torchvision.transforms.Normalize constants of its ImageNet weights; Caffe's BGR means.
    const tv = preprocessPreset('torchvision', 224);
    expect([tv.resize, tv.crop, tv.channelOrder, tv.scale]).toEqual([256, 224, 'rgb', 1 / 255]);
    expect(tv.mean).toEqual([0.485, 0.456, 0.406]);
    expect(tv.std).toEqual([0.229, 0.224, 0.225]);
    const caffe = preprocessPreset('caffe', 224);
    expect([caffe.channelOrder, caffe.scale, ...caffe.mean]).toEqual(['bgr', 1, 103.939, 116.779, 123.68]);
    const inc = preprocessPreset('inception', 299);
    expect([inc.resize, inc.crop, ...inc.mean, ...inc.std]).toEqual([342, 299, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
    expect(preprocessPreset('torchvision', 112).resize).toBe(128);
    expect(() => preprocessPreset('keras' as never, 224)).toThrow(/accepted: torchvision, caffe, inception/);
    expect(() => preprocessPreset('torchvision', 0)).toThrow(ModelError);
  });

  it('refuses malformed entries, naming the key and what is accepted', () => {
    const g = small();
    g.metadataProps.push({ key: LABELS_KEY, value: '{"not": "a list"}' });
    expect(() => readLabels(g)).toThrow(/onnx_graft\.labels.*non-empty array of strings/);
    g.metadataProps = [{ key: LABELS_KEY, value: 'not json' }];
    expect(() => readLabels(g)).toThrow(/is not JSON/);
    const good = preprocessPreset('torchvision', 32);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...good, std: [1, 0, 1] }, /'std' must be three finite numbers, none zero/],
      [{ ...good, mean: [1, 2] }, /'mean' must be three finite numbers/],
      [{ ...good, crop: 64 }, /'crop' \(64\) is larger than 'resize'/],
      [{ ...good, resize: -3 }, /'resize' must be a positive integer/],
      [{ ...good, channelOrder: 'rgba' }, /'channelOrder' must be 'rgb' or 'bgr'/],
      [{ ...good, scale: 0 }, /'scale' must be a positive number/],
    ];
    for (const [spec, message] of cases) {
      g.metadataProps = [{ key: PREPROCESS_KEY, value: JSON.stringify(spec) }];
      expect(() => readPreprocess(g)).toThrow(message);
    }
    expect(() => writeLabels(g, [])).toThrow(ModelError);
  });
});
