/** Gradient-norm clipping like torch.nn.utils.clip_grad_norm_ (L2 norm over all gradients). */
import type { Backend } from "../backend/ops.ts";
import type { ParamStore } from "../params/store.ts";

/**
 * Total L2 norm of the store's gradients; when `maxNorm` is finite the gradients are
 * scaled by min(1, maxNorm / (norm + 1e-6)) as PyTorch does. Returns the norm before clipping.
 * (Alignment padding in the flat buffer holds zeros and does not change the norm.)
 */
export function clipGradNorm(backend: Backend, store: ParamStore, maxNorm: number): number {
  if (!store.grads) throw new Error("clipGradNorm needs a trainable store");
  const norm = Math.sqrt(backend.sumSquares(store.grads));
  if (Number.isFinite(maxNorm)) {
    const coef = Math.fround(maxNorm / (norm + 1e-6));
    if (coef < 1) backend.scale(store.grads, coef);
  }
  return norm;
}
