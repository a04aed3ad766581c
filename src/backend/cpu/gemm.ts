/**
 * Single-precision matrix products for the CPU backend: OpenBLAS when available, else
 * cache-blocked TypeScript kernels. All matrices are row-major with explicit leading
 * dimensions; beta is 0 (overwrite) or 1 (accumulate).
 */
import type { OpenBlas } from "../../../ffi/openblas.ts";
import type { Scratch } from "./scratch.ts";
import { gemvInWasm, smallGemv } from "./small_gemv.ts";

/** Scratch slots used by the TypeScript path to pack transposed operands. */
const SLOT_PACK_A = 0;
const SLOT_PACK_B = 1;

/**
 * Products with fewer multiply-adds than this run on one OpenBLAS thread (attention blocks,
 * LoRA's rank-r products): a second thread's wake-up and join costs more than it saves.
 * Measured on the 2-core bench host: a 64x256x48 product took 0.2 ms on one thread and
 * 3-4 ms on two while the host was busy.
 */
const SMALL_GEMM = 1 << 22;
/**
 * The same for matrix-vector products, which are memory-bound: a weight read from memory
 * streams at about 10 GB/s on one core of the bench host and 22 GB/s on two, so every
 * decode weight of 64K elements and up (256 KB) gains from the second thread. Measured on the
 * 15M shape, batch 1, quiet 2-core Zen 3 host: decode step 6.6 -> 4.3-4.9 ms (the layers'
 * products 3.1 -> 1.7 ms per token) against a threshold of 2^20; 2^12 was slower again (5.1-5.4
 * ms: the wake-up outweighs the smaller products). OpenBLAS splits a GEMV by output rows: the
 * 15M shapes give the same bits on one thread or two, odd sizes (300 x 301) differ in the last
 * place in a few rows, as products above the old threshold always did.
 */
const SMALL_GEMV = 1 << 16;

/**
 * Products C(M, N) = A(M, K) @ B(N, K)^T of 2..SPLIT_MAX_M rows against a weight of at least
 * SPLIT_MIN_WEIGHT elements (256 KB: decoding a few sequences, the 15M shape's layers and
 * classifier and up) run as two column halves, each on one OpenBLAS thread. For so few rows
 * OpenBLAS packs the whole weight and its second thread buys little or nothing: M = 8,
 * N = 32000, K = 288 (the 15M classifier at batch 8) took 4.5 ms on one thread, 4.0 ms on two,
 * and 2.2 ms for half the columns on one (2-core Zen 5 host); at M = 2 and 4 two threads took
 * 2.5 and 3.8 ms, a half 1.8 and 1.6 ms; from M = 16 OpenBLAS's threads scale. The halves run
 * on the CPU pool's two threads when the backend sets `split` (its spinning hand-off costs a
 * few microseconds), else one after the other. A 15M decode step took 6.3-6.4 ms at batch 8
 * and 5.3-5.4 at batch 2 with only the classifier split (a weight of 2^21 and up), 5.7-6.0 and
 * 4.0-4.5 with the layers too (2^16); 2^14 also splits the 260K classifier, which made its
 * batch-8 step slower (452-485 -> 491-516 us). The halves are a property of the shape, not of
 * where they run: OpenBLAS's sums depend on the column block (a 16000-column half differs from
 * the whole in the last bit of some outputs), so the bits are the same with the pool or
 * without it, in the fused decoder and op by op.
 */
const SPLIT_MAX_M = 8;
const SPLIT_MIN_WEIGHT = 1 << 16;

/** Block sizes of the TypeScript kernel: a KC x NC panel of B stays in L2. */
const KC = 512;
const NC = 64;

/**
 * The arguments of every product: C(M, N) = op(A) @ op(B) + beta * C over K (op a
 * transpose or not), row-major with leading dimensions lda, ldb, ldc.
 */
export type GemmArgs = [
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
];

