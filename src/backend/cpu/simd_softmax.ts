/**
 * Cross-entropy row kernels in WebAssembly SIMD (wasm/softmax_kernels.ll): exp(x - max)
 * with its float64 sum, and the scale by gradScale / sum, two float64 lanes at a time.
 * They repeat the scalar loop of layers.ts operation for operation, so results are bitwise
 * the same; a row is copied into this thread's own wasm memory and back (128 KB for a
 * 32000-token vocabulary: microseconds, against a few hundred for the exps).
 * `TUNE_CPU_SIMD=0` (or a runtime without wasm SIMD) keeps the scalar loop.
 */
import { SOFTMAX_KERNELS_WASM } from "./wasm/softmax_kernels_wasm.ts";

const PAGE = 65536;

/** One thread's instance of the row kernels and the wasm memory they work in. */
export class SoftmaxRows {
  #mem: WebAssembly.Memory;
  #view: Float32Array;
  #exp: (p: number, n: number, max: number) => number;
  #scale: (p: number, n: number, s: number) => void;

  constructor(module: WebAssembly.Module) {
    this.#mem = new WebAssembly.Memory({ initial: 1 });
    const inst = new WebAssembly.Instance(module, { env: { __linear_memory: this.#mem } });
    this.#exp = inst.exports.exp_shift_sum as (p: number, n: number, max: number) => number;
    this.#scale = inst.exports.scale_rows as (p: number, n: number, s: number) => void;
    this.#view = new Float32Array(this.#mem.buffer);
  }

  /**
   * Row buffer = exp(src[off, off + n) - max) for even n (inputs below -708 give 0);
   * returns the float64 sum in index order. The row stays in wasm memory for `scaleTo`.
   */
  expSum(src: Float32Array, off: number, n: number, max: number): number {
    if (n > this.#view.length) {
      this.#mem.grow(Math.ceil((n * 4 - this.#mem.buffer.byteLength) / PAGE));
      this.#view = new Float32Array(this.#mem.buffer);
    }
    this.#view.set(src.subarray(off, off + n));
    return this.#exp(0, n, max);
  }

  /** dst[off, off + n) = row buffer * s (float64 product rounded to fp32). */
  scaleTo(dst: Float32Array, off: number, n: number, s: number): void {
    this.#scale(0, n, s);
    dst.set(this.#view.subarray(0, n), off);
  }
}

let module: WebAssembly.Module | null | undefined;
let rows: SoftmaxRows | null = null;
let enabled = true;

/** This thread's row kernels, or null when wasm SIMD is unavailable or turned off. */
export function softmaxRows(): SoftmaxRows | null {
  if (!enabled) return null;
  if (module === undefined) {
    module = null;
    try {
      if (Deno.env.get("TUNE_CPU_SIMD") === "0") return null;
    } catch {
      // no env permission (a worker without it): use the kernels
    }
    try {
      module = new WebAssembly.Module(
        Uint8Array.from(atob(SOFTMAX_KERNELS_WASM), (c) => c.charCodeAt(0)),
      );
    } catch {
      return null; // no wasm SIMD here: the scalar loop runs
    }
  }
  if (module === null) return null;
  rows ??= new SoftmaxRows(module);
  return rows;
}

/** Turn the SIMD rows on or off in this thread (tests compare both paths). */
export function setSoftmaxSimd(on: boolean): void {
  enabled = on;
}
