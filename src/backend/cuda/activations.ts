/**
 * Gated activations on the CUDA backend: SwiGLU (kernels/layers.cu: swiglu_fwd, swiglu_bwd)
 * and GeGLU (kernels/geglu.cu: geglu_fwd, geglu_bwd), one launcher for both. CPU twin:
 * swigluForward/Backward and gegluForward/Backward of src/backend/cpu/layers.ts.
 */
import type { DeviceBuffer } from "../ops.ts";
import { cudaBuf, dtCode } from "./buffer.ts";
import { need } from "./checks.ts";
import type { CudaContext } from "./context.ts";

export function swigluForward(
  ctx: CudaContext,
  out: DeviceBuffer,
  gate: DeviceBuffer,
  up: DeviceBuffer,
  n: number,
): void {
  gatedForward(ctx, "swiglu", out, gate, up, n);
}

export function swigluBackward(
  ctx: CudaContext,
  dgate: DeviceBuffer,
  dup: DeviceBuffer,
  dout: DeviceBuffer,
  gate: DeviceBuffer,
  up: DeviceBuffer,
  n: number,
): void {
  gatedBackward(ctx, "swiglu", dgate, dup, dout, gate, up, n);
}

export function gegluForward(
  ctx: CudaContext,
  out: DeviceBuffer,
  gate: DeviceBuffer,
  up: DeviceBuffer,
  n: number,
): void {
  gatedForward(ctx, "geglu", out, gate, up, n);
}

export function gegluBackward(
  ctx: CudaContext,
  dgate: DeviceBuffer,
  dup: DeviceBuffer,
  dout: DeviceBuffer,
  gate: DeviceBuffer,
  up: DeviceBuffer,
  n: number,
): void {
  gatedBackward(ctx, "geglu", dgate, dup, dout, gate, up, n);
}

/** out(n) = act(gate) * up with the `<act>_fwd` kernel (SwiGLU, GeGLU). */
function gatedForward(
  ctx: CudaContext,
  act: "swiglu" | "geglu",
  out: DeviceBuffer,
  gate: DeviceBuffer,
  up: DeviceBuffer,
  n: number,
): void {
  const o = cudaBuf(out, `${act} out`), g = cudaBuf(gate, `${act} gate`);
  const u = cudaBuf(up, `${act} up`);
  for (const [x, w] of [[o, "out"], [g, "gate"], [u, "up"]] as const) need(x, n, `${act} ${w}`);
  ctx.runVec(`${act}_fwd`, n, [
    o.ptr,
    dtCode(o.dtype),
    g.ptr,
    dtCode(g.dtype),
    u.ptr,
    dtCode(u.dtype),
    n,
  ]);
}

/** The backward of `gatedForward` with the `<act>_bwd` kernel: dgate, dup written. */
function gatedBackward(
  ctx: CudaContext,
  act: "swiglu" | "geglu",
  dgate: DeviceBuffer,
  dup: DeviceBuffer,
  dout: DeviceBuffer,
  gate: DeviceBuffer,
  up: DeviceBuffer,
  n: number,
): void {
  const dg = cudaBuf(dgate, `${act} dgate`), du = cudaBuf(dup, `${act} dup`);
  const dy = cudaBuf(dout, `${act} dout`), g = cudaBuf(gate, `${act} gate`);
  const u = cudaBuf(up, `${act} up`);
  for (
    const [x, w] of [[dg, "dgate"], [du, "dup"], [dy, "dout"], [g, "gate"], [u, "up"]] as const
  ) {
    need(x, n, `${act} ${w}`);
  }
  ctx.runVec(`${act}_bwd`, n, [
    dg.ptr,
    dtCode(dg.dtype),
    du.ptr,
    dtCode(du.dtype),
    dy.ptr,
    dtCode(dy.dtype),
    g.ptr,
    dtCode(g.dtype),
    u.ptr,
    dtCode(u.dtype),
    n,
  ]);
}
