/**
 * Gated activations on the CUDA backend: SwiGLU (kernels/layers.cu: swiglu_fwd, swiglu_bwd)
 * and GeGLU (kernels/geglu.cu: geglu_fwd, geglu_bwd), one launcher for both. CPU twin:
 * swigluForward/Backward and gegluForward/Backward of src/backend/cpu/layers.ts.
 */
import type { DeviceBuffer, OpArgs } from "../ops.ts";
import { ptrDt } from "./buffer.ts";
import { operand } from "./checks.ts";
import type { CudaContext } from "./context.ts";

export function swigluForward(ctx: CudaContext, ...a: OpArgs<"swigluForward">): void {
  const [out, gate, up, n] = a;
  gated(ctx, "swiglu_fwd", { out, gate, up }, n);
}

export function swigluBackward(ctx: CudaContext, ...a: OpArgs<"swigluBackward">): void {
  const [dgate, dup, dout, gate, up, n] = a;
  gated(ctx, "swiglu_bwd", { dgate, dup, dout, gate, up }, n);
}

export function gegluForward(ctx: CudaContext, ...a: OpArgs<"gegluForward">): void {
  const [out, gate, up, n] = a;
  gated(ctx, "geglu_fwd", { out, gate, up }, n);
}

export function gegluBackward(ctx: CudaContext, ...a: OpArgs<"gegluBackward">): void {
  const [dgate, dup, dout, gate, up, n] = a;
  gated(ctx, "geglu_bwd", { dgate, dup, dout, gate, up }, n);
}

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
