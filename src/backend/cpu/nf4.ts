/**
 * NF4 weights on the CPU backend: the dequantization (the CPU twin of kernels/nf4.cu and the
 * definition src/quant/nf4.ts uses) and matrix products against an NF4 W(N, K) that
 * dequantize one tile of rows at a time into scratch and hand it to OpenBLAS, so no more than
 * NF4_TILE elements of a weight exist in fp32 at once.
 */
import type { Gemm } from "./gemm.ts";
import type { Scratch } from "./scratch.ts";
import { roundArrayBf16 } from "./buffer.ts";

/** Elements per absmax block and blocks per scaler group (torchao's sizes). */
export const NF4_BLOCK = 64;
export const NF4_GROUP = 256;
/** Most dequantized elements held at once by the matrix products (4 MiB of fp32). */
export const NF4_TILE = 1 << 20;
/** torchao's 16 NF4 levels (its literals; rounded to the tensor's dtype when used). */
export const NF4_LEVELS: readonly number[] = [
  -1.0,
  -0.6962,
  -0.5251,
  -0.3949,
  -0.2844,
  -0.1848,
  -0.0911,
  0.0,
  0.0796,
  0.1609,
  0.2461,
  0.3379,
  0.4407,
  0.5626,
  0.723,
  1.0,
];
const LEVELS_F32 = Float32Array.from(NF4_LEVELS);
const LEVELS_BF16 = (() => {
  const a = new Float32Array(16);
  roundArrayBf16(a, LEVELS_F32);
  return a;
})();

/** The bytes of an NF4 weight as host arrays (views of its i32 buffers). */
export interface Nf4HostView {
  codes: Uint8Array; // (n/2)
  scalers: Int8Array; // (n/64)
  factors: Float32Array; // (n/16384)
  mean: number;
  dtype: "f32" | "bf16";
}

/**
 * out(count) = elements [start, start + count) of the NF4 tensor dequantized, each step
 * rounded to the dtype: scale = scaler / factor + mean per block, value = level * scale.
 * `start` and `count` need not be block-aligned.
 */
export function dequantizeNf4(
  out: Float32Array,
  w: Nf4HostView,
  start: number,
  count: number,
): void {
  const bf16 = w.dtype === "bf16";
  const levels = bf16 ? LEVELS_BF16 : LEVELS_F32;
  const one = new Float32Array(1); // rounding of a block scale to the dtype
  const end = start + count;
  let i = start;
  while (i < end) {
    const b = Math.floor(i / NF4_BLOCK);
    const stop = Math.min(end, (b + 1) * NF4_BLOCK);
    one[0] = w.scalers[b] / w.factors[Math.floor(b / NF4_GROUP)];
    if (bf16) roundArrayBf16(one, one);
    one[0] = one[0] + w.mean;
    if (bf16) roundArrayBf16(one, one);
    const s = one[0];
    for (; i < stop; i++) {
      const byte = w.codes[i >> 1];
      out[i - start] = levels[(i & 1) === 0 ? byte >> 4 : byte & 15] * s;
    }
  }
  if (bf16) roundArrayBf16(out.subarray(0, count), out.subarray(0, count));
}

/** Rows of W per tile: at least one, at most NF4_TILE elements. */
function tileRows(N: number, K: number): number {
  return Math.max(1, Math.min(N, Math.floor(NF4_TILE / Math.max(1, K))));
}

/** out(M, N) (+)= x(M, K) @ W(N, K)^T + bias(N), W dequantized a tile of rows at a time. */
export function nf4MatmulForwardCpu(
  gemm: Gemm,
  scratch: Scratch,
  slot: number,
  o: Float32Array,
  x: Float32Array,
  w: Nf4HostView,
  bias: Float32Array | null,
  M: number,
  N: number,
  K: number,
  accumulate: boolean,
): void {
  let beta = accumulate ? 1 : 0;
  if (bias !== null) {
    for (let i = 0; i < M; i++) {
      const r = i * N;
      if (beta === 0) { for (let j = 0; j < N; j++) o[r + j] = bias[j]; }
      else for (let j = 0; j < N; j++) o[r + j] += bias[j];
    }
    beta = 1;
  }
  const tr = tileRows(N, K);
  for (let j0 = 0; j0 < N; j0 += tr) {
    const rows = Math.min(tr, N - j0);
    const tile = scratch.get(slot, rows * K); // (rows, K)
    dequantizeNf4(tile, w, j0 * K, rows * K);
    // out[:, j0:j0+rows] (+)= x @ tile^T
    gemm.nt(M, rows, K, x, K, tile, K, o.subarray(j0), N, beta);
  }
}

/** dx(M, K) += dy(M, N) @ W(N, K), W dequantized a tile of rows at a time. */
export function nf4MatmulBackwardCpu(
  gemm: Gemm,
  scratch: Scratch,
  slot: number,
  dx: Float32Array,
  dy: Float32Array,
  w: Nf4HostView,
  M: number,
  N: number,
  K: number,
): void {
  const tr = tileRows(N, K);
  for (let j0 = 0; j0 < N; j0 += tr) {
    const rows = Math.min(tr, N - j0);
    const tile = scratch.get(slot, rows * K); // (rows, K)
    dequantizeNf4(tile, w, j0 * K, rows * K);
    // dx += dy[:, j0:j0+rows] @ tile
    gemm.nn(M, K, rows, dy.subarray(j0), N, tile, K, dx, K, 1);
  }
}
