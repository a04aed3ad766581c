/**
 * The host side of one preference micro-batch (the recipes lora_dpo_single_device and
 * lora_dpo_distributed): a batch of P pairs is (2P, T) sequences, chosen then rejected.
 * The recipe runs the model (reference losses with the adapters off, then the policy's
 * weighted forward and backward); this turns sequence losses into log-probabilities, the
 * preference loss, the weight of each sequence's summed token loss, and the step's metrics.
 */
import type { WeightedLossResult } from "../models/llama/model.ts";
import {
  averagesLogProbs,
  type PreferenceLoss,
  preferenceLoss,
  type PreferenceLossResult,
} from "./preference_loss.ts";

/** Metric names a preference step logs, in order (TRL's and torchtune's names). */
export const PREFERENCE_METRICS = [
  "rewards/chosen",
  "rewards/rejected",
  "rewards/accuracies",
  "rewards/margins",
  "log_probs/chosen",
  "log_probs/rejected",
  "logits/chosen",
  "logits/rejected",
] as const;

/** (B) targets that count (not -100) in each of the B rows of (B, T) labels. */
export function countedPerSequence(labels: Int32Array, B: number): Int32Array {
  const T = labels.length / B;
  const out = new Int32Array(B);
  for (let i = 0; i < labels.length; i++) if (labels[i] !== -100) out[Math.floor(i / T)]++;
  return out;
}

/** Log-probabilities (B) from summed token losses: -loss, or -loss / tokens when averaged (SimPO). */
export function logProbs(
  seqLoss: Float64Array,
  counted: Int32Array,
  average: boolean,
): Float64Array {
  return seqLoss.map((l, b) => average ? -l / Math.max(1, counted[b]) : -l);
}

/**
 * The weight of each sequence's summed token loss: d(step loss) / d(seqLoss) where the step
 * loss is the mean pair loss over `pairsInStep` pairs and log p = -seqLoss (/ tokens).
 */
export function sequenceWeights(
  r: PreferenceLossResult,
  counted: Int32Array,
  average: boolean,
  pairsInStep: number,
): Float64Array {
  const P = r.dChosen.length;
  const w = new Float64Array(2 * P);
  for (let p = 0; p < P; p++) {
    const c = average ? Math.max(1, counted[p]) : 1;
    const j = average ? Math.max(1, counted[P + p]) : 1;
    w[p] = -r.dChosen[p] / c / pairsInStep;
    w[P + p] = -r.dRejected[p] / j / pairsInStep;
  }
  return w;
}

/**
 * Sums over a step's pairs of the per-pair metrics (`PREFERENCE_METRICS`), of the pair
 * losses and of the counted tokens; `values()` / `fromValues()` carry them through an
 * all-reduce in distributed runs.
 */
export class PreferenceStepStats {
  pairs = 0;
  lossSum = 0;
  tokens = 0;
  readonly sums = new Float64Array(PREFERENCE_METRICS.length);

  /** Every sum as one vector: pairs, lossSum, tokens, then the metrics. */
  values(): number[] {
    return [this.pairs, this.lossSum, this.tokens, ...this.sums];
  }

  /** Stats from `values()` (e.g. summed over ranks). */
  static fromValues(v: readonly number[]): PreferenceStepStats {
    const s = new PreferenceStepStats();
    [s.pairs, s.lossSum, s.tokens] = [v[0], v[1], v[2]];
    s.sums.set(v.slice(3));
    return s;
  }

  /** The step's loss (the mean pair loss), counted tokens and mean metrics. */
  stepLoss(): { loss: number; tokens: number; metrics: Record<string, number> } {
    return {
      loss: this.lossSum / Math.max(1, this.pairs),
      tokens: this.tokens,
      metrics: this.means(),
    };
  }

  /** Each metric's mean over the pairs. */
  means(): Record<string, number> {
    const out: Record<string, number> = {};
    PREFERENCE_METRICS.forEach((k, i) => (out[k] = this.sums[i] / Math.max(1, this.pairs)));
    return out;
  }
}

/** One micro-batch: give `weigh` to the model's weighted backward, then `record` its result. */
export class PreferenceMicroBatch {
  readonly counted: Int32Array; // (2P)
  #result: PreferenceLossResult | null = null;
  #logProbs: Float64Array | null = null; // (2P) the policy's, from weigh

  /**
   * `labels` (2P, T); `referenceLoss` (2P) the frozen model's summed token losses (null for
   * reference-free losses); `pairsInStep` all pairs the step's loss averages over (every
   * micro-batch, every rank).
   */
  constructor(
    readonly loss: PreferenceLoss,
    labels: Int32Array,
    readonly pairs: number,
    readonly pairsInStep: number,
    readonly referenceLoss: Float64Array | null,
  ) {
    this.counted = countedPerSequence(labels, 2 * pairs);
  }

  /** The model's SequenceWeigher: the policy's sequence losses (2P) -> their weights (2P). */
  readonly weigh = (seqLoss: Float64Array): Float64Array => {
    const P = this.pairs;
    const average = averagesLogProbs(this.loss);
    const lp = logProbs(seqLoss, this.counted, average);
    this.#logProbs = lp;
    const ref = this.referenceLoss ? logProbs(this.referenceLoss, this.counted, false) : null;
    this.#result = preferenceLoss(this.loss, {
      policyChosen: lp.subarray(0, P),
      policyRejected: lp.subarray(P),
      referenceChosen: ref ? ref.subarray(0, P) : null,
      referenceRejected: ref ? ref.subarray(P) : null,
    });
    return sequenceWeights(this.#result, this.counted, average, this.pairsInStep);
  };

  /** Add this micro-batch's pair losses, tokens and metrics to `stats`. */
  record(r: WeightedLossResult, V: number, stats: PreferenceStepStats): void {
    const pl = this.#result, lp = this.#logProbs;
    if (!pl || !lp) throw new Error("record() before the model called weigh()");
    const P = this.pairs;
    const meanLogit = (b: number) => r.logitSums[b] / Math.max(1, r.tokens[b] * V);
    stats.pairs += P;
    stats.tokens += r.tokens.reduce((a, b) => a + b, 0);
    for (let p = 0; p < P; p++) {
      const c = pl.chosenRewards[p], j = pl.rejectedRewards[p];
      stats.lossSum += pl.losses[p];
      const row = [c, j, c > j ? 1 : 0, c - j, lp[p], lp[P + p], meanLogit(p), meanLogit(P + p)];
      row.forEach((v, i) => (stats.sums[i] += v));
    }
  }
}
