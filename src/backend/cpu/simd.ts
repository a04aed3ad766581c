/**
 * CPU kernels in WebAssembly SIMD (wasm/kernels.ll, two float64 lanes at a time): the
 * cross-entropy row (its maxima, exp(x - max) with its float64 sum, the scale by
 * gradScale / sum), SwiGLU forward and backward, and attention's softmax exps (forward) and
 * P / dS recompute (backward) on score blocks that live in the wasm memory. They repeat the
 * scalar loops of layers.ts and attention.ts operation for operation, so results are bitwise
 * the same. Operands are copied into this thread's own
 * wasm memory and results back (a row or a chunk at a time), which costs little against
 * the exps. `TUNE_CPU_SIMD=0` (or a runtime without wasm SIMD) keeps the scalar loops.
 */
import { KERNELS_WASM } from "./wasm/kernels_wasm.ts";

/**
 * The arguments of the gated activations' forward kernels (layers.ts's and the wasm ones here):
 * out(n) from gate(n), up(n).
 */
export type GatedForwardKernel = [
  out: Float32Array,
  gate: Float32Array,
  up: Float32Array,
  n: number,
];
/** The arguments of their backward kernels: dgate(n), dup(n) from dout(n), gate(n), up(n). */
export type GatedBackwardKernel = [
  dgate: Float32Array,
  dup: Float32Array,
  dout: Float32Array,
  gate: Float32Array,
  up: Float32Array,
  n: number,
];

const PAGE = 65536;
/** Elements per SwiGLU chunk (even): 5 operands of 16 KB stay in L1/L2. */
const CHUNK = 4096;

type Fn3 = (a: number, b: number, c: number) => number;
type Fn4 = (a: number, b: number, c: number, d: number) => number;

/**
 * Constants of exp_shift_sum in kernels.ll order (each fills both lanes of one v128): log2 e,
 * 1.5 * 2^52, ln 2 high and low parts, 1, 1/6, 1/2, 1/24, 1/120, 1/720, 1/5040, -708 (the
 * same numbers fast_math.ts and layers.ts use).
 */
const EXP_TABLE = [
  1.4426950408889634,
  6755399441055744,
  0.693145751953125,
  1.4286068203094173e-6,
  1,
  0.16666666666666666,
  0.5,
  0.041666666666666664,
  0.008333333333333333,
  0.001388888888888889,
  0.0001984126984126984,
  -708,
];
/** Floats the table takes in wasm memory (two doubles per constant). */
const EXP_TABLE_FLOATS = EXP_TABLE.length * 4;
/** The SwiGLU kernels' table: EXP_TABLE, then 709.7 (the overflow limit) and Infinity. */
const SWIGLU_TABLE = [...EXP_TABLE, 709.7, Infinity];
/** Bytes of SWIGLU_TABLE in wasm memory (two doubles per constant). */
export const SWIGLU_TABLE_BYTES = SWIGLU_TABLE.length * 16;
/**
 * attn_exp_row's table: EXP_TABLE's first 11 constants (the polynomial is Horner's there, the
 * coefficients the same), -745.2, then the int64s 1023 and -1074 (written as raw bits).
 */
const ATTN_TABLE = [...EXP_TABLE.slice(0, 11), -745.2];
export const ATTN_TABLE_BYTES = (ATTN_TABLE.length + 2) * 16;
/** Byte offset of SWIGLU_TABLE: after the five SwiGLU operand chunks (16-byte aligned). */
const SWIGLU_TABLE_AT = 5 * CHUNK * 4;
type Max2 = (p: number, n: number, out: number) => void;
type AttnRow = (p: number, n: number, scale: number, max: number, k: number) => number;
type AttnBwd = (
  p: number,
  dp: number,
  n: number,
  scale: number,
  l: number,
  D: number,
  k: number,
) => void;
type SwF = (out: number, gate: number, up: number, n: number, k: number) => void;
type SwB = (dg: number, du: number, d: number, g: number, u: number, n: number, k: number) => void;
type AdamW = (p: number, g: number, m: number, v: number, n: number, k: number) => void;
/** Byte offset of adamw_step's table: after its four operand chunks. */
const ADAMW_TABLE_AT = 4 * CHUNK * 4;

