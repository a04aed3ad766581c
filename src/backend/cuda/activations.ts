/**
 * Gated activations on the CUDA backend: SwiGLU (kernels/layers.cu: swiglu_fwd, swiglu_bwd)
 * and GeGLU (kernels/geglu.cu: geglu_fwd, geglu_bwd), one launcher for both. CPU twin:
 * swigluForward/Backward and gegluForward/Backward of src/backend/cpu/layers.ts.
 */
import type { DeviceBuffer, GatedBackwardArgs, OpArgs } from "../ops.ts";
import { ptrDt } from "./buffer.ts";
import { operand } from "./checks.ts";
import type { CudaContext } from "./context.ts";

/** The forward op of activation `act`: out(n) = act(gate) * up. */
function forward(act: "swiglu" | "geglu") {
  return (ctx: CudaContext, ...[out, gate, up, n]: OpArgs<"swigluForward">): void =>
    gated(ctx, `${act}_fwd`, { out, gate, up }, n);
}

/** The backward op of activation `act`: dgate, dup written. */
function backward(act: "swiglu" | "geglu") {
  return (ctx: CudaContext, ...[dgate, dup, dout, gate, up, n]: GatedBackwardArgs): void =>
    gated(ctx, `${act}_bwd`, { dgate, dup, dout, gate, up }, n);
}

export const swigluForward = forward("swiglu");
export const swigluBackward = backward("swiglu");
export const gegluForward = forward("geglu");
export const gegluBackward = backward("geglu");

/**
 * Run the `<act>_fwd` or `<act>_bwd` kernel: its n-element buffers in the kernel's
 * parameter order (keys name them in errors), each with its dtype code, then n.
 */
function gated(
  ctx: CudaContext,
  kernel: "swiglu_fwd" | "swiglu_bwd" | "geglu_fwd" | "geglu_bwd",
  bufs: Record<string, DeviceBuffer>,
  n: number,
): void {
  const act = kernel.slice(0, 6);
  const ops = Object.entries(bufs).map(([w, b]) => operand(b, n, `${act} ${w}`));
  ctx.runVec(kernel, n, [...ptrDt(...ops), n]);
}
