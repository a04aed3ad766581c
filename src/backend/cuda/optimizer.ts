/**
 * The optimizer step on the CUDA backend: fused AdamW over a flat parameter buffer
 * (kernels/elementwise.cu: adamw). CPU twin: src/backend/cpu/adamw.ts.
 */
import type { OpArgs } from "../ops.ts";
import { ptrDt } from "./buffer.ts";
import { floatOperand } from "./checks.ts";
import type { CudaContext } from "./context.ts";

export function adamw(ctx: CudaContext, ...a: OpArgs<"adamw">): void {
  const [params, grads, m, v, hp] = a;
  const n = params.length;
  const g = floatOperand(grads, n, "adamw grads"), mb = floatOperand(m, n, "adamw m");
  const vb = floatOperand(v, n, "adamw v"), p = floatOperand(params, n, "adamw params");
  // Host-side constants exactly as src/backend/cpu/adamw.ts derives them.
  const { lr, beta1, beta2, eps, weightDecay, step } = hp;
  const decay = Math.fround(1 - lr * weightDecay);
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
  ctx.kernels.run1d("adamw", n, [
    ...ptrDt(p, g, mb, vb),
    n,
    decay,
    beta1,
    1 - beta1,
    beta2,
    1 - beta2,
    eps,
    lr / bc1,
    bc2Sqrt,
  ]);
}
