// Uploaded constants shared by the inference sessions of one GPU context: a second Session.create
// of a model finds every packed weight, folded bias and raw initializer another session of the
// context uploaded, and neither packs, folds nor uploads it again; the GPU holds one copy.
//
// A shared upload is identified by what its data is computed from (ConstantOrigin): the recipe
// (transform, layout, parameters) and a content fingerprint of each source tensor (or, for a
// weight left in its file, the identity of its bytes there, so that nothing is read), never by
// names, so two models with the same initializer names and other values, or a Graph whose weight
// bytes were changed in place, get uploads of their own. Each upload counts the stores that hold
// it and is destroyed when the last lets go (GpuContext.dispose destroys everything as before).
// Sessions never write their constants; a Trainer's store (whose optimizer writes parameters in
// place) does not share.
import type { GpuContext } from '../kernels/gpu-context.ts';
import type { ConstantOrigin } from '../ops/op.ts';

export interface SharedUpload {
  buffer: GPUBuffer;
  /** The host bytes uploaded (the buffer may be rounded up). */
  byteLength: number;
}

interface Entry extends SharedUpload {
  holders: number;
}

const byContext = new WeakMap<GpuContext, SharedConstants>();

export class SharedConstants {
  readonly #entries = new Map<string, Entry>();

  /** The registry of `gpu`'s shared uploads (one per context, gone with it). */
  static of(gpu: GpuContext): SharedConstants {
    let shared = byContext.get(gpu);
    if (!shared) byContext.set(gpu, (shared = new SharedConstants()));
    return shared;
  }

  /** The upload identified by `id`, made by `upload` when no holder has it; the caller holds it
   * until release(id). */
  acquire(id: string, upload: () => SharedUpload): SharedUpload {
    let entry = this.#entries.get(id);
    if (!entry) {
      entry = { ...upload(), holders: 0 };
      this.#entries.set(id, entry);
    }
    entry.holders++;
    return entry;
  }

  /** Lets go of one hold on `id`: the buffer is destroyed with its last holder. */
  release(id: string): void {
    const entry = this.#entries.get(id);
    if (!entry) return;
    if (--entry.holders > 0) return;
    this.#entries.delete(id);
    entry.buffer.destroy();
  }
}

/**
 * The identity of a constant's data across sessions: its recipe and each source's fingerprint.
 * `fingerprints` remembers the fingerprint of each source array already read (a weight packed
 * in several column chunks, statistics read by the folded weights and bias); the caller keeps
 * it for one store, whose own uploads are keyed by name anyway.
 */
export function originId(origin: ConstantOrigin, fingerprints: WeakMap<Float32Array, string>): string {
  const parts = origin.sources.map((source) => {
    if (typeof source === 'string') return source; // a weight left in its file, named by its identity
    let f = fingerprints.get(source);
    if (f === undefined) fingerprints.set(source, (f = fingerprintFloats(source)));
    return f;
  });
  return `${origin.recipe}\u0000${parts.join(',')}`;
}

// Multipliers of xxHash32 (odd, well mixed) as int32; two families of four lanes.
const P1 = -1640531535; // 0x9e3779b1
const P2 = -2048144777; // 0x85ebca77
const Q1 = -1028477379; // 0xc2b2ae3d
const Q2 = 668265263; // 0x27d4eb2f

/**
 * A content fingerprint of a float tensor's bytes, read in place (an Int32Array view, no copy):
 * its length and eight 32-bit lanes. Word i feeds lanes a[i mod 4] and b[i mod 4], two
 * multiply-rotate chains with other constants, so every word is covered by 64 bits of state;
 * each step is a bijection of the lane for a fixed word and of the word for a fixed lane, so a
 * change of any single word always changes the fingerprint. Four independent chains per family
 * keep the multiplier busy (about 1 GB/s in V8 on this machine's core, loaded).
 */
export function fingerprintFloats(data: Float32Array): string {
  const w = new Int32Array(data.buffer, data.byteOffset, data.length);
  const n = w.length;
  let a0 = P1;
  let a1 = P2;
  let a2 = Q1;
  let a3 = Q2;
  let b0 = ~P1;
  let b1 = ~P2;
  let b2 = ~Q1;
  let b3 = ~Q2;
  const whole = n & ~3;
  let i = 0;
  let t = 0;
  for (; i < whole; i += 4) {
    const w0 = w[i];
    const w1 = w[i + 1];
    const w2 = w[i + 2];
    const w3 = w[i + 3];
    t = (a0 + Math.imul(w0, P2)) | 0;
    a0 = Math.imul((t << 13) | (t >>> 19), P1);
    t = (a1 + Math.imul(w1, P2)) | 0;
    a1 = Math.imul((t << 13) | (t >>> 19), P1);
    t = (a2 + Math.imul(w2, P2)) | 0;
    a2 = Math.imul((t << 13) | (t >>> 19), P1);
    t = (a3 + Math.imul(w3, P2)) | 0;
    a3 = Math.imul((t << 13) | (t >>> 19), P1);
    t = b0 ^ Math.imul(w0, Q1);
    b0 = Math.imul((t << 17) | (t >>> 15), Q2);
    t = b1 ^ Math.imul(w1, Q1);
    b1 = Math.imul((t << 17) | (t >>> 15), Q2);
    t = b2 ^ Math.imul(w2, Q1);
    b2 = Math.imul((t << 17) | (t >>> 15), Q2);
    t = b3 ^ Math.imul(w3, Q1);
    b3 = Math.imul((t << 17) | (t >>> 15), Q2);
  }
  for (; i < n; i++) {
    t = (a0 + Math.imul(w[i], P2)) | 0;
    a0 = Math.imul((t << 13) | (t >>> 19), P1);
    t = b0 ^ Math.imul(w[i], Q1);
    b0 = Math.imul((t << 17) | (t >>> 15), Q2);
  }
  const hex = (x: number) => (x >>> 0).toString(16).padStart(8, '0');
  return `${n}:${[a0, a1, a2, a3, b0, b1, b2, b3].map(hex).join('')}`;
}
