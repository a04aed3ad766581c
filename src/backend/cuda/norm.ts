/**
 * RMSNorm on the CUDA backend (kernels/layers.cu: rmsnorm_fwd[_vec], rmsnorm_bwd_dx[_vec],
 * rmsnorm_bwd_dw, rmsnorm_dw_partial; the weight gradient's column sums run as a GEMM).
 * CPU twin: rmsnormForward and rmsnormBackward of src/backend/cpu/layers.ts.
 */
import type { OpArgs } from "../ops.ts";
import { CudaBuffer, ptrDt } from "./buffer.ts";
import { operand } from "./checks.ts";
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

export function rmsnormForward(ctx: CudaContext, ...a: OpArgs<"rmsnormForward">): void {
  const [out, rstd, inp, weight, N, C, eps] = a;
  const o = operand(out, N * C, "rmsnorm out"); // (N, C)
  const r = operand(rstd, N, "rmsnorm rstd"); // (N)
  const x = operand(inp, N * C, "rmsnorm inp"); // (N, C)
  const w = operand(weight, C, "rmsnorm weight"); // (C)
  if (N === 0) return;
  // one profile row whichever kernel ran
  rowKernel(ctx, "rmsnorm_fwd", N, C, [o, x, w], [...ptrDt(o, r, x, w), N, C, eps]);
}

export function rmsnormBackward(ctx: CudaContext, ...a: OpArgs<"rmsnormBackward">): void {
  const [dinp, dweight, dout, inp, weight, rstd, N, C] = a;
  const dx = operand(dinp, N * C, "rmsnorm dinp"); // (N, C)
  const dy = operand(dout, N * C, "rmsnorm dout"); // (N, C)
  const x = operand(inp, N * C, "rmsnorm inp"); // (N, C)
  const w = operand(weight, C, "rmsnorm weight"); // (C)
  const r = operand(rstd, N, "rmsnorm rstd"); // (N)
  if (N === 0) return;
  rowKernel(ctx, "rmsnorm_bwd_dx", N, C, [dx, dy, x, w], [...ptrDt(dx, dy, x, w, r), N, C]);
  if (dweight !== null) {
    const dw = operand(dweight, C, "rmsnorm dweight"); // (C)
    if (dw.dtype === "f32" && r.dtype === "f32") {
      rmsnormWeightGrad(ctx, dw, dy, x, r, N, C);
      return;
    }
    const args = [...ptrDt(dw, dy, x, r), N, C];
    ctx.kernels.run("rmsnorm_bwd_dw", Math.ceil(C / THREADS), THREADS, 0, args);
  }
}

/**
 * A row kernel over N rows of C: `<name>_vec` (a block per row) where rowVecThreads allows
 * it for the `aligned` buffers, else `name` (a warp per row, 8 rows a block); one profile
 * row named `name` either way.
 */
function rowKernel(
  ctx: CudaContext,
  name: "rmsnorm_fwd" | "rmsnorm_bwd_dx",
  N: number,
  C: number,
  aligned: CudaBuffer[],
  args: (number | bigint)[],
): void {
  const rows = 8; // warps per block
  const vec = rowVecThreads(C, ...aligned);
  if (vec) ctx.kernels.run(`${name}_vec`, N, vec, 0, args, name);
  else ctx.kernels.run(name, Math.ceil(N / rows), 32 * rows, 0, args, name);
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
    const partArgs = [part.ptr, ...ptrDt(dy, x, r), N, C, chunk];
    const grid: [number, number, number] = [Math.ceil(C / 256), R, 1];
    ctx.kernels.run("rmsnorm_dw_partial", grid, 256, 0, partArgs, "rmsnorm dweight partial");
    const sumArgs = [...ptrDt(dw, part), R, C];
    const label = "bias_grad (rmsnorm dweight)";
    ctx.kernels.run("bias_grad", Math.ceil(C / THREADS), THREADS, 0, sumArgs, label);
    ctx.dropScratch(part);
    return;
  }
  const p = ctx.scratch(N * C, "f32"); // (N, C)
  ctx.runVec(
    "ew_mul",
    N * C,
    [...ptrDt(p, dy, x), N * C],
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
