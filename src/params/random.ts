/**
 * A small seeded random generator (sfc32 seeded through splitmix32) for deterministic
 * weight initialisation: the same seed gives the same numbers on every machine.
 */
import { fillNormalPairs } from "../backend/cpu/normal_fill.ts";

/** fillNormal hands runs of at least this many pairs to the wasm kernel. */
const KERNEL_MIN_PAIRS = 64;

/** Deterministic uniform and normal draws from a 32-bit seed. */
export class SeededRandom {
  #a: number;
  #b: number;
  #c: number;
  #d: number;
  #spare: number | null = null;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = () => {
      // splitmix32
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next();
    for (let i = 0; i < 12; i++) this.#nextU32();
  }

  #nextU32(): number {
    // sfc32
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1) with 32 random bits. */
  uniform(): number {
    return this.#nextU32() / 4294967296;
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    if (this.#spare !== null) {
      const s = this.#spare;
      this.#spare = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Fill `out` with U(lo, hi). */
  fillUniform(out: Float32Array, lo: number, hi: number): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = lo + (hi - lo) * this.uniform();
    return out;
  }

  /**
   * Fill `out` with N(0, std^2): the same numbers as `std * normal()` element by element
   * (the same draws, the same Box-Muller pair, the spare carried in and out). The bulk runs in
   * the wasm kernel (backend/cpu/normal_fill.ts, on both cores for the CPU backend's shared
   * buffers; bitwise the same fp32s); the loop below, with the generator's state in locals,
   * does the rest, and all of it when wasm SIMD is off.
   */
  fillNormal(out: Float32Array, std: number): Float32Array {
    const n = out.length;
    let i = 0;
    if (n > 0 && this.#spare !== null) {
      out[0] = std * this.#spare;
      this.#spare = null;
      i = 1;
    }
    const bulk = ((n - i) >> 1) & ~3; // whole pairs, a multiple of 4
    if (bulk >= KERNEL_MIN_PAIRS) {
      const state = Int32Array.of(this.#a, this.#b, this.#c, this.#d);
      if (fillNormalPairs(state, out, i, bulk, std)) {
        [this.#a, this.#b, this.#c, this.#d] = Array.from(state, (x) => x >>> 0);
        i += 2 * bulk;
      }
    }
    // sfc32 in int32 arithmetic (the same bits as #nextU32)
    let a = this.#a | 0, b = this.#b | 0, c = this.#c | 0, d = this.#d | 0;
    for (; i < n; i += 2) {
      let u = 0;
      let t = 0;
      while (u === 0) {
        t = (((a + b) | 0) + d) | 0;
        d = (d + 1) | 0;
        a = b ^ (b >>> 9);
        b = (c + (c << 3)) | 0;
        c = ((c << 21) | (c >>> 11)) + t | 0;
        u = (t >>> 0) / 4294967296;
      }
      t = (((a + b) | 0) + d) | 0;
      d = (d + 1) | 0;
      a = b ^ (b >>> 9);
      b = (c + (c << 3)) | 0;
      c = ((c << 21) | (c >>> 11)) + t | 0;
      const v = (t >>> 0) / 4294967296;
      const r = Math.sqrt(-2 * Math.log(u));
      const angle = 2 * Math.PI * v;
      out[i] = std * (r * Math.cos(angle));
      if (i + 1 < n) out[i + 1] = std * (r * Math.sin(angle));
      else this.#spare = r * Math.sin(angle);
    }
    this.#a = a >>> 0;
    this.#b = b >>> 0;
    this.#c = c >>> 0;
    this.#d = d >>> 0;
    return out;
  }
}

/** Mix several integers into one 32-bit seed (for per-step, per-layer dropout seeds). */
export function mixSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
    h = (h ^ (h >>> 12)) >>> 0;
  }
  return h >>> 0;
}
