/** AdamW on the CPU, in the exact operation order of PyTorch 1.13's `_single_tensor_adamw`. */
import type { AdamWParams } from "../ops.ts";
import { simdKernels } from "./simd.ts";

/**
 * One step over n elements, updating params, m and v in place:
 *   p *= 1 - lr * wd
 *   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g
 *   denom = sqrt(v) / sqrt(1 - beta2^step) + eps
 *   p -= (lr / (1 - beta1^step)) * m / denom
 * Each stored value is rounded to fp32 where PyTorch's fp32 tensors would round it.
 */
export function adamwStep(
  params: Float32Array,
  grads: Float32Array,
  m: Float32Array,
  v: Float32Array,
  hp: AdamWParams,
): void {
  const { lr, beta1, beta2, eps, weightDecay, step } = hp;
  const decay = Math.fround(1 - lr * weightDecay);
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
  const stepSize = lr / bc1;
  const a1 = Math.fround(1 - beta1);
  const a2 = Math.fround(1 - beta2);
  const b1 = Math.fround(beta1);
  const b2 = Math.fround(beta2);
  const fr = Math.fround;
  const n = params.length;
  // the even head in wasm SIMD (bitwise this loop), the loop for the rest
  const simd = simdKernels();
  const i0 = simd === null ? 0 : n & ~1;
  if (i0 > 0) simd!.adamw(params, grads, m, v, i0, [decay, b1, a1, b2, a2, bc2Sqrt, eps, stepSize]);
  for (let i = i0; i < n; i++) {
    const g = grads[i];
    const p = fr(params[i] * decay);
    const mi = fr(fr(m[i] * b1) + g * a1);
    const vi = fr(fr(v[i] * b2) + fr(g * g) * a2);
    m[i] = mi;
    v[i] = vi;
    const denom = fr(fr(Math.sqrt(vi) / bc2Sqrt) + eps);
    params[i] = p - stepSize * (mi / denom);
  }
}
