/**
 * The optimizer a config's `optimizer` section asks for, bound to a trainable store:
 * torch.optim.AdamW and bitsandbytes' 32-bit (Paged)AdamW are AdamW (fp32 moments in the
 * store, or for PagedAdamW on a GPU in host memory); bitsandbytes' (Paged)AdamW8bit is
 * AdamW8bit (8-bit moments in host memory). Moments outside the store: the model is built
 * without store moments (`needsStoreMoments`).
 */
import type { Backend } from "../backend/ops.ts";
import type { ParamStore } from "../params/store.ts";
import { AdamW, type AdamWOptions, pagesMoments } from "./adamw.ts";
import { AdamW8bit } from "./adamw8bit.ts";
import type { BnbAdamWOptions } from "./bnb_components.ts";

/** Either optimizer: both have `stepCount`, `options`, `store` and `step(lr)`. */
export type TrainingOptimizer = AdamW | AdamW8bit;

/** Whether the optimizer keeps its moments in the store (false for 8-bit or paged state). */
export function needsStoreMoments(o: AdamWOptions, be: Backend): boolean {
  return (o as Partial<BnbAdamWOptions>).bits !== 8 && !pagesMoments(o, be);
}

/** The optimizer for options built by an `optimizer` component. */
export function createOptimizer(
  backend: Backend,
  store: ParamStore,
  o: AdamWOptions,
): TrainingOptimizer {
  return (o as Partial<BnbAdamWOptions>).bits === 8
    ? new AdamW8bit(backend, store, o)
    : new AdamW(backend, store, o);
}
