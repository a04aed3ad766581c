/**
 * Adapter ops on the CUDA backend: DoRA's weight norm, column scaling and magnitude
 * gradient (kernels/dora.cu: dora_norm, scale_columns, dora_mag_bwd). CPU twin: the DoRA
 * ops of src/backend/cpu/backend.ts.
 */
import type { DeviceBuffer } from "../ops.ts";
import { cudaBuf, dtCode } from "./buffer.ts";
import { float, need } from "./checks.ts";
import type { CudaContext } from "./context.ts";
import { THREADS } from "./kernels.ts";

export function doraNorm(
  ctx: CudaContext,
  scale: DeviceBuffer,
  norm: DeviceBuffer,
  w: DeviceBuffer,
  ba: DeviceBuffer,
  magnitude: DeviceBuffer,
  s: number,
  O: number,
  I: number,
): void {
  const g = cudaBuf(scale, "doraNorm scale"), n = cudaBuf(norm, "doraNorm norm");
  const W = cudaBuf(w, "doraNorm w"), L = cudaBuf(ba, "doraNorm ba");
  const m = cudaBuf(magnitude, "doraNorm magnitude");
  float(W, "doraNorm w");
  need(W, O * I, "doraNorm w");
  for (
    const [b, what, len] of [[g, "scale", O], [n, "norm", O], [L, "ba", O * I], [
      m,
      "magnitude",
      O,
    ]] as const
  ) {
    if (b.dtype !== "f32") throw new Error(`doraNorm ${what}: expected f32, got ${b.dtype}`);
    need(b, len, `doraNorm ${what}`);
  }
  if (O <= 0 || I <= 0) return;
  ctx.kernels.run("dora_norm", O, THREADS, 0, [
    g.ptr,
    n.ptr,
    W.ptr,
    dtCode(W.dtype),
    L.ptr,
    m.ptr,
    s,
    O,
    I,
  ]);
}

export function scaleColumns(
  ctx: CudaContext,
  out: DeviceBuffer,
  inp: DeviceBuffer,
  v: DeviceBuffer,
  N: number,
  C: number,
): void {
  const o = cudaBuf(out, "scaleColumns"), x = cudaBuf(inp, "scaleColumns inp");
  const c = cudaBuf(v, "scaleColumns v");
  float(o, "scaleColumns");
  float(x, "scaleColumns inp");
  if (c.dtype !== "f32") throw new Error(`scaleColumns v: expected f32, got ${c.dtype}`);
  need(o, N * C, "scaleColumns");
  need(x, N * C, "scaleColumns inp");
  need(c, C, "scaleColumns v");
  ctx.kernels.run1d("scale_columns", N * C, [
    o.ptr,
    dtCode(o.dtype),
    x.ptr,
    dtCode(x.dtype),
    c.ptr,
    N,
    C,
  ]);
}

export function doraMagnitudeBackward(
  ctx: CudaContext,
  dmag: DeviceBuffer,
  dout: DeviceBuffer,
  z: DeviceBuffer,
  norm: DeviceBuffer,
  N: number,
  C: number,
): void {
  const d = cudaBuf(dmag, "doraMagnitudeBackward dmag");
  const dy = cudaBuf(dout, "doraMagnitudeBackward dout");
  const zz = cudaBuf(z, "doraMagnitudeBackward z");
  const n = cudaBuf(norm, "doraMagnitudeBackward norm");
  for (const [b, what] of [[d, "dmag"], [n, "norm"]] as const) {
    if (b.dtype !== "f32") throw new Error(`doraMagnitudeBackward ${what}: expected f32`);
    need(b, C, `doraMagnitudeBackward ${what}`);
  }
  float(dy, "doraMagnitudeBackward dout");
  float(zz, "doraMagnitudeBackward z");
  need(dy, N * C, "doraMagnitudeBackward dout");
  need(zz, N * C, "doraMagnitudeBackward z");
  if (C <= 0) return;
  ctx.kernels.run("dora_mag_bwd", Math.ceil(C / THREADS), THREADS, 0, [
    d.ptr,
    dy.ptr,
    dtCode(dy.dtype),
    zz.ptr,
    dtCode(zz.dtype),
    n.ptr,
    N,
    C,
  ]);
}
