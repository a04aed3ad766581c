/**
 * Launch geometry of the tensor-core attention kernels (kernels/flash_attention.cu) and
 * when they apply: bf16 q/k/v/out/dout, f32 lse, head size 64 or 128, every buffer
 * 16-byte aligned. Anything else (fp32 runs, other head sizes, odd views) takes the
 * general kernels of kernels/attention.cu, which compute the same function.
 */
import type { CudaBuffer } from "./buffer.ts";
import type { KernelName } from "./kernels.ts";

/** Threads per block of both kernels (4 warps). */
export const FLASH_THREADS = 128;
/** Query rows per forward block; keys per backward block. */
export const FLASH_TILE = 64;

/** Head sizes with a compiled kernel, and the backward's query tile for each. */
const BWD_QUERY_TILE: Readonly<Record<number, number>> = { 64: 64, 128: 32 };

/** Which attention kernels run: TUNE_CUDA_ATTN=simple|tiled|flash (default flash). */
export type AttentionKernels = "simple" | "tiled" | "flash";

/** True when the flash kernels can take these buffers (see the file comment). */
export function flashEligible(
  HS: number,
  lse: CudaBuffer,
  bf16Buffers: readonly CudaBuffer[],
): boolean {
  if (BWD_QUERY_TILE[HS] === undefined || lse.dtype !== "f32") return false;
  return bf16Buffers.every((b) => b.dtype === "bf16" && b.ptr % 16n === 0n);
}

/** Forward: kernel, grid and dynamic shared memory (K and V tiles, bf16; bytes). */
export function flashForwardLaunch(B: number, T: number, NH: number, HS: number): {
  name: KernelName;
  grid: [number, number, number];
  smem: number;
} {
  return {
    name: HS === 64 ? "flash_fwd_64" : "flash_fwd_128",
    grid: [Math.ceil(T / FLASH_TILE), B * NH, 1],
    smem: 4 * FLASH_TILE * (HS + 8) * 2, // K and V, double-buffered
  };
}

/** Backward: kernel, grid and dynamic shared memory (Q, dO, K, dS tiles; lse, dsum; bytes). */
export function flashBackwardLaunch(B: number, T: number, NKV: number, HS: number): {
  name: KernelName;
  grid: [number, number, number];
  smem: number;
} {
  const bq = BWD_QUERY_TILE[HS];
  // Q and dO double-buffered, K, dS; lse and dsum double-buffered.
  const bf16Elems = 4 * bq * (HS + 8) + FLASH_TILE * (HS + 8) + bq * (FLASH_TILE + 8);
  return {
    name: HS === 64 ? "flash_bwd_64" : "flash_bwd_128",
    grid: [Math.ceil(T / FLASH_TILE), B * NKV, 1],
    smem: bf16Elems * 2 + 4 * bq * 4,
  };
}
