/**
 * Matrix products on the CUDA backend through cuBLASLt (ffi/cublaslt.ts): the row-major
 * layer products of matmulForward/matmulBackward (bias gradients as a GEMM against a vector
 * of ones), the strided batch of matmulBatched, and the cast/alignment fallbacks. CPU twin:
 * src/backend/cpu/gemm.ts (OpenBLAS or TypeScript).
 */
import { CublasError, type GemmShape, type GemmType } from "../../../ffi/cublaslt.ts";
import type { DeviceBuffer, DType, OpArgs } from "../ops.ts";
import { CudaBuffer, ptrDt } from "./buffer.ts";
import { float, operand } from "./checks.ts";
import type { CudaContext } from "./context.ts";
import { THREADS } from "./kernels.ts";
import { copy, fill, view } from "./memory.ts";
import { gemmName } from "./profile.ts";

/**
 * One GEMM on row-major buffers expressed column-major (see matmulForward). Operands of
 * mixed dtypes are cast to bf16 scratch first: cuBLASLt takes A and B of one type.
 */
export function gemmRun(
  ctx: CudaContext,
  shape: Omit<GemmShape, "abType" | "cType">,
  A: CudaBuffer,
  B: CudaBuffer,
  D: CudaBuffer,
  beta: number,
  opts: { exact?: boolean; role?: string } = {},
): void {
  const allF32 = A.dtype === "f32" && B.dtype === "f32" && D.dtype === "f32";
  const abType: GemmType = allF32 ? "f32" : "bf16";
  const temps: CudaBuffer[] = [];
  const asAb = (x: CudaBuffer): CudaBuffer => {
    if (x.dtype === abType) return x;
    const t = ctx.scratch(x.length, abType);
    ctx.kernels.run1d(
      "cast_copy",
      x.length,
      [...ptrDt(t, x), x.length],
      `cast_copy (gemm operand ${x.dtype}->${abType})`,
    );
    temps.push(t);
    return t;
  };
  const a = asAb(A), b = asAb(B);
  const cType: GemmType = D.dtype === "bf16" ? "bf16" : "f32";
  // exact: fp32 products even under TF32 (reductions that are not layer matmuls)
  const full = { ...shape, abType, cType, tf32: ctx.tf32 && opts.exact !== true };
  try {
    gemmTimed(ctx, full, a.ptr, b.ptr, D.ptr, beta, opts.role);
  } catch (e) {
    // No algorithm for these (view) addresses: run on 256-byte aligned copies instead.
    const misaligned = (x: CudaBuffer) => x.ptr % 16n !== 0n;
    const noAlgo = e instanceof CublasError &&
      e.call.startsWith("cublasLtMatmulAlgoGetHeuristic");
    if (!noAlgo || ![a, b, D].some(misaligned)) throw e;
    const aligned = (x: CudaBuffer, fill: boolean): CudaBuffer => {
      if (!misaligned(x)) return x;
      const t = ctx.scratch(x.length, x.dtype);
      if (fill) copy(ctx, t, x);
      temps.push(t);
      return t;
    };
    const a2 = aligned(a, true), b2 = aligned(b, true), d2 = aligned(D, beta !== 0);
    gemmTimed(ctx, full, a2.ptr, b2.ptr, d2.ptr, beta, opts.role);
    if (d2 !== D) copy(ctx, D, d2);
  }
  for (const t of temps) ctx.dropScratch(t);
}

/** One cuBLASLt matmul, timed under its shape while profiling. */
function gemmTimed(
  ctx: CudaContext,
  full: GemmShape,
  A: bigint,
  B: bigint,
  D: bigint,
  beta: number,
  role?: string,
): void {
  const p = ctx.profiler;
  if (!p.active) return ctx.gemm.run(full, A, B, D, 1, beta);
  const t = p.before();
  ctx.gemm.run(full, A, B, D, 1, beta);
  const flops = 2 * full.m * full.n * full.k * (full.batch ?? 1);
  p.after(t, gemmName(full, full.abType, full.cType, role), "gemm", flops);
}

