// The op registry is the only list of ops: every entry is complete (a shape rule, a way to run
// it, a gradient rule or the reason it has none), every exported op list is derived from it,
// and no other op table (or kernels → graph import) has crept back into src.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeModel } from '../src/graph/codec.ts';
import { SUPPORTED_OPS as SUPPORTED_VIA_GRAPH } from '../src/graph/shape-inference.ts';
import { SUPPORTED_OPS as SUPPORTED_VIA_INDEX } from '../src/index.ts';
import {
  DIFFERENTIABLE_OPS,
  findOp,
  gradientRule,
  OPS,
  RUNTIME_SUPPORTED_OPS,
  SUPPORTED_OPS,
} from '../src/ops/registry.ts';
import { ONNX_ARITY } from '../src/ops/onnx-arity.ts';
import { listCases, readBytes } from './helpers/onnx-testdata.ts';

const SRC = join(import.meta.dirname, '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

describe('op registry', () => {
  it('every op has a shape rule, a runtime lowering and a gradient rule or a stated reason for none', () => {
    expect(Object.keys(OPS).length).toBeGreaterThan(30);
    for (const [name, op] of Object.entries(OPS)) {
      expect(typeof op.shape, `${name}: shape rule`).toBe('function');
      const runtime = op.runtime;
      expect(['steps', 'view', 'folded'], `${name}: runtime kind`).toContain(runtime.kind);
      if (runtime.kind === 'steps') expect(typeof runtime.lower, `${name}: lowering`).toBe('function');
      if ('backward' in op.gradient) {
        expect(typeof op.gradient.backward, `${name}: gradient rule`).toBe('function');
        expect(runtime.kind, `${name}: differentiable, so the runtime must run it`).not.toBe('folded');
      } else {
        expect(op.gradient.notDifferentiable.length, `${name}: why it has no gradient`).toBeGreaterThan(10);
      }
      for (const i of op.steeringInputs ?? []) expect(i, `${name}: steering input index`).toBeGreaterThan(0);
    }
  });

  it('SUPPORTED_OPS, RUNTIME_SUPPORTED_OPS and DIFFERENTIABLE_OPS are read off the registry', () => {
    const keys = Object.keys(OPS).sort();
    expect(SUPPORTED_OPS).toEqual(keys);
    expect(SUPPORTED_VIA_GRAPH).toEqual(keys);
    expect(SUPPORTED_VIA_INDEX).toEqual(keys);
    expect(RUNTIME_SUPPORTED_OPS).toEqual(keys.filter((k) => OPS[k].runtime.kind !== 'folded'));
    expect(DIFFERENTIABLE_OPS).toEqual(keys.filter((k) => gradientRule(k) !== undefined));
    expect(DIFFERENTIABLE_OPS).toContain('ReduceMean');
    expect(gradientRule('Cast')).toBeUndefined();
    expect(gradientRule('NoSuchOp')).toBeUndefined();
    // Lookups by name never reach Object.prototype.
    expect(gradientRule('toString')).toBeUndefined();
    const node = { name: 'n', opType: 'constructor', domain: '', inputs: [], outputs: [], attributes: {} };
    expect(findOp(node)).toBeUndefined();
    expect(findOp({ ...node, opType: 'Conv', domain: 'com.microsoft' })).toBeUndefined();
    expect(findOp({ ...node, opType: 'Conv', domain: 'ai.onnx' })).toBe(OPS.Conv);
  });

  it("every registry op has its input and output counts from ONNX's schema, and the counts are sane", () => {
    for (const op of Object.keys(OPS)) {
      const rows = ONNX_ARITY[op];
      expect(rows, `${op} has no entry in src/ops/onnx-arity.ts`).toBeDefined();
      rows.forEach(([since, minIn, maxIn, minOut, maxOut], i) => {
        expect(since, `${op}: rows oldest first`).toBeGreaterThan(i > 0 ? rows[i - 1][0] : 0);
        expect(minIn <= maxIn && minOut <= maxOut && minOut >= 1, `${op} since ${since}`).toBe(true);
      });
    }
    expect(Object.keys(ONNX_ARITY).sort()).toEqual(Object.keys(OPS).sort());
  });

  it('every registry op has ONNX node cases: the conformance and shape-inference tests check each one', () => {
    const runtime = new Set(RUNTIME_SUPPORTED_OPS);
    const supported = new Set(SUPPORTED_OPS);
    const ranByConformance = new Set<string>();
    const ranByShapeInference = new Set<string>();
    for (const c of listCases('node')) {
      const ops = decodeModel(readBytes(c.modelPath), { file: c.modelPath }).nodes.map((n) => n.opType);
      if (ops.every((op) => runtime.has(op))) for (const op of ops) ranByConformance.add(op);
      if (ops.every((op) => supported.has(op))) for (const op of ops) ranByShapeInference.add(op);
    }
    expect(RUNTIME_SUPPORTED_OPS.filter((op) => !ranByConformance.has(op))).toEqual([]);
    expect(SUPPORTED_OPS.filter((op) => !ranByShapeInference.has(op))).toEqual([]);
  });

  it('src holds no other op table, and kernels/ never imports graph/', () => {
    const forbidden = [
      /\bRUNTIME_OPS\b/,
      /\bALIAS_OPS\b/,
      /\bACTIVATION_OPS\b/,
      /registerGradientRule/,
      /differentiableOps/,
    ];
    for (const file of sourceFiles(SRC)) {
      const text = readFileSync(file, 'utf8');
      for (const pattern of forbidden) expect(pattern.test(text), `${file} matches ${pattern}`).toBe(false);
      if (file.includes(join('src', 'kernels'))) {
        expect(/from '\.\.\/(\.\.\/)?graph\//.test(text), `${file} imports graph/`).toBe(false);
      }
    }
  });
});
