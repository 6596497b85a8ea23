// GpuContext on whatever adapter this machine has (lavapipe in CI): it must be a real one,
// run a kernel correctly, and turn every GPU failure into a typed error naming the operation.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeGpuContext } from '../src/node/index.ts';
import { GpuContext, UPLOAD_PIECE_BYTES } from '../src/kernels/gpu-context.ts';
import { GpuAdapterError, GpuDeviceLostError, GpuError, GpuValidationError } from '../src/kernels/errors.ts';
import { randomFloat32Array } from './helpers/random.ts';

// C[M,N] = A[M,K] · B[K,N], one output per invocation; sizes deliberately not multiples of 8.
const MATMUL_WGSL = /* wgsl */ `
struct Dims { m: u32, k: u32, n: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3u) {
  let row = id.y;
  let col = id.x;
  if (row >= dims.m || col >= dims.n) { return; }
  var sum = 0.0;
  for (var i = 0u; i < dims.k; i++) {
    sum += a[row * dims.k + i] * b[i * dims.n + col];
  }
  c[row * dims.n + col] = sum;
}`;

function matmulReference(a: Float32Array, b: Float32Array, m: number, k: number, n: number) {
  const c = new Float64Array(m * n);
  const magnitude = new Float64Array(m * n); // Σ|a·b|, the scale of float32 rounding error
  for (let row = 0; row < m; row++) {
    for (let col = 0; col < n; col++) {
      let sum = 0;
      let abs = 0;
      for (let i = 0; i < k; i++) {
        const p = a[row * k + i]! * b[i * n + col]!;
        sum += p;
        abs += Math.abs(p);
      }
      c[row * n + col] = sum;
      magnitude[row * n + col] = abs;
    }
  }
  return { c, magnitude };
}