/**
 * C(M, N) = A(M, K) @ B(N, K)^T + beta * C in TypeScript.
 * Register-blocked 2x4 dot products (V8 keeps 8 accumulators and 6 operands in registers;
 * 4x4 spills and runs several times slower) over a cache-blocked (KC, NC) panel of B.
 */
export function gemmNTts(...[M, N, K, A, lda, B, ldb, C, ldc, beta]: GemmArgs): void {
  if (beta === 0) {
    for (let i = 0; i < M; i++) C.fill(0, i * ldc, i * ldc + N);
  }
  for (let k0 = 0; k0 < K; k0 += KC) {
    const kl = Math.min(K - k0, KC);
    for (let j0 = 0; j0 < N; j0 += NC) {
      const j1 = Math.min(N, j0 + NC);
      let i = 0;
      for (; i + 2 <= M; i += 2) {
        kernel2(A, i * lda + k0, lda, B, ldb, k0, C, i * ldc, ldc, j0, j1, kl);
      }
      if (i < M) kernel1(A, i * lda + k0, B, ldb, k0, C, i * ldc, j0, j1, kl);
    }
  }
}

/** Rows a0, a0 + lda of A against rows j0..j1 of B over kl elements, into C rows c0, c0 + ldc. */
function kernel2(
  A: Float32Array,
  a0: number,
  lda: number,
  B: Float32Array,
  ldb: number,
  k0: number,
  C: Float32Array,
  c0: number,
  ldc: number,
  j0: number,
  j1: number,
  kl: number,
): void {
  const a1 = a0 + lda;
  let j = j0;
  for (; j + 4 <= j1; j += 4) {
    const b0 = j * ldb + k0, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
    let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
    for (let k = 0; k < kl; k++) {
      const x0 = A[a0 + k], x1 = A[a1 + k];
      const y0 = B[b0 + k], y1 = B[b1 + k], y2 = B[b2 + k], y3 = B[b3 + k];
      c00 += x0 * y0;
      c01 += x0 * y1;
      c02 += x0 * y2;
      c03 += x0 * y3;
      c10 += x1 * y0;
      c11 += x1 * y1;
      c12 += x1 * y2;
      c13 += x1 * y3;
    }
    const c = c0 + j;
    C[c] += c00;
    C[c + 1] += c01;
    C[c + 2] += c02;
    C[c + 3] += c03;
    C[c + ldc] += c10;
    C[c + ldc + 1] += c11;
    C[c + ldc + 2] += c12;
    C[c + ldc + 3] += c13;
  }
  for (; j < j1; j++) {
    const b0 = j * ldb + k0;
    let s0 = 0, s1 = 0;
    for (let k = 0; k < kl; k++) {
      const y = B[b0 + k];
      s0 += A[a0 + k] * y;
      s1 += A[a1 + k] * y;
    }
    C[c0 + j] += s0;
    C[c0 + ldc + j] += s1;
  }
}

