/**
 * RMSNorm on the CUDA backend (kernels/layers.cu: rmsnorm_fwd[_vec], rmsnorm_bwd_dx[_vec],
 * rmsnorm_bwd_dw, rmsnorm_dw_partial; the weight gradient's column sums run as a GEMM).
 * CPU twin: rmsnormForward and rmsnormBackward of src/backend/cpu/layers.ts.
 */
import type { DeviceBuffer } from "../ops.ts";
import { cudaBuf, CudaBuffer, dtCode } from "./buffer.ts";
import { need } from "./checks.ts";
import type { CudaContext } from "./context.ts";
import { THREADS } from "./kernels.ts";
import { gemmRun } from "./matmul.ts";

/**
 * Threads per block of the block-per-row kernels (rmsnorm_*_vec), or 0 where they do not
 * apply (C % 8 != 0 or a buffer not 16-byte aligned): about two 8-column vectors of the
 * row per thread, 32 to 256 threads.
 */
function rowVecThreads(C: number, ...bufs: CudaBuffer[]): number {
  if (C % 8 !== 0 || bufs.some((b) => (b.ptr & 15n) !== 0n)) return 0;
  return Math.min(256, Math.max(32, Math.ceil(C / 16 / 32) * 32));
}

export function rmsnormForward(
  ctx: CudaContext,
  out: DeviceBuffer,
  rstd: DeviceBuffer,
  inp: DeviceBuffer,
  weight: DeviceBuffer,
  N: number,
  C: number,
  eps: number,
): void {
  const o = cudaBuf(out, "rmsnorm out"), r = cudaBuf(rstd, "rmsnorm rstd");
  const x = cudaBuf(inp, "rmsnorm inp"), w = cudaBuf(weight, "rmsnorm weight");
  need(o, N * C, "rmsnorm out"); // (N, C)
  need(r, N, "rmsnorm rstd"); // (N)
  need(x, N * C, "rmsnorm inp"); // (N, C)
  need(w, C, "rmsnorm weight"); // (C)
  if (N === 0) return;
  const rows = 8; // warps per block
  const vec = rowVecThreads(C, o, x, w);
  ctx.kernels.run(
    vec ? "rmsnorm_fwd_vec" : "rmsnorm_fwd",
    vec ? N : Math.ceil(N / rows),
    vec ? vec : 32 * rows,
    0,
    [
      o.ptr,
      dtCode(o.dtype),
      r.ptr,
      dtCode(r.dtype),
      x.ptr,
      dtCode(x.dtype),
      w.ptr,
      dtCode(w.dtype),
      N,
      C,
      eps,
    ],
    "rmsnorm_fwd", // one profile row whichever kernel ran
  );
}

export function rmsnormBackward(
  ctx: CudaContext,
  dinp: DeviceBuffer,
  dweight: DeviceBuffer | null,
  dout: DeviceBuffer,
  inp: DeviceBuffer,
  weight: DeviceBuffer,
  rstd: DeviceBuffer,
  N: number,
  C: number,
): void {
  const dx = cudaBuf(dinp, "rmsnorm dinp"), dy = cudaBuf(dout, "rmsnorm dout");
  const x = cudaBuf(inp, "rmsnorm inp"), w = cudaBuf(weight, "rmsnorm weight");
  const r = cudaBuf(rstd, "rmsnorm rstd");
  need(dx, N * C, "rmsnorm dinp"); // (N, C)
  need(dy, N * C, "rmsnorm dout"); // (N, C)
  need(x, N * C, "rmsnorm inp"); // (N, C)
  need(w, C, "rmsnorm weight"); // (C)
  need(r, N, "rmsnorm rstd"); // (N)
  if (N === 0) return;
  const rows = 8;
  const vec = rowVecThreads(C, dx, dy, x, w);
  ctx.kernels.run(
    vec ? "rmsnorm_bwd_dx_vec" : "rmsnorm_bwd_dx",
    vec ? N : Math.ceil(N / rows),
    vec ? vec : 32 * rows,
    0,
    [
      dx.ptr,
      dtCode(dx.dtype),
      dy.ptr,
      dtCode(dy.dtype),
      x.ptr,
      dtCode(x.dtype),
      w.ptr,
      dtCode(w.dtype),
      r.ptr,
      dtCode(r.dtype),
      N,
      C,
    ],
    "rmsnorm_bwd_dx",
  );
  if (dweight !== null) {
    const dw = cudaBuf(dweight, "rmsnorm dweight");
    need(dw, C, "rmsnorm dweight"); // (C)
    if (dw.dtype === "f32" && r.dtype === "f32") {
      rmsnormWeightGrad(ctx, dw, dy, x, r, N, C);
      return;
    }
    ctx.kernels.run("rmsnorm_bwd_dw", Math.ceil(C / THREADS), THREADS, 0, [
      dw.ptr,
      dtCode(dw.dtype),
      dy.ptr,
      dtCode(dy.dtype),
      x.ptr,
      dtCode(x.dtype),
      r.ptr,
      dtCode(r.dtype),
      N,
      C,
    ]);
  }
}

