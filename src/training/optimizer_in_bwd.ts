/**
 * optimizer_in_bwd (torchtune's OptimizerInBackward): each parameter group of the model
 * ("head", "layers.L-1", ..., "layers.0", "tok_embeddings"; under LoRA the adapters' groups)
 * takes its optimizer step as soon as its backward is done, through the model's GroupHooks,
 * and its gradient is zeroed right after. The step's updates are the ordinary step's, group
 * by group (AdamW and 8-bit AdamW update elementwise / per tensor), so the losses match the
 * ordinary path bit for bit; the moments stay where the optimizer keeps them, so the
 * recipe_state format (and bitwise resume) is the same.
 *
 * Memory: torchtune frees each parameter's gradient after its step, so at most one
 * parameter's gradient is alive. tune's trainable store keeps one preallocated flat
 * gradient buffer (llm.c's layout), so here the gradient memory does not shrink: what
 * optimizer_in_bwd gives on tune is the ordering (and the refusals torchtune makes), not the
 * bytes. `gradientBytes()` reports both figures.
 *
 * torchtune refuses gradient clipping (the global norm is not known until every group has
 * stepped) and gradient accumulation (each backward steps) with it; so does tune.
 */
import type { Backend } from "../backend/ops.ts";
import { TuneError } from "../errors.ts";
import type { GroupHooks } from "../models/llama/options.ts";
import type { TrainingOptimizer } from "../optim/create.ts";
import type { ParamGroup } from "../params/layout.ts";

/** The keys that decide whether optimizer_in_bwd may run. */
export interface InBackwardKeys {
  optimizer_in_bwd?: boolean;
  clip_grad_norm?: number | null;
  gradient_accumulation_steps?: number;
}

/** torchtune's refusals of optimizer_in_bwd with clipping or accumulation (one line each). */
export function checkOptimizerInBwd(cfg: InBackwardKeys): void {
  if (!cfg.optimizer_in_bwd) return;
  if (cfg.clip_grad_norm !== null && cfg.clip_grad_norm !== undefined) {
    throw new TuneError(
      "Gradient clipping is not supported with optimizer_in_bwd: True (set clip_grad_norm=null or optimizer_in_bwd=False)",
    );
  }
  if ((cfg.gradient_accumulation_steps ?? 1) > 1) {
    throw new TuneError(
      "Gradient accumulation is not supported with optimizer_in_bwd: True (set gradient_accumulation_steps=1 or optimizer_in_bwd=False)",
    );
  }
}

/** GroupHooks that step the optimizer group by group inside the model's backward. */
export class OptimizerInBackward implements GroupHooks {
  readonly #groups = new Map<string, ParamGroup>();
  #lr = 0;
  #armed = false;
  #sumSquares = 0;
  readonly #stepped = new Set<string>();

  constructor(readonly backend: Backend, readonly optimizer: TrainingOptimizer) {
    for (const g of optimizer.store.layout.groups) this.#groups.set(g.name, g);
  }

  /** Before the step's backward: advance the optimizer's step count, with learning rate `lr`. */
  begin(lr: number): void {
    if (this.#armed) throw new Error("optimizer_in_bwd: begin() twice without finish()");
    this.optimizer.stepCount++;
    this.#lr = lr;
    this.#armed = true;
    this.#sumSquares = 0;
    this.#stepped.clear();
  }

  beforeGroup(): Promise<void> {
    return Promise.resolve();
  }

  /** Group `name`'s gradient is complete: its norm part, its optimizer step, then zero it. */
  afterGroupBackward(name: string): Promise<void> {
    const g = this.#groups.get(name);
    if (!g) return Promise.resolve();
    if (!this.#armed || this.#stepped.has(name)) {
      // a second backward in one step would step the group twice (accumulation is refused)
      throw new Error(`optimizer_in_bwd: group ${name} finished its backward twice in one step`);
    }
    const be = this.backend;
    const grad = be.view(this.optimizer.store.grads!, g.offset, g.length); // (group length)
    this.#sumSquares += be.sumSquares(grad);
    this.optimizer.stepGroup(g, this.#lr);
    be.fill(grad, 0);
    this.#stepped.add(name);
    return Promise.resolve();
  }

  /**
   * After the backward: every group must have stepped; returns the gradient norm of the
   * step (the groups' sums of squares, added before each was zeroed).
   */
  finish(): number {
    const missing = [...this.#groups.keys()].filter((n) => !this.#stepped.has(n));
    if (!this.#armed || missing.length) {
      throw new Error(`optimizer_in_bwd: no backward reached group(s) ${missing.join(", ")}`);
    }
    this.#armed = false;
    return Math.sqrt(this.#sumSquares);
  }

  /**
   * Gradient bytes: what tune holds (the flat buffer) and what a per-group free would hold
   * at most (the largest group's), torchtune's saving being the difference.
   */
  gradientBytes(): { held: number; largestGroup: number } {
    let largest = 0;
    for (const g of this.#groups.values()) largest = Math.max(largest, g.length);
    return { held: this.optimizer.store.layout.total * 4, largestGroup: largest * 4 };
  }
}
