/**
 * The host side of one GRPO micro-batch: S sequences (prompt + completion) laid out as the
 * model's (S, T) rows, where row t predicts token t + 1 and only completion targets count
 * (prompt and padding targets are -100). The recipe runs the model: the old log-probs were
 * kept from generation time, the reference ones come from `tokenLosses` (adapters off under
 * LoRA, a frozen copy under full fine-tuning), and the policy's weighted forward and backward
 * calls `weigh` once per logit chunk. This turns those token losses into GRPO's loss, its
 * token weights and the step's metric sums.
 */
import type { Backend } from "../backend/ops.ts";
import type { LossHead, LossResult } from "../models/llama/loss_heads.ts";
import {
  type GrpoLoss,
  grpoLoss,
  type GrpoLossResult,
  type GrpoStepCounts,
  type GrpoTokens,
} from "./grpo_loss.ts";

/**
 * A token-level loss's weights (n) for rows r0..r0+n of a micro-batch's (B*T) rows, given
 * those rows' token losses -log p(target) (n) from the same forward (0 where the target is
 * -100): the gradient is of sum_i w[i] * rowLoss[i].
 */
export type TokenWeigher = (rowLoss: Float32Array, r0: number) => Float64Array;

/**
 * The model's loss head of a GRPO micro-batch (`LlamaModel.trainStep`): cross-entropy with
 * gradScale 1 writes d(token loss)/d(logits), then each row's V values are scaled by its
 * weight from `weigh`. Chunk by chunk, so any logit chunking works.
 */
export function tokenWeightedHead(weigh: TokenWeigher): LossHead<LossResult> {
  return {
    check() {},
    rows(be: Backend, c) {
      be.crossEntropy(c.losses, c.logits, c.logits, c.targets, c.n, c.V, 1, c.hostTargets);
      const rowLoss = be.download(c.losses) as Float32Array; // (n)
      const w = weigh(rowLoss, c.r0);
      if (w.length !== c.n) throw new Error(`token weights must be ${c.n}, got ${w.length}`);
      for (let i = 0; i < c.n; i++) {
        if (c.hostTargets[i] === -100 || w[i] === 1) continue;
        if (!Number.isFinite(w[i])) throw new Error(`token weight ${c.r0 + i} is ${w[i]}`);
        be.scale(be.view(c.logits, i * c.V, c.V), w[i]);
      }
    },
    result: (be, t) => ({ lossSum: be.sum(t.losses), tokens: t.tokens }),
  };
}

/** Sums of one step's GRPO metrics over its micro-batches (and ranks, via `values()`). */
export class GrpoStepStats {
  loss = 0;
  tokens = 0;
  klSum = 0;
  ratioSum = 0;
  clippedLow = 0;
  clippedHigh = 0;

  /** Every sum as one vector, for an all-reduce. */
  values(): number[] {
    return [this.loss, this.tokens, this.klSum, this.ratioSum, this.clippedLow, this.clippedHigh];
  }

  /** Stats from `values()` (e.g. summed over ranks). */
  static fromValues(v: readonly number[]): GrpoStepStats {
    const s = new GrpoStepStats();
    [s.loss, s.tokens, s.klSum, s.ratioSum, s.clippedLow, s.clippedHigh] = v;
    return s;
  }

  /** Add one part's result. */
  add(r: GrpoLossResult): void {
    this.loss += r.loss;
    this.tokens += r.tokens;
    this.klSum += r.klSum;
    this.ratioSum += r.ratioSum;
    this.clippedLow += r.clippedLow;
    this.clippedHigh += r.clippedHigh;
  }

  /** The step's metrics with TRL's names (kl, clip_ratio/*; ratio as torchtune logs it). */
  metrics(): Record<string, number> {
    const n = Math.max(1, this.tokens);
    return {
      kl: this.klSum / n,
      ratio: this.ratioSum / n,
      "clip_ratio/low_mean": this.clippedLow / n,
      "clip_ratio/high_mean": this.clippedHigh / n,
      "clip_ratio/region_mean": (this.clippedLow + this.clippedHigh) / n,
    };
  }
}

/** (S*T) 1 where a target counts. */
export function completionMask(targets: Int32Array): Uint8Array {
  return Uint8Array.from(targets, (t) => (t === -100 ? 0 : 1));
}

/** (N) log-probabilities from token losses: -loss (float64). */
export function negate(losses: Float32Array | Float64Array): Float64Array {
  return Float64Array.from(losses, (l) => -l);
}

/** One micro-batch: give `weigh` to `tokenWeightedLossAndBackward`, the sums land in `stats`. */
export class GrpoMicroBatch {
  #x: GrpoTokens;

  /**
   * `targets` (S, T); `oldLogProbs` / `refLogProbs` (S*T) from generation time and the
   * reference model (null when unused); `advantages` (S); `counts` over the whole step.
   */
  constructor(
    readonly loss: GrpoLoss,
    targets: Int32Array,
    oldLogProbs: Float64Array | null,
    refLogProbs: Float64Array | null,
    advantages: Float64Array,
    readonly counts: GrpoStepCounts,
    readonly stats: GrpoStepStats,
  ) {
    this.#x = {
      logProbs: new Float64Array(targets.length),
      oldLogProbs,
      refLogProbs,
      mask: completionMask(targets),
      advantages,
    };
  }

  /**
   * Take the ratio against the current policy itself (old log-probs = the current ones, so
   * rho = 1 with its gradient): TRL's one step per generation batch.
   */
  useCurrentAsOld(): void {
    this.#x.oldLogProbs = this.#x.logProbs;
  }

  /** The model's TokenWeigher: rows r0..r0+n's token losses -> their weights -d loss / d logp. */
  readonly weigh: TokenWeigher = (rowLoss, r0) => {
    const n = rowLoss.length;
    for (let i = 0; i < n; i++) this.#x.logProbs[r0 + i] = -rowLoss[i];
    const r = grpoLoss(this.loss, this.#x, this.counts, { from: r0, to: r0 + n });
    this.stats.add(r);
    const w = new Float64Array(n);
    for (let i = 0; i < n; i++) w[i] = -r.dLogProbs[r0 + i];
    return w;
  };
}