/** Row a0 of A against rows j0..j1 of B over kl elements, into C row c0. */
function kernel1(
  A: Float32Array,
  a0: number,
  B: Float32Array,
  ldb: number,
  k0: number,
  C: Float32Array,
  c0: number,
  j0: number,
  j1: number,
  kl: number,
): void {
  let j = j0;
  for (; j + 4 <= j1; j += 4) {
    const b0 = j * ldb + k0, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let k = 0; k < kl; k++) {
      const x = A[a0 + k];
      s0 += x * B[b0 + k];
      s1 += x * B[b1 + k];
      s2 += x * B[b2 + k];
      s3 += x * B[b3 + k];
    }
    const c = c0 + j;
    C[c] += s0;
    C[c + 1] += s1;
    C[c + 2] += s2;
    C[c + 3] += s3;
  }
  for (; j < j1; j++) {
    const b0 = j * ldb + k0;
    let s = 0;
    for (let k = 0; k < kl; k++) s += A[a0 + k] * B[b0 + k];
    C[c0 + j] += s;
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

/**
 * A product's arguments with its matrices as addresses: the pool's worker is handed a split
 * product's half this way, because its operands may lie in memory that cannot be shared
 * with a worker (the fused decoder's wasm arena). The caller keeps that memory alive and
 * unmoved until the worker is done (the hand-off blocks; an arena never grows), and hands over
 * no array of a few elements: V8 may keep those on its heap, where a collection moves them
 * (the backend's `split` checks).
 */
export type GemmAddresses = [
  M: number,
  N: number,
  K: number,
  A: bigint,
  lda: number,
  B: bigint,
  ldb: number,
  C: bigint,
  ldc: number,
  beta: number,
];

/** The address of a's first element. */
function addressOf(a: Float32Array): bigint {
  return Deno.UnsafePointer.value(Deno.UnsafePointer.of(a));
}

/** A view of n floats at `at` (an address made by gemmAddresses in this process). */
function viewAt(at: bigint, n: number): Float32Array {
  const p = Deno.UnsafePointer.create(at);
  if (p === null) throw new Error("gemm: null operand address");
  return new Float32Array(Deno.UnsafePointerView.getArrayBuffer(p, n * 4));
}

export function gemmAddresses(...[M, N, K, A, lda, B, ldb, C, ldc, beta]: GemmArgs): GemmAddresses {
  return [M, N, K, addressOf(A), lda, addressOf(B), ldb, addressOf(C), ldc, beta];
}

/** The arguments again, as views of the memory at the addresses (each as long as it is read). */
export function gemmAtAddresses(
  ...[M, N, K, A, lda, B, ldb, C, ldc, beta]: GemmAddresses
): GemmArgs {
  const a = viewAt(A, (M - 1) * lda + K), b = viewAt(B, (N - 1) * ldb + K);
  return [M, N, K, a, lda, b, ldb, viewAt(C, (M - 1) * ldc + N), ldc, beta];
}

/** Matrix products dispatched to OpenBLAS or the TypeScript kernels. */
export class Gemm {
  /** Most OpenBLAS threads a product may use (1 while another thread runs products too). */
  maxThreads = Infinity;
  /**
   * Runs `near` here while another thread runs `far` (the second column half of a split
   * product, see SPLIT_MAX_M) with `ntOneThread`; returns true when `far` was done there,
   * false when the caller must run it. `near` runs exactly once either way. Set by the
   * backend when it has the CPU pool; null: both halves run here.
   */
  split: ((near: () => void, far: GemmArgs) => boolean) | null = null;

  constructor(
    /** OpenBLAS, or null for the TypeScript path. */
    readonly blas: OpenBlas | null,
    private readonly scratch: Scratch,
  ) {}

  /** One OpenBLAS thread for small products, all of them otherwise. */
  #threads(M: number, N: number, K: number): void {
    const blas = this.blas!;
    blas.setThreads(M * N * K < SMALL_GEMM ? 1 : Math.min(this.maxThreads, blas.maxThreads));
  }

  /** A product on OpenBLAS with transposes ta, tb of A and B. */
  #sgemm(ta: boolean, tb: boolean, ...[M, N, K, A, lda, B, ldb, C, ldc, beta]: GemmArgs): void {
    this.#threads(M, N, K);
    this.blas!.sgemm(ta, tb, M, N, K, 1, A, lda, B, ldb, beta, C, ldc);
  }

  /**
   * A one-row product on OpenBLAS: y = op(B(rows, cols)) @ x, op a transpose with `trans`.
   * y is zeroed here when beta = 0: some OpenBLAS versions scale y by beta = 0 with a
   * multiply, which would keep a NaN left in a reused buffer.
   */
  #gemv(
    trans: boolean,
    rows: number,
    cols: number,
    B: Float32Array,
    ldb: number,
    x: Float32Array,
    y: Float32Array,
    beta: number,
  ): void {
    const blas = this.blas!;
    if (beta === 0) y.fill(0, 0, trans ? cols : rows);
    blas.setThreads(rows * cols < SMALL_GEMV ? 1 : Math.min(this.maxThreads, blas.maxThreads));
    blas.sgemv(trans, rows, cols, 1, B, ldb, x, 1, y);
  }

  /** C(M, N) = A(M, K) @ B(N, K)^T + beta * C. */
  nt(...a: GemmArgs): void {
    const [M, N, K, A, , B, ldb, C, , beta] = a;
    if (M === 0 || N === 0) return;
    if (M === 1 && gemvInWasm(N, K, ldb !== K)) smallGemv()!.rows(N, K, A, B, ldb, C, beta);
    else if (this.blas === null) gemmNTts(...a);
    // Decode-sized product C(N) = B @ a.
    else if (M === 1) this.#gemv(false, N, K, B, ldb, A, C, beta);
    else if (M <= SPLIT_MAX_M && N * K >= SPLIT_MIN_WEIGHT && N >= 32) this.#ntHalves(...a);
    else this.#sgemm(false, true, ...a);
  }

  /** `nt` as two column halves (SPLIT_MAX_M), the second on the pool when there is one. */
  #ntHalves(...[M, N, K, A, lda, B, ldb, C, ldc, beta]: GemmArgs): void {
    const mid = (N >> 1) & ~15;
    const far: GemmArgs = [
      M,
      N - mid,
      K,
      A,
      lda,
      B.subarray(mid * ldb),
      ldb,
      C.subarray(mid),
      ldc,
      beta,
    ];
    const near = () => this.ntOneThread(M, mid, K, A, lda, B, ldb, C, ldc, beta);
    let farDone = false;
    if (this.split !== null && this.maxThreads > 1) farDone = this.split(near, far);
    else near();
    if (!farDone) this.ntOneThread(...far);
  }

  /** C(M, N) = A(M, K) @ B(N, K)^T + beta * C on one OpenBLAS thread, never split. */
  ntOneThread(...[M, N, K, A, lda, B, ldb, C, ldc, beta]: GemmArgs): void {
    const blas = this.blas;
    if (blas === null) throw new Error("Gemm.ntOneThread needs OpenBLAS");
    blas.setThreads(1);
    blas.sgemm(false, true, M, N, K, 1, A, lda, B, ldb, beta, C, ldc);
  }

  /** C(M, N) = A(M, K) @ B(K, N) + beta * C. */
  nn(...a: GemmArgs): void {
    const [M, N, K, A, lda, B, ldb, C, ldc, beta] = a;
    if (M === 0 || N === 0) return;
    if (M === 1 && gemvInWasm(N, K, ldb !== N)) {
      smallGemv()!.cols(N, K, A, B, ldb, C, beta);
      return;
    }
    if (this.blas) {
      // C(N) = B(K, N)^T @ a(K) for a single row.
      if (M === 1) this.#gemv(true, K, N, B, ldb, A, C, beta);
      else this.#sgemm(false, false, ...a);
      return;
    }
    const bt = this.scratch.get(SLOT_PACK_B, N * K); // (N, K)
    transpose(bt, B, K, N, ldb);
    gemmNTts(M, N, K, A, lda, bt, K, C, ldc, beta);
  }

  /** C(M, N) = A(K, M)^T @ B(K, N) + beta * C. */
  tn(...a: GemmArgs): void {
    const [M, N, K, A, lda, B, ldb, C, ldc, beta] = a;
    if (M === 0 || N === 0) return;
    if (this.blas) {
      this.#sgemm(true, false, ...a);
      return;
    }
    const at = this.scratch.get(SLOT_PACK_A, M * K); // (M, K)
    const bt = this.scratch.get(SLOT_PACK_B, N * K); // (N, K)
    transpose(at, A, K, M, lda);
    transpose(bt, B, K, N, ldb);
    gemmNTts(M, N, K, at, K, bt, K, C, ldc, beta);
  }
}