export function matmulForward(ctx: CudaContext, ...a: OpArgs<"matmulForward">): void {
  const [out, inp, weight, bias, M, K, N, accumulate = false] = a;
  const o = operand(out, M * N, "matmul out"); // (M, N)
  const x = operand(inp, M * K, "matmul inp"); // (M, K)
  const w = operand(weight, N * K, "matmul weight"); // (N, K)
  for (const b of [o, x, w]) float(b, "matmul");
  if (M === 0 || N === 0) return;
  if (K === 0) {
    if (!accumulate) fill(ctx, view(ctx, o, 0, M * N), 0);
  } else {
    // Column-major: out^T(N, M) = W(K, N)^T . inp^T(K, M).
    gemmRun(
      ctx,
      { transA: true, transB: false, m: N, n: M, k: K, lda: K, ldb: K, ldc: N },
      w,
      x,
      o,
      accumulate ? 1 : 0,
    );
  }
  if (bias !== null) {
    const bb = operand(bias, N, "matmul bias"); // (N)
    ctx.kernels.run1d("add_bias", M * N, [...ptrDt(o, bb), M, N]);
  }
}

/**
 * out(batch, M, N) = inp(batch, M, K) @ weight(batch, N, K)^T as one strided-batched
 * cuBLASLt call (BATCH_COUNT / STRIDED_BATCH_OFFSET layouts). Not part of ops.ts.
 */
export function matmulBatched(
  ctx: CudaContext,
  out: DeviceBuffer,
  inp: DeviceBuffer,
  weight: DeviceBuffer,
  batch: number,
  M: number,
  K: number,
  N: number,
): void {
  const o = operand(out, batch * M * N, "matmulBatched out"); // (batch, M, N)
  const x = operand(inp, batch * M * K, "matmulBatched inp"); // (batch, M, K)
  const w = operand(weight, batch * N * K, "matmulBatched weight"); // (batch, N, K)
  if (batch === 0 || M === 0 || N === 0 || K === 0) return;
  gemmRun(
    ctx,
    {
      transA: true,
      transB: false,
      m: N,
      n: M,
      k: K,
      lda: K,
      ldb: K,
      ldc: N,
      batch,
      strideA: N * K,
      strideB: M * K,
      strideC: M * N,
    },
    w,
    x,
    o,
    0,
  );
}

export function matmulBackward(ctx: CudaContext, ...a: OpArgs<"matmulBackward">): void {
  const [dinp, dweight, dbias, dout, inp, weight, M, K, N] = a;
  const dy = operand(dout, M * N, "matmul dout"); // (M, N)
  if (dinp !== null && M > 0 && K > 0 && N > 0) {
    const dx = operand(dinp, M * K, "matmul dinp"); // (M, K)
    const w = operand(weight, N * K, "matmul weight"); // (N, K)
    // Column-major: dinp^T(K, M) += W^T(K, N) . dout^T(N, M).
    const shape = { transA: false, transB: false, m: K, n: M, k: N, lda: K, ldb: N, ldc: K };
    gemmRun(ctx, shape, w, dy, dx, 1);
  }
  if (dweight !== null && M > 0 && K > 0 && N > 0) {
    const dw = operand(dweight, N * K, "matmul dweight"); // (N, K)
    const x = operand(inp, M * K, "matmul inp"); // (M, K)
    // Column-major: dweight^T(K, N) += inp^T(K, M) . dout(M, N).
    const shape = { transA: false, transB: true, m: K, n: N, k: M, lda: K, ldb: N, ldc: K };
    gemmRun(ctx, shape, x, dy, dw, 1);
  }
  if (dbias !== null && N > 0) {
    const db = operand(dbias, N, "matmul dbias"); // (N)
    if (db.dtype === "f32" && M > 0) {
      // Column-major: dbias(N, 1) += dout(N, M) . ones(M, 1), a GEMV that fills the GPU
      // (bias_grad runs one thread per column, each looping over all M rows).
      const ones = onesOf(ctx, M, dy.dtype === "bf16" ? "bf16" : "f32"); // (M)
      const shape = { transA: false, transB: false, m: N, n: 1, k: M, lda: N, ldb: M, ldc: N };
      gemmRun(ctx, shape, dy, ones, db, 1, { exact: true, role: "bias grad" });
    } else {
      const args = [...ptrDt(db, dy), M, N];
      ctx.kernels.run("bias_grad", Math.ceil(N / THREADS), THREADS, 0, args);
    }
  }
}

/** A cached vector of at least n ones of `dtype` (column sums as GEMVs). */
function onesOf(ctx: CudaContext, n: number, dtype: DType): CudaBuffer {
  let b = ctx.ones.get(dtype);
  if (b === undefined || b.length < n) {
    if (b !== undefined) ctx.dropScratch(b);
    b = ctx.scratch(n, dtype); // (n)
    fill(ctx, b, 1);
    ctx.ones.set(dtype, b);
  }
  return b;
}
