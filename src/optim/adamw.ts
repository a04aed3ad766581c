/**
 * AdamW over a flat trainable ParamStore (PyTorch's torch.optim.AdamW semantics: decoupled
 * weight decay on every parameter, bias correction), one backend call per step. bitsandbytes'
 * PagedAdamW / PagedAdamW32bit is this optimizer too; on a GPU backend its moments live in
 * host memory and are paged through the device for each step (paged_moments.ts), on the CPU
 * they are the store's as AdamW's.
 */
import { activationOffloader, canOffload } from "../backend/offload.ts";
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import { TuneError } from "../errors.ts";
import type { ParamGroup } from "../params/layout.ts";
import type { ParamStore } from "../params/store.ts";
import { PAGE_FLOATS, PagedMoments } from "./paged_moments.ts";

/** AdamW hyper-parameters (torch.optim.AdamW's names, camelCase). */
export interface AdamWOptions {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

/** Defaults of torch.optim.AdamW. */
export const ADAMW_DEFAULTS: AdamWOptions = {
  lr: 1e-3,
  betas: [0.9, 0.999],
  eps: 1e-8,
  weightDecay: 1e-2,
};

/** Check hyper-parameters like torch does; TuneError naming the bad one. */
export function validateAdamW(o: AdamWOptions): void {
  if (!(o.lr >= 0)) throw new TuneError(`optimizer.lr must be >= 0, got ${o.lr}`);
  if (!(o.eps >= 0)) throw new TuneError(`optimizer.eps must be >= 0, got ${o.eps}`);
  if (!(o.weightDecay >= 0)) {
    throw new TuneError(`optimizer.weight_decay must be >= 0, got ${o.weightDecay}`);
  }
  if (o.betas.length !== 2 || !o.betas.every((b) => b >= 0 && b < 1)) {
    throw new TuneError(
      `optimizer.betas must be two numbers in [0, 1), got [${o.betas.join(", ")}]`,
    );
  }
}

/** Whether AdamW with these options pages its moments on `be` (so the store holds none). */
export function pagesMoments(o: AdamWOptions, be: Backend): boolean {
  return (o as { paged?: boolean }).paged === true && canOffload(be);
}

/** An AdamW optimizer bound to one trainable store. */
export class AdamW {
  /** Number of steps taken (the next step is stepCount + 1). */
  stepCount = 0;
  /** The moments in host memory (PagedAdamW on a GPU backend), else null: the store's. */
  readonly paged: PagedMoments | null;

  /** `pageFloats`: elements per page of paged moments (tests take small pages). */
  constructor(
    readonly backend: Backend,
    readonly store: ParamStore,
    readonly options: AdamWOptions,
    pageFloats = PAGE_FLOATS,
  ) {
    validateAdamW(options);
    if (!store.trainable) throw new Error("AdamW needs a trainable store");
    // bitsandbytes' optimizers (src/optim/bnb_components.ts): 8-bit state is AdamW8bit's
    const bnb = options as { bits?: number; paged?: boolean };
    if (bnb.bits === 8) {
      throw new TuneError(
        "bitsandbytes' 8-bit AdamW runs in lora_finetune_single_device and full_finetune_single_device; this recipe does not take it yet, use torch.optim.AdamW",
      );
    }
    this.paged = pagesMoments(options, backend)
      ? new PagedMoments(
        backend,
        () => activationOffloader(backend)!,
        store.layout.total,
        pageFloats,
      )
      : null;
    if (this.paged && store.m) throw new Error("PagedAdamW: build the store without moments");
  }

  /** One update with learning rate `lr` (default: options.lr) from the store's gradients. */
  step(lr: number = this.options.lr): void {
    this.stepCount++;
    const s = this.store;
    if (this.paged) this.#pagedUpdate(0, s.layout.total, lr);
    else this.#update(s.params, s.grads!, s.m!, s.v!, lr);
  }

  /**
   * Group `g`'s share of step `stepCount` (the caller advanced it): optimizer_in_bwd steps
   * each group as its gradient completes. AdamW is elementwise, so the groups' updates
   * together are `step()`'s, bit for bit.
   */
  stepGroup(g: ParamGroup, lr: number): void {
    const s = this.store, be = this.backend;
    if (this.paged) return this.#pagedUpdate(g.offset, g.length, lr);
    const at = (b: DeviceBuffer) => be.view(b, g.offset, g.length); // (group length)
    this.#update(at(s.params), at(s.grads!), at(s.m!), at(s.v!), lr);
  }

  /** The update of elements [lo, lo + n), page by page. */
  #pagedUpdate(lo: number, n: number, lr: number): void {
    const s = this.store, be = this.backend;
    this.paged!.update(lo, n, (m, v, at, len) => {
      this.#update(be.view(s.params, at, len), be.view(s.grads!, at, len), m, v, lr);
    });
  }

  #update(p: DeviceBuffer, g: DeviceBuffer, m: DeviceBuffer, v: DeviceBuffer, lr: number): void {
    this.backend.adamw(p, g, m, v, {
      lr,
      beta1: this.options.betas[0],
      beta2: this.options.betas[1],
      eps: this.options.eps,
      weightDecay: this.options.weightDecay,
      step: this.stepCount,
    });
  }
}

/** AdamW state on the host, for checkpoints (m and v mirror the store's flat layout). */
export interface AdamWState {
  step: number;
  m: Float32Array;
  v: Float32Array;
}

/** The optimizer's step count and moments, downloaded. */
export function exportAdamWState(opt: AdamW): AdamWState {
  const be = opt.backend;
  if (opt.paged) return { step: opt.stepCount, ...opt.paged.exportMoments() };
  return {
    step: opt.stepCount,
    m: be.download(opt.store.m!) as Float32Array,
    v: be.download(opt.store.v!) as Float32Array,
  };
}

/** Restore a state from exportAdamWState (TuneError when it belongs to another layout). */
export function importAdamWState(opt: AdamW, state: AdamWState): void {
  const n = opt.store.layout.total;
  if (state.m.length !== n || state.v.length !== n) {
    throw new TuneError(
      `optimizer state has ${state.m.length} values but the trainable parameters need ${n}; resume with the same model and LoRA settings`,
    );
  }
  opt.stepCount = state.step;
  if (opt.paged) return opt.paged.importMoments(state.m, state.v);
  opt.backend.upload(opt.store.m!, state.m);
  opt.backend.upload(opt.store.v!, state.v);
}
