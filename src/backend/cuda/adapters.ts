/**
 * Adapter ops on the CUDA backend: DoRA's weight norm, column scaling and magnitude
 * gradient (kernels/dora.cu: dora_norm, scale_columns, dora_mag_bwd). CPU twin: the DoRA
 * ops of src/backend/cpu/backend.ts.
 */
import type { OpArgs } from "../ops.ts";
import { ptrDt } from "./buffer.ts";
import { f32Operand, floatOperand } from "./checks.ts";
import type { CudaContext } from "./context.ts";
import { THREADS } from "./kernels.ts";

export function doraNorm(ctx: CudaContext, ...a: OpArgs<"doraNorm">): void {
  const [scale, norm, w, ba, magnitude, s, O, I] = a;
  const W = floatOperand(w, O * I, "doraNorm w");
  const g = f32Operand(scale, O, "doraNorm scale"), n = f32Operand(norm, O, "doraNorm norm");
  const L = f32Operand(ba, O * I, "doraNorm ba");
  const m = f32Operand(magnitude, O, "doraNorm magnitude");
  if (O <= 0 || I <= 0) return;
  const args = [g.ptr, n.ptr, ...ptrDt(W), L.ptr, m.ptr, s, O, I];
  ctx.kernels.run("dora_norm", O, THREADS, 0, args);
}

export function scaleColumns(ctx: CudaContext, ...a: OpArgs<"scaleColumns">): void {
  const [out, inp, v, N, C] = a;
  const o = floatOperand(out, N * C, "scaleColumns");
  const x = floatOperand(inp, N * C, "scaleColumns inp");
  const c = f32Operand(v, C, "scaleColumns v");
  ctx.kernels.run1d("scale_columns", N * C, [...ptrDt(o, x), c.ptr, N, C]);
}

export function doraMagnitudeBackward(
  ctx: CudaContext,
  ...a: OpArgs<"doraMagnitudeBackward">
): void {
  const [dmag, dout, z, norm, N, C] = a;
  const d = f32Operand(dmag, C, "doraMagnitudeBackward dmag");
  const n = f32Operand(norm, C, "doraMagnitudeBackward norm");
  const dy = floatOperand(dout, N * C, "doraMagnitudeBackward dout");
  const zz = floatOperand(z, N * C, "doraMagnitudeBackward z");
  if (C <= 0) return;
  const args = [d.ptr, ...ptrDt(dy, zz), n.ptr, N, C];
  ctx.kernels.run("dora_mag_bwd", Math.ceil(C / THREADS), THREADS, 0, args);
}
