/**
 * Elementwise ops and reductions on the CUDA backend (kernels/elementwise.cu: ew_add,
 * ew_mul, ew_axpy, ew_scale, reduce_partial/reduce_final, dropout_mask). The dropout mask
 * uses the key, threshold and scale of its CPU twin src/backend/cpu/dropout.ts.
 */
import { check } from "../../../ffi/cuda.ts";
import { TuneError } from "../../errors.ts";
import { dropoutKey } from "../cpu/dropout.ts";
import type { DeviceBuffer, OpArgs } from "../ops.ts";
import { ptrDt } from "./buffer.ts";
import { floatOperand } from "./checks.ts";
import { type CudaContext, REDUCE_BLOCKS } from "./context.ts";
import { THREADS } from "./kernels.ts";

export function add(ctx: CudaContext, ...a: OpArgs<"add">): void {
  binary(ctx, "ew_add", ...a);
}

export function mul(ctx: CudaContext, ...a: OpArgs<"mul">): void {
  binary(ctx, "ew_mul", ...a);
}

function binary(
  ctx: CudaContext,
  k: "ew_add" | "ew_mul",
  ...[out, a, b]: OpArgs<"add">
) {
  const n = out.length;
  const o = floatOperand(out, n, `${k} out`), x = floatOperand(a, n, `${k} a`);
  const y = floatOperand(b, n, `${k} b`);
  ctx.runVec(k, n, [...ptrDt(o, x, y), n]);
}

export function axpy(ctx: CudaContext, ...[out, x, alpha]: OpArgs<"axpy">): void {
  const n = out.length;
  const o = floatOperand(out, n, "axpy"), a = floatOperand(x, n, "axpy x");
  ctx.runVec("ew_axpy", n, [...ptrDt(o, a), alpha, n]);
}

export function scale(ctx: CudaContext, ...[buf, s]: OpArgs<"scale">): void {
  const o = floatOperand(buf, buf.length, "scale");
  ctx.runVec("ew_scale", o.length, [...ptrDt(o), s, o.length]);
}

export function sum(ctx: CudaContext, ...[buf]: OpArgs<"sum">): number {
  return reduce(ctx, buf, 0);
}

export function sumSquares(ctx: CudaContext, ...[buf]: OpArgs<"sumSquares">): number {
  return reduce(ctx, buf, 1);
}

function reduce(ctx: CudaContext, buf: DeviceBuffer, squares: number): number {
  const b = floatOperand(buf, buf.length, "sum");
  if (b.length === 0) return 0;
  const partial = ctx.reduceScratch.ptr;
  const result = partial + BigInt(REDUCE_BLOCKS * 4);
  // At least 8 elements per thread before a block is added.
  const blocks = Math.min(REDUCE_BLOCKS, Math.ceil(b.length / (THREADS * 8)));
  ctx.kernels.run("reduce_partial", blocks, THREADS, 0, [partial, ...ptrDt(b), b.length, squares]);
  ctx.kernels.run("reduce_final", 1, THREADS, 0, [result, partial, blocks]);
  ctx.waitStream(squares ? "sumSquares" : "sum");
  check(
    "cuMemcpyDtoH_v2",
    ctx.lib.cuMemcpyDtoH_v2(new Uint8Array(ctx.reduceOut.buffer), result, 4n),
  );
  return ctx.reduceOut[0];
}

export function dropoutMask(ctx: CudaContext, ...[mask, p, seed]: OpArgs<"dropoutMask">): void {
  if (!(p >= 0 && p < 1)) throw new TuneError(`dropout probability ${p} must be in [0, 1)`);
  if (!Number.isInteger(seed)) throw new TuneError(`dropout seed ${seed} must be an integer`);
  const m = floatOperand(mask, mask.length, "dropoutMask");
  // Same key, threshold and scale as src/backend/cpu/dropout.ts.
  const key = dropoutKey(seed);
  const thresh = Math.floor(p * 4294967296);
  const keep = Math.fround(1 / (1 - p));
  ctx.kernels.run1d("dropout_mask", m.length, [...ptrDt(m), key | 0, thresh | 0, keep, m.length]);
}
