/**
 * The optimizer step on the CUDA backend: fused AdamW over a flat parameter buffer
 * (kernels/elementwise.cu: adamw). CPU twin: src/backend/cpu/adamw.ts.
 */
import type { AdamWParams, DeviceBuffer } from "../ops.ts";
import { cudaBuf, dtCode } from "./buffer.ts";
import { float, need } from "./checks.ts";
import type { CudaContext } from "./context.ts";

export function adamw(
  ctx: CudaContext,
  params: DeviceBuffer,
  grads: DeviceBuffer,
  m: DeviceBuffer,
  v: DeviceBuffer,
  hp: AdamWParams,
): void {
  const p = cudaBuf(params, "adamw params"), g = cudaBuf(grads, "adamw grads");
  const mb = cudaBuf(m, "adamw m"), vb = cudaBuf(v, "adamw v");
  const n = p.length;
  for (const [x, w] of [[g, "grads"], [mb, "m"], [vb, "v"], [p, "params"]] as const) {
    need(x, n, `adamw ${w}`);
    float(x, `adamw ${w}`);
  }
  // Host-side constants exactly as src/backend/cpu/adamw.ts derives them.
  const { lr, beta1, beta2, eps, weightDecay, step } = hp;
  const decay = Math.fround(1 - lr * weightDecay);
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
  ctx.kernels.run1d("adamw", n, [
    p.ptr,
    dtCode(p.dtype),
    g.ptr,
    dtCode(g.dtype),
    mb.ptr,
    dtCode(mb.dtype),
    vb.ptr,
    dtCode(vb.dtype),
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
