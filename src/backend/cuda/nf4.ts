/**
 * NF4 base weights (QLoRA) on the CUDA backend: kernels/nf4.cu (nf4_dequant) dequantizes;
 * its CPU twin is dequantizeNf4 in src/backend/cpu/nf4.ts. The products against an NF4
 * W(N, K) dequantize that one weight into stream-ordered scratch in the activations' dtype
 * and run the cuBLASLt GEMM of matmul.ts: one weight at a time, never a dequantized model.
 */
import type { DeviceBuffer, DType, Nf4Weight, OpArgs } from "../ops.ts";
import { cudaBuf, ptrDt } from "./buffer.ts";
import type { CudaContext } from "./context.ts";
import { matmulBackward, matmulForward } from "./matmul.ts";

/** out(count) = elements [start, start + count) of W dequantized. */
function runDequant(
  ctx: CudaContext,
  out: DeviceBuffer,
  w: Nf4Weight,
  start: number,
  count: number,
): void {
  const o = cudaBuf(out, "nf4 dequantize out");
  if (o.length < count) throw new Error(`nf4 dequantize: out has ${o.length}, needs ${count}`);
  ctx.kernels.run1d("nf4_dequant", count, [
    ...ptrDt(o),
    cudaBuf(w.codes, "nf4 codes").ptr,
    cudaBuf(w.scalers, "nf4 scalers").ptr,
    cudaBuf(w.factors, "nf4 factors").ptr,
    w.mean,
    w.dtype === "bf16" ? 1 : 0,
    start,
    count,
  ]);
}

export function nf4Dequantize(ctx: CudaContext, ...a: OpArgs<"nf4Dequantize">): void {
  const [out, w, row0, rows] = a;
  if (row0 < 0 || rows < 0 || row0 + rows > w.rows) {
    throw new Error(`nf4Dequantize: rows [${row0}, ${row0 + rows}) outside 0..${w.rows}`);
  }
  runDequant(ctx, out, w, row0 * w.cols, rows * w.cols);
}

/** W(N, K) dequantized in `dtype` into scratch (the caller drops it after queuing its use). */
function denseWeight(ctx: CudaContext, w: Nf4Weight, dtype: DType) {
  const W = ctx.scratch(w.rows * w.cols, dtype);
  runDequant(ctx, W, w, 0, w.rows * w.cols);
  return W;
}

/** W dequantized in inp's dtype into scratch, then matmulForward. */
export function nf4MatmulForward(ctx: CudaContext, ...a: OpArgs<"nf4MatmulForward">): void {
  const [out, inp, w, bias, M, accumulate = false] = a;
  const W = denseWeight(ctx, w, inp.dtype);
  try {
    matmulForward(ctx, out, inp, W, bias, M, w.cols, w.rows, accumulate);
  } finally {
    ctx.dropScratch(W);
  }
}

/** W dequantized in dout's dtype into scratch, then matmulBackward's input gradient. */
export function nf4MatmulBackward(ctx: CudaContext, ...a: OpArgs<"nf4MatmulBackward">): void {
  const [dinp, dout, w, M] = a;
  const W = denseWeight(ctx, w, dout.dtype);
  try {
    // no weight gradient: the inp argument is not read
    matmulBackward(ctx, dinp, null, null, dout, dinp, W, M, w.cols, w.rows);
  } finally {
    ctx.dropScratch(W);
  }
}