/**
 * dweight(C) += sum over rows of dout * inp * rstd in two passes that fill the GPU.
 * With C % 8 == 0 and 16-byte aligned dout/inp: rmsnorm_dw_partial reads each row once
 * into column sums of row chunks (R, C), and bias_grad adds those R rows in order.
 * Otherwise: p(N, C) = dout * inp (fp32 scratch; a product of two bf16 values is exact in fp32),
 * then dweight += p^T . rstd as an exact-fp32 cuBLASLt GEMV. (rmsnorm_bwd_dw runs one
 * thread per column: C / 256 blocks, 8 of an H200's 132 SMs at C = 2048, each thread
 * looping over all N rows.) The sum order differs from the CPU twin's by fp32 rounding.
 */
function rmsnormWeightGrad(
  ctx: CudaContext,
  dw: CudaBuffer,
  dy: CudaBuffer,
  x: CudaBuffer,
  r: CudaBuffer,
  N: number,
  C: number,
): void {
  if (C > 0 && C % 8 === 0 && (dy.ptr & 15n) === 0n && (x.ptr & 15n) === 0n) {
    // One read of dout and inp: column sums of row chunks (chunk a function of N only,
    // so the result is deterministic), then bias_grad adds the R partial rows in order.
    const chunk = Math.max(8, Math.ceil(N / 64));
    const R = Math.ceil(N / chunk);
    const part = ctx.scratch(R * C, "f32"); // (R, C)
    ctx.kernels.run("rmsnorm_dw_partial", [Math.ceil(C / 256), R, 1], 256, 0, [
      part.ptr,
      dy.ptr,
      dtCode(dy.dtype),
      x.ptr,
      dtCode(x.dtype),
      r.ptr,
      dtCode(r.dtype),
      N,
      C,
      chunk,
    ], "rmsnorm dweight partial");
    ctx.kernels.run("bias_grad", Math.ceil(C / THREADS), THREADS, 0, [
      dw.ptr,
      dtCode(dw.dtype),
      part.ptr,
      dtCode("f32"),
      R,
      C,
    ], "bias_grad (rmsnorm dweight)");
    ctx.dropScratch(part);
    return;
  }
  const p = ctx.scratch(N * C, "f32"); // (N, C)
  ctx.runVec(
    "ew_mul",
    N * C,
    [p.ptr, dtCode("f32"), dy.ptr, dtCode(dy.dtype), x.ptr, dtCode(x.dtype), N * C],
    "ew_mul (rmsnorm dweight)",
  );
  // Column-major: dweight(C, 1) += p(C, N) . rstd(N, 1).
  gemmRun(
    ctx,
    { transA: false, transB: false, m: C, n: 1, k: N, lda: C, ldb: N, ldc: C },
    p,
    r,
    dw,
    1,
    { exact: true, role: "rmsnorm dweight" },
  );
  ctx.dropScratch(p);
}
