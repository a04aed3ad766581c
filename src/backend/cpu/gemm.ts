/**
 * Single-precision matrix products for the CPU backend: OpenBLAS when available, else
 * cache-blocked TypeScript kernels. All matrices are row-major with explicit leading
 * dimensions; beta is 0 (overwrite) or 1 (accumulate).
 */
import type { OpenBlas } from "../../../ffi/openblas.ts";
import type { Scratch } from "./scratch.ts";

/** Scratch slots used by the TypeScript path to pack transposed operands. */
const SLOT_PACK_A = 0;
const SLOT_PACK_B = 1;

/** Block sizes of the TypeScript kernel: a KC x NC panel of B stays in L2. */
const KC = 256;
const NC = 64;

/**
 * C(M, N) = A(M, K) @ B(N, K)^T + beta * C in TypeScript.
 * Register-blocked 4x4 dot products over a cache-blocked (KC, NC) panel.
 */
export function gemmNTts(
  M: number,
  N: number,
  K: number,
  A: Float32Array,
  lda: number,
  B: Float32Array,
  ldb: number,
  C: Float32Array,
  ldc: number,
  beta: number,
): void {
  if (beta === 0) {
    for (let i = 0; i < M; i++) C.fill(0, i * ldc, i * ldc + N);
  }
  for (let k0 = 0; k0 < K; k0 += KC) {
    const kl = Math.min(K - k0, KC);
    for (let j0 = 0; j0 < N; j0 += NC) {
      const j1 = Math.min(N, j0 + NC);
      let i = 0;
      for (; i + 4 <= M; i += 4) {
        const a0 = i * lda + k0, a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda;
        let j = j0;
        for (; j + 4 <= j1; j += 4) {
          const b0 = j * ldb + k0, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
          let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
          let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
          let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
          let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
          for (let k = 0; k < kl; k++) {
            const x0 = A[a0 + k], x1 = A[a1 + k], x2 = A[a2 + k], x3 = A[a3 + k];
            const y0 = B[b0 + k], y1 = B[b1 + k], y2 = B[b2 + k], y3 = B[b3 + k];
            c00 += x0 * y0;
            c01 += x0 * y1;
            c02 += x0 * y2;
            c03 += x0 * y3;
            c10 += x1 * y0;
            c11 += x1 * y1;
            c12 += x1 * y2;
            c13 += x1 * y3;
            c20 += x2 * y0;
            c21 += x2 * y1;
            c22 += x2 * y2;
            c23 += x2 * y3;
            c30 += x3 * y0;
            c31 += x3 * y1;
            c32 += x3 * y2;
            c33 += x3 * y3;
          }
          let c = i * ldc + j;
          C[c] += c00;
          C[c + 1] += c01;
          C[c + 2] += c02;
          C[c + 3] += c03;
          c += ldc;
          C[c] += c10;
          C[c + 1] += c11;
          C[c + 2] += c12;
          C[c + 3] += c13;
          c += ldc;
          C[c] += c20;
          C[c + 1] += c21;
          C[c + 2] += c22;
          C[c + 3] += c23;
          c += ldc;
          C[c] += c30;
          C[c + 1] += c31;
          C[c + 2] += c32;
          C[c + 3] += c33;
        }
        for (; j < j1; j++) {
          const b0 = j * ldb + k0;
          let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
          for (let k = 0; k < kl; k++) {
            const y = B[b0 + k];
            c0 += A[a0 + k] * y;
            c1 += A[a1 + k] * y;
            c2 += A[a2 + k] * y;
            c3 += A[a3 + k] * y;
          }
          const c = i * ldc + j;
          C[c] += c0;
          C[c + ldc] += c1;
          C[c + 2 * ldc] += c2;
          C[c + 3 * ldc] += c3;
        }
      }
      for (; i < M; i++) {
        const a0 = i * lda + k0;
        let j = j0;
        for (; j + 4 <= j1; j += 4) {
          const b0 = j * ldb + k0, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
          let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
          for (let k = 0; k < kl; k++) {
            const x = A[a0 + k];
            c0 += x * B[b0 + k];
            c1 += x * B[b1 + k];
            c2 += x * B[b2 + k];
            c3 += x * B[b3 + k];
          }
          const c = i * ldc + j;
          C[c] += c0;
          C[c + 1] += c1;
          C[c + 2] += c2;
          C[c + 3] += c3;
        }
        for (; j < j1; j++) {
          const b0 = j * ldb + k0;
          let c0 = 0;
          for (let k = 0; k < kl; k++) c0 += A[a0 + k] * B[b0 + k];
          C[i * ldc + j] += c0;
        }
      }
    }
  }
}

/** dst(cols, rows) = src(rows, cols)^T with src leading dimension lds. */
function transpose(
  dst: Float32Array,
  src: Float32Array,
  rows: number,
  cols: number,
  lds: number,
): void {
  // 8x8 tiles keep both sides cache-friendly.
  for (let r0 = 0; r0 < rows; r0 += 8) {
    const r1 = Math.min(rows, r0 + 8);
    for (let c0 = 0; c0 < cols; c0 += 8) {
      const c1 = Math.min(cols, c0 + 8);
      for (let r = r0; r < r1; r++) {
        const s = r * lds;
        for (let c = c0; c < c1; c++) dst[c * rows + r] = src[s + c];
      }
    }
  }
}

/** Matrix products dispatched to OpenBLAS or the TypeScript kernels. */
export class Gemm {
  constructor(
    /** OpenBLAS, or null for the TypeScript path. */
    readonly blas: OpenBlas | null,
    private readonly scratch: Scratch,
  ) {}

  /** C(M, N) = A(M, K) @ B(N, K)^T + beta * C. */
  nt(
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    C: Float32Array,
    ldc: number,
    beta: number,
  ): void {
    if (M === 0 || N === 0) return;
    if (this.blas) this.blas.sgemm(false, true, M, N, K, 1, A, lda, B, ldb, beta, C, ldc);
    else gemmNTts(M, N, K, A, lda, B, ldb, C, ldc, beta);
  }

  /** C(M, N) = A(M, K) @ B(K, N) + beta * C. */
  nn(
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    C: Float32Array,
    ldc: number,
    beta: number,
  ): void {
    if (M === 0 || N === 0) return;
    if (this.blas) {
      this.blas.sgemm(false, false, M, N, K, 1, A, lda, B, ldb, beta, C, ldc);
      return;
    }
    const bt = this.scratch.get(SLOT_PACK_B, N * K); // (N, K)
    transpose(bt, B, K, N, ldb);
    gemmNTts(M, N, K, A, lda, bt, K, C, ldc, beta);
  }

  /** C(M, N) = A(K, M)^T @ B(K, N) + beta * C. */
  tn(
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    C: Float32Array,
    ldc: number,
    beta: number,
  ): void {
    if (M === 0 || N === 0) return;
    if (this.blas) {
      this.blas.sgemm(true, false, M, N, K, 1, A, lda, B, ldb, beta, C, ldc);
      return;
    }
    const at = this.scratch.get(SLOT_PACK_A, M * K); // (M, K)
    const bt = this.scratch.get(SLOT_PACK_B, N * K); // (N, K)
    transpose(at, A, K, M, lda);
    transpose(bt, B, K, N, ldb);
    gemmNTts(M, N, K, at, K, bt, K, C, ldc, beta);
  }
}