describe('GpuContext', () => {
  let ctx: GpuContext;

  beforeAll(async () => {
    ctx = await createNodeGpuContext();
    const { limits, ...identity } = ctx.info;
    const computeLimits = Object.fromEntries(
      Object.entries(limits).filter(([name]) => /Compute|Storage|BufferSize/.test(name)),
    );
    console.log('GPU adapter report:', JSON.stringify({ ...identity, computeLimits }, null, 1));
  });

  afterAll(() => {
    ctx?.dispose();
  });

  it("reports the real adapter, not Dawn's null backend", () => {
    const { info } = ctx;
    expect(info.device).not.toMatch(/null/i);
    expect(`${info.vendor}${info.architecture}${info.description}`).not.toBe('');
    expect(info.features.length).toBeGreaterThan(0);
    expect(info.limits.maxStorageBufferBindingSize).toBeGreaterThan(0);
    // The compute limits were requested at the adapter's maximum.
    expect(ctx.device.limits.maxStorageBufferBindingSize).toBe(ctx.adapter.limits.maxStorageBufferBindingSize);
    expect(ctx.device.limits.maxComputeInvocationsPerWorkgroup).toBe(
      ctx.adapter.limits.maxComputeInvocationsPerWorkgroup,
    );
    for (const feature of ['timestamp-query', 'shader-f16', 'subgroups']) {
      expect(ctx.hasFeature(feature)).toBe(ctx.adapter.features.has(feature));
    }
  });

  it('runs a 37×53×29 matmul that matches a float64 reference', async () => {
    const [m, k, n] = [37, 53, 29];
    const a = randomFloat32Array(m * k, 1);
    const b = randomFloat32Array(k * n, 2);
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const dims = ctx.createBuffer('matmul dims', 16, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    const aBuffer = ctx.createBuffer('a', a.byteLength, usage);
    const bBuffer = ctx.createBuffer('b', b.byteLength, usage);
    const cBuffer = ctx.createBuffer('c', m * n * 4, usage);
    ctx.upload(dims, new Uint32Array([m, k, n, 0]));
    ctx.upload(aBuffer, a);
    ctx.upload(bBuffer, b);

    const pipeline = await ctx.createComputePipeline('matmul naive', MATMUL_WGSL);
    const c = await ctx.scope('matmul 37x53x29', async () => {
      const bindGroup = ctx.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [dims, aBuffer, bBuffer, cBuffer].map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      const encoder = ctx.device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(Math.ceil(n / 8), Math.ceil(m / 8));
      pass.end();
      ctx.device.queue.submit([encoder.finish()]);
      return new Float32Array(await ctx.read(cBuffer));
    });

    const reference = matmulReference(a, b, m, k, n);
    for (let i = 0; i < m * n; i++) {
      const tolerance = 4 * k * 2 ** -24 * reference.magnitude[i]! + 1e-7;
      expect(Math.abs(c[i]! - reference.c[i]!), `element ${i}`).toBeLessThanOrEqual(tolerance);
    }
    for (const buffer of [dims, aBuffer, bBuffer, cBuffer]) buffer.destroy();
  });

  it('caches pipelines by exact WGSL and entry point', async () => {
    const first = await ctx.createComputePipeline('matmul naive', MATMUL_WGSL);
    const again = await ctx.createComputePipeline('another label', MATMUL_WGSL);
    const otherText = await ctx.createComputePipeline('matmul naive', `${MATMUL_WGSL}\n`);
    expect(again).toBe(first);
    expect(otherText).not.toBe(first);
  });

  it('reads a sub-range of a buffer', async () => {
    const data = randomFloat32Array(64, 3);
    const buffer = ctx.createBuffer(
      'sub-range',
      data.byteLength,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    );
    ctx.upload(buffer, data);
    const part = new Float32Array(await ctx.read(buffer, 10 * 4, 5 * 4));
    expect([...part]).toEqual([...data.subarray(5, 15)]);
    await expect(ctx.read(buffer, 6, 0)).rejects.toBeInstanceOf(GpuValidationError);
    buffer.destroy();
  });

  it('uploads data larger than one write piece, at an offset, from a view into a larger buffer', async () => {
    // Two whole pieces and a part: the pieces' offsets in the buffer and in the view must both advance.
    const floats = (2 * UPLOAD_PIECE_BYTES) / 4 + 37;
    const backing = randomFloat32Array(floats + 8, 4);
    const data = backing.subarray(3, 3 + floats);
    const buffer = ctx.createBuffer(
      'pieces',
      data.byteLength + 16,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    );
    ctx.upload(buffer, data, 16);
    const back = new Float32Array(await ctx.read(buffer, data.byteLength, 16));
    expect(back.length).toBe(floats);
    expect(back.findIndex((v, i) => v !== data[i])).toBe(-1);
    buffer.destroy();
  });

  it('turns a WGSL syntax error into a GpuValidationError naming the kernel', async () => {
    const broken = MATMUL_WGSL.replace('var sum = 0.0;', 'var sum = 0.0');
    const error = await ctx.createComputePipeline('matmul with a typo', broken).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(GpuValidationError);
    const message = (error as GpuValidationError).message;
    expect(message).toContain("'matmul with a typo'");
    expect(message).toMatch(/matmul with a typo:\d+:\d+: error:/);
    expect((error as GpuValidationError).operation).toContain('matmul with a typo');
    // A failed compile is not cached: the same call fails again rather than returning a stale promise.
    await expect(ctx.createComputePipeline('matmul with a typo', broken)).rejects.toBeInstanceOf(GpuValidationError);
    // And the context still works afterwards.
    await expect(ctx.scope('after a failed compile', () => 7)).resolves.toBe(7);
  });

  it('refuses a missing entry point with a GpuValidationError', async () => {
    await expect(ctx.createComputePipeline('matmul', MATMUL_WGSL, 'nope')).rejects.toBeInstanceOf(GpuValidationError);
  });

  it('reports a buffer larger than the device allows as an error, not a crash', async () => {
    const tooBig = ctx.device.limits.maxBufferSize + 4;
    expect(() => ctx.createBuffer('huge', tooBig, GPUBufferUsage.STORAGE)).toThrow(GpuValidationError);
    expect(() => ctx.createBuffer('huge', tooBig, GPUBufferUsage.STORAGE)).toThrow(/huge.*maxBufferSize/);
    // The same request straight to the device is caught by the error scopes.
    const error = await ctx
      .scope('allocate huge', () =>
        ctx.device.createBuffer({ label: 'huge', size: tooBig, usage: GPUBufferUsage.STORAGE }),
      )
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(GpuError);
    expect((error as GpuError).operation).toBe('allocate huge');
    expect((error as GpuError).message).toMatch(/size/i);
  });

  it('reports an error made outside any scope at the next scope() call', async () => {
    ctx.device.createBuffer({
      label: 'unscoped huge',
      size: ctx.device.limits.maxBufferSize + 4,
      usage: GPUBufferUsage.STORAGE,
    });
    await ctx.device.queue.onSubmittedWorkDone();
    await new Promise((resolve) => setTimeout(resolve, 50)); // uncaptured-error events arrive asynchronously
    await expect(ctx.scope('next operation', () => 1)).rejects.toThrow(/next operation: an earlier GPU call/);
    await expect(ctx.scope('the one after', () => 2)).resolves.toBe(2);
  });

  it('rejects upload ranges the buffer cannot hold', () => {
    const buffer = ctx.createBuffer('small', 16, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    expect(() => ctx.upload(buffer, new Float32Array(8))).toThrow(GpuValidationError);
    expect(() => ctx.upload(buffer, new Uint8Array(3))).toThrow(/multiple of 4/);
    buffer.destroy();
  });
});

describe('GpuContext lifecycle', () => {
  it('throws GpuError("context disposed") after dispose, and dispose is idempotent', async () => {
    const ctx = await createNodeGpuContext();
    ctx.dispose();
    ctx.dispose();
    expect(ctx.disposed).toBe(true);
    expect(() => ctx.createBuffer('late', 16, GPUBufferUsage.STORAGE)).toThrow(/context disposed/);
    expect(() => ctx.device).toThrow(GpuError);
    await expect(ctx.scope('late scope', () => 1)).rejects.toThrow(/late scope: context disposed/);
    await expect(ctx.createComputePipeline('late', MATMUL_WGSL)).rejects.toThrow(/context disposed/);
  });

  it('throws GpuDeviceLostError naming the operation once the device is lost', async () => {
    const ctx = await createNodeGpuContext();
    const device = ctx.device;
    device.destroy(); // not through dispose(): to the context this is a loss
    await device.lost;
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(ctx.lost?.reason).toBe('destroyed');
    expect(() => ctx.createBuffer('after loss', 16, GPUBufferUsage.STORAGE)).toThrow(GpuDeviceLostError);
    const error = await ctx
      .scope('run after loss', () => 1)
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(GpuDeviceLostError);
    expect((error as GpuDeviceLostError).operation).toBe('run after loss');
    ctx.dispose();
    expect(() => ctx.createBuffer('after dispose', 16, GPUBufferUsage.STORAGE)).toThrow(/context disposed/);
  });

  it("refuses Dawn's null backend", async () => {
    const error = await createNodeGpuContext({ dawnOptions: ['backend=null'] }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(GpuAdapterError);
    expect((error as GpuAdapterError).problem).toBe('null-backend');
    expect((error as GpuAdapterError).message).toMatch(/null backend/);
  });

  it('gives the install command when Dawn finds no adapter', async () => {
    if (process.platform === 'win32') return; // there, d3d12 is a real backend
    const error = await createNodeGpuContext({ dawnOptions: ['backend=d3d12'] }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(GpuAdapterError);
    expect((error as GpuAdapterError).problem).toBe('no-adapter');
    expect((error as Error).message).toContain(
      'no WebGPU adapter: install a Vulkan driver, e.g. `sudo bash scripts/setup-system.sh` (Mesa lavapipe from bookworm-backports)',
    );
  });

  it('selects an adapter by name and says which one it found when none matches', async () => {
    const probe = await createNodeGpuContext();
    const { device: slug, vendor } = probe.info;
    probe.dispose();

    const byName = await createNodeGpuContext({ adapterName: (slug || vendor).toUpperCase() });
    expect(byName.info.device).toBe(slug);
    byName.dispose();

    const error = await createNodeGpuContext({ adapterName: 'no-such-gpu-9000' }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(GpuAdapterError);
    expect((error as GpuAdapterError).problem).toBe('name-mismatch');
    expect((error as Error).message).toContain('no-such-gpu-9000');
    expect((error as Error).message).toContain(slug);
  });

  it('refuses requiredLimits beyond what the adapter offers', async () => {
    const error = await createNodeGpuContext({ requiredLimits: { maxComputeWorkgroupSizeX: 1e9 } }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(GpuError);
    expect((error as Error).message).toMatch(/maxComputeWorkgroupSizeX = 1000000000 but the adapter offers \d+/);
  });

  it('without a GPU object and no navigator.gpu, says to use the node entry', async () => {
    if ((globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu) return; // a runtime with WebGPU built in
    const error = await GpuContext.create().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(GpuAdapterError);
    expect((error as Error).message).toMatch(/no WebGPU is available.*createNodeGpuContext/s);
  });
});