/** One thread's instance of the kernels and the wasm memory they work in. */
export class SimdKernels {
  #mem: WebAssembly.Memory;
  #view: Float32Array;
  #f64: Float64Array;
  #exp: Fn4;
  #scale: Fn3;
  #max2: Max2;
  #swf: SwF;
  #swb: SwB;
  #attnRow: AttnRow;
  #attnBwd: AttnBwd;
  #adamw: AdamW;
  #attnTable = 0;

  constructor(module: WebAssembly.Module) {
    const bytes = SWIGLU_TABLE_AT + SWIGLU_TABLE.length * 16;
    this.#mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / PAGE) });
    const inst = new WebAssembly.Instance(module, { env: { __linear_memory: this.#mem } });
    const x = inst.exports;
    this.#exp = x.exp_shift_sum as Fn4;
    this.#scale = x.scale_rows as Fn3;
    this.#max2 = x.row_max2 as Max2;
    this.#swf = x.swiglu_forward as SwF;
    this.#swb = x.swiglu_backward as SwB;
    this.#attnRow = x.attn_exp_row as AttnRow;
    this.#attnBwd = x.attn_bwd_row as AttnBwd;
    this.#adamw = x.adamw_step as AdamW;
    this.#view = new Float32Array(this.#mem.buffer);
    this.#f64 = new Float64Array(this.#mem.buffer);
  }

  /**
   * Copies src[off, off + n) (n even) into the row buffer; returns the running maxima of
   * its even and odd elements (from -Infinity, NaN never taken) as layers.ts computes them.
   */
  loadRowMax(src: Float32Array, off: number, n: number): [number, number] {
    const at = (n + 3) & ~3; // float index of the two float64 maxima (16-byte aligned)
    // then exp_shift_sum's constant table (expSum writes it)
    if (at + 4 + EXP_TABLE_FLOATS > this.#view.length) {
      const need = (at + 4 + EXP_TABLE_FLOATS) * 4;
      this.#mem.grow(Math.ceil((need - this.#mem.buffer.byteLength) / PAGE));
      this.#view = new Float32Array(this.#mem.buffer);
      this.#f64 = new Float64Array(this.#mem.buffer);
    }
    this.#view.set(src.subarray(off, off + n));
    this.#max2(0, n, at * 4);
    return [this.#f64[at >> 1], this.#f64[(at >> 1) + 1]];
  }

  /**
   * Row buffer = exp(row buffer - max) over its first n (even) elements (inputs below -708
   * give 0); returns the float64 sum in index order. The row stays for `scaleTo`.
   */
  expSum(n: number, max: number): number {
    const table = (((n + 3) & ~3) + 4) * 4; // byte offset, after loadRowMax's maxima
    writeBothLanes(this.#mem.buffer, table, EXP_TABLE);
    return this.#exp(0, n, max, table);
  }

  /** dst[off, off + n) = row buffer * s (float64 product rounded to fp32). */
  scaleTo(dst: Float32Array, off: number, n: number, s: number): void {
    this.#scale(0, n, s);
    dst.set(this.#view.subarray(0, n), off);
  }

  /**
   * A Float32Array of n elements in this thread's wasm memory for attention scores (the
   * products write into it, `attnExpRow` works on it in place); valid until the next call of
   * any method here (the memory may grow).
   */
  attnScratch(n: number): Float32Array {
    this.#attnLayout(n);
    return this.#view.subarray(0, n);
  }

  /**
   * Two Float32Arrays of n elements each in this thread's wasm memory for the backward's P and
   * dP blocks (`attnBwdRow` works on them in place); valid as `attnScratch`'s.
   */
  attnBackwardScratch(n: number): [Float32Array, Float32Array] {
    const at = (n + 3) & ~3; // dP's float index, 16-byte aligned
    this.#attnLayout(at + n);
    return [this.#view.subarray(0, n), this.#view.subarray(at, at + n)];
  }

  /**
   * Grow the memory to hold `floats` floats of scratch, then ATTN_TABLE after them, then the
   * two float64 maxima of `attnRowMax`.
   */
  #attnLayout(floats: number): void {
    const at = ((floats * 4 + 15) >> 4) << 4; // byte offset of ATTN_TABLE
    const end = at + ATTN_TABLE_BYTES + 16;
    if (end > this.#mem.buffer.byteLength) {
      this.#mem.grow(Math.ceil((end - this.#mem.buffer.byteLength) / PAGE));
      this.#view = new Float32Array(this.#mem.buffer);
      this.#f64 = new Float64Array(this.#mem.buffer);
    }
    writeAttnTable(this.#mem.buffer, at);
    this.#attnTable = at;
  }

  /** True when `a` lives in this thread's wasm memory (an `attnScratch` view). */
  holds(a: Float32Array): boolean {
    return a.buffer === this.#mem.buffer;
  }

  /**
   * Elements [off, off + n) (n even) of the attention scratch = exp(x * scale - max) as
   * attention.ts computes them (fp32); returns their float64 sum in index order.
   */
  attnExpRow(off: number, n: number, scale: number, max: number): number {
    return this.#attnRow(off * 4, n, scale, max, this.#attnTable);
  }

  /**
   * The largest of elements [off, off + n) (n even) of the attention scratch, as attention.ts's
   * `if (x > m) m = x` from -Infinity finds it (NaN never taken): the even and odd elements'
   * running maxima, then the larger of the two (the same value; of a +0 and a -0 either may
   * come first, and the softmax gives the same bits with either).
   */
  attnRowMax(off: number, n: number): number {
    const at = this.#attnTable + ATTN_TABLE_BYTES;
    this.#max2(off * 4, n, at);
    const even = this.#f64[at >> 3], odd = this.#f64[(at >> 3) + 1];
    return odd > even ? odd : even;
  }

  /**
   * Elements [off, off + n) (n even) of the attention scratch *= s (float64 product rounded
   * to fp32), as `s[j] * s` in attention.ts.
   */
  attnScaleRow(off: number, n: number, s: number): void {
    this.#scale(off * 4, n, s);
  }

  /**
   * One backward row as attention.ts attentionBackward computes it, on elements [off, off + n)
   * (n even) of `p` and `dp` (both `attnBackwardScratch` views): P = exp(p * scale - l),
   * p = P, dp = P * (dp - D) * scale (fp32 stores of the float64 values).
   */
  attnBwdRow(
    p: Float32Array,
    dp: Float32Array,
    off: number,
    n: number,
    scale: number,
    l: number,
    D: number,
  ): void {
    const o = off * 4;
    this.#attnBwd(p.byteOffset + o, dp.byteOffset + o, n, scale, l, D, this.#attnTable);
  }

  /**
   * AdamW over elements [0, n) (n even) of params, grads, m and v as adamw.ts's loop computes
   * them, 4096 at a time through this thread's memory. `table`: decay, b1, a1, b2, a2,
   * bc2Sqrt, eps, stepSize (see adamwStep).
   */
  adamw(
    params: Float32Array,
    grads: Float32Array,
    m: Float32Array,
    v: Float32Array,
    n: number,
    table: readonly number[],
  ): void {
    const w = this.#view, B = CHUNK * 4; // byte offsets of the operands: p, g, m, v
    writeBothLanes(this.#mem.buffer, ADAMW_TABLE_AT, table);
    for (let i = 0; i < n; i += CHUNK) {
      const c = Math.min(CHUNK, n - i);
      w.set(params.subarray(i, i + c), 0);
      w.set(grads.subarray(i, i + c), CHUNK);
      w.set(m.subarray(i, i + c), 2 * CHUNK);
      w.set(v.subarray(i, i + c), 3 * CHUNK);
      this.#adamw(0, B, 2 * B, 3 * B, c, ADAMW_TABLE_AT);
      params.set(w.subarray(0, c), i);
      m.set(w.subarray(2 * CHUNK, 2 * CHUNK + c), i);
      v.set(w.subarray(3 * CHUNK, 3 * CHUNK + c), i);
    }
  }

  /** Write SWIGLU_TABLE (each constant in both lanes) where the SwiGLU kernels read it. */
  #swigluTable(): void {
    writeSwigluTable(this.#mem.buffer, SWIGLU_TABLE_AT);
  }

  /** out(n) = silu(gate) * up for even n, as layers.ts swigluForward. */
  swigluForward(...[out, gate, up, n]: GatedForwardKernel): void {
    const v = this.#view, B = CHUNK * 4; // byte offsets of the operands: gate, up, out
    this.#swigluTable();
    for (let i = 0; i < n; i += CHUNK) {
      const m = Math.min(CHUNK, n - i);
      v.set(gate.subarray(i, i + m), 0);
      v.set(up.subarray(i, i + m), CHUNK);
      this.#swf(2 * B, 0, B, m, SWIGLU_TABLE_AT);
      out.set(v.subarray(2 * CHUNK, 2 * CHUNK + m), i);
    }
  }

  /** dgate, dup (n) from dout, gate, up for even n, as layers.ts swigluBackward (may alias). */
  swigluBackward(...[dgate, dup, dout, gate, up, n]: GatedBackwardKernel): void {
    const v = this.#view, B = CHUNK * 4; // operands: dout, gate, up, dgate, dup
    this.#swigluTable();
    for (let i = 0; i < n; i += CHUNK) {
      const m = Math.min(CHUNK, n - i);
      v.set(dout.subarray(i, i + m), 0);
      v.set(gate.subarray(i, i + m), CHUNK);
      v.set(up.subarray(i, i + m), 2 * CHUNK);
      this.#swb(3 * B, 4 * B, 0, B, 2 * B, m, SWIGLU_TABLE_AT);
      dgate.set(v.subarray(3 * CHUNK, 3 * CHUNK + m), i);
      dup.set(v.subarray(4 * CHUNK, 4 * CHUNK + m), i);
    }
  }
}

/** `values` as float64s at byte `at` (8-aligned) of a wasm memory, each in both lanes. */
function writeBothLanes(mem: ArrayBufferLike, at: number, values: readonly number[]): void {
  const f64 = new Float64Array(mem, at, values.length * 2);
  for (let i = 0; i < values.length; i++) f64[2 * i] = f64[2 * i + 1] = values[i];
}

/** attn_exp_row's constant table at byte `at` (16-aligned) of a wasm memory: ATTN_TABLE_BYTES. */
export function writeAttnTable(mem: ArrayBufferLike, at: number): void {
  writeBothLanes(mem, at, ATTN_TABLE);
  const i64 = new BigInt64Array(mem, at + ATTN_TABLE.length * 16, 4);
  i64[0] = i64[1] = 1023n;
  i64[2] = i64[3] = -1074n;
}

/** swiglu_forward/backward's constant table at byte `at` (16-aligned): SWIGLU_TABLE_BYTES. */
export function writeSwigluTable(mem: ArrayBufferLike, at: number): void {
  writeBothLanes(mem, at, SWIGLU_TABLE);
}

let module: WebAssembly.Module | null | undefined;
let kernels: SimdKernels | null = null;
let enabled = true;

/** This thread's SIMD kernels, or null when wasm SIMD is unavailable or turned off. */
export function simdKernels(): SimdKernels | null {
  if (!enabled) return null;
  const mod = kernelModule();
  if (mod === null) return null;
  kernels ??= new SimdKernels(mod);
  return kernels;
}

/**
 * The compiled kernels.ll module, or null without wasm SIMD or with `TUNE_CPU_SIMD=0`
 * (`setSimd` does not change it: small_gemv.ts's products must not change mid-process).
 */
export function kernelModule(): WebAssembly.Module | null {
  if (module === undefined) {
    module = null;
    // Only read the variable where env access is granted (never prompt, e.g. in a worker).
    const env = { name: "env", variable: "TUNE_CPU_SIMD" } as const;
    if (
      Deno.permissions.querySync(env).state === "granted" &&
      Deno.env.get("TUNE_CPU_SIMD") === "0"
    ) return null;
    try {
      module = new WebAssembly.Module(Uint8Array.from(atob(KERNELS_WASM), (c) => c.charCodeAt(0)));
    } catch {
      return null; // no wasm SIMD here: the scalar loops run
    }
  }
  return module;
}

/** Turn the SIMD kernels on or off in this thread (tests compare both paths). */
export function setSimd(on: boolean): void {
  enabled = on;
}
