/**
 * Elementwise ops and reductions on the CUDA backend (kernels/elementwise.cu: ew_add,
 * ew_mul, ew_axpy, ew_scale, reduce_partial/reduce_final, dropout_mask). The dropout mask
 * uses the key, threshold and scale of its CPU twin src/backend/cpu/dropout.ts.
 */
import { check } from "../../../ffi/cuda.ts";
import { TuneError } from "../../errors.ts";
import { dropoutKey } from "../cpu/dropout.ts";
import type { DeviceBuffer } from "../ops.ts";
import { cudaBuf, dtCode } from "./buffer.ts";
import { float, need } from "./checks.ts";
import { type CudaContext, REDUCE_BLOCKS } from "./context.ts";
import { THREADS } from "./kernels.ts";

export function add(ctx: CudaContext, out: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer): void {
  binary(ctx, "ew_add", out, a, b);
}

export function mul(ctx: CudaContext, out: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer): void {
  binary(ctx, "ew_mul", out, a, b);
}

function binary(
  ctx: CudaContext,
  k: "ew_add" | "ew_mul",
  out: DeviceBuffer,
  a: DeviceBuffer,
  b: DeviceBuffer,
) {
  const o = cudaBuf(out, k), x = cudaBuf(a, k), y = cudaBuf(b, k);
  const n = o.length;
  for (const [buf, w] of [[o, "out"], [x, "a"], [y, "b"]] as const) {
    float(buf, `${k} ${w}`);
    need(buf, n, `${k} ${w}`);
  }
  ctx.runVec(k, n, [
    o.ptr,
    dtCode(o.dtype),
    x.ptr,
    dtCode(x.dtype),
    y.ptr,
    dtCode(y.dtype),
    n,
  ]);
}

export function axpy(ctx: CudaContext, out: DeviceBuffer, x: DeviceBuffer, alpha: number): void {
  const o = cudaBuf(out, "axpy"), a = cudaBuf(x, "axpy x");
  const n = o.length;
  float(o, "axpy");
  float(a, "axpy x");
  need(a, n, "axpy x");
  need(o, n, "axpy");
  ctx.runVec("ew_axpy", n, [o.ptr, dtCode(o.dtype), a.ptr, dtCode(a.dtype), alpha, n]);
}

export function scale(ctx: CudaContext, buf: DeviceBuffer, s: number): void {
  const o = cudaBuf(buf, "scale");
  float(o, "scale");
  need(o, o.length, "scale");
  ctx.runVec("ew_scale", o.length, [o.ptr, dtCode(o.dtype), s, o.length]);
}

export function sum(ctx: CudaContext, buf: DeviceBuffer): number {
  return reduce(ctx, buf, 0);
}

export function sumSquares(ctx: CudaContext, buf: DeviceBuffer): number {
  return reduce(ctx, buf, 1);
}

function reduce(ctx: CudaContext, buf: DeviceBuffer, squares: number): number {
  const b = cudaBuf(buf, "sum");
  float(b, "sum");
  need(b, b.length, "sum");
  if (b.length === 0) return 0;
  const partial = ctx.reduceScratch.ptr;
  const result = partial + BigInt(REDUCE_BLOCKS * 4);
  // At least 8 elements per thread before a block is added.
  const blocks = Math.min(REDUCE_BLOCKS, Math.ceil(b.length / (THREADS * 8)));
  ctx.kernels.run("reduce_partial", blocks, THREADS, 0, [
    partial,
    b.ptr,
    dtCode(b.dtype),
    b.length,
    squares,
  ]);
  ctx.kernels.run("reduce_final", 1, THREADS, 0, [result, partial, blocks]);
  ctx.waitStream(squares ? "sumSquares" : "sum");
  check(
    "cuMemcpyDtoH_v2",
    ctx.lib.cuMemcpyDtoH_v2(new Uint8Array(ctx.reduceOut.buffer), result, 4n),
  );
  return ctx.reduceOut[0];
}

export function dropoutMask(ctx: CudaContext, mask: DeviceBuffer, p: number, seed: number): void {
  if (!(p >= 0 && p < 1)) throw new TuneError(`dropout probability ${p} must be in [0, 1)`);
  if (!Number.isInteger(seed)) throw new TuneError(`dropout seed ${seed} must be an integer`);
  const m = cudaBuf(mask, "dropoutMask");
  float(m, "dropoutMask");
  need(m, m.length, "dropoutMask");
  // Same key, threshold and scale as src/backend/cpu/dropout.ts.
  const key = dropoutKey(seed);
  const thresh = Math.floor(p * 4294967296);
  const keep = Math.fround(1 / (1 - p));
  ctx.kernels.run1d("dropout_mask", m.length, [
    m.ptr,
    dtCode(m.dtype),
    key | 0,
    thresh | 0,
    keep,
    m.length,
  ]);
}
