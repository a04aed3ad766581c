/**
 * GRPO (Shao et al. 2024, DeepSeekMath) and its variants, as TRL's GRPOTrainer defines them:
 *
 *   advantages   A_i = r_i - mean(group)             [ / (std(group) + 1e-4) when scaleRewards ]
 *                (std unbiased, as torch.std; one group = the G completions of one prompt)
 *   ratio        rho_t = exp(logp_t - oldLogp_t)
 *   policy term  l_t = -min(rho_t * A, clamp(rho_t, 1 - epsLow, 1 + epsHigh) * A)
 *   KL (k3)      k_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1;  l_t += beta * k_t  (beta 0: skipped)
 *   loss         sum over completion tokens of w_t * l_t, where w_t is the normalisation:
 *     "sequence" (GRPO):      1 / (S * n_s)  - each sequence's token mean, then the mean over S
 *     "token"    (DAPO/BNPO): 1 / N          - over all N completion tokens of the step
 *     "constant" (Dr. GRPO):  1 / (S * Lmax) - a constant: S sequences times max completion length
 *
 * Dr. GRPO (Liu et al. 2025) also drops the std division; DAPO (Yu et al. 2025) adds
 * clip-higher (epsHigh > epsLow). torchtune's GRPOLoss is the "token" normalisation with a
 * symmetric clip (its masked_mean runs over the whole batch); its GRPOSimpleLoss is "sequence"
 * with the ratio taken against the current policy itself (`onPolicy`: old = logp, so rho = 1).
 *
 * S, N (and Lmax) count the whole optimisation step: every micro-batch and every rank, so the
 * sum of all parts' losses and gradients is the step's. The gradient d loss / d logp_t is in
 * closed form; the recipe turns it into token weights of the model's cross-entropy rows
 * (d loss / d ce_t = -d loss / d logp_t), so no autograd is needed on the host.
 */
import { TuneError } from "../errors.ts";

/** How token losses are averaged over a step (see the module doc). */
export type GrpoNormalization = "sequence" | "token" | "constant";

/** The loss's hyper-parameters. */
export interface GrpoLoss {
  /** Name in messages and logs (grpo, dr_grpo, dapo, bnpo, or a torchtune class name). */
  name: string;
  normalization: GrpoNormalization;
  /** Divide advantages by the group's std (+1e-4): GRPO and DAPO yes, Dr. GRPO no. */
  scaleRewards: boolean;
  epsLow: number;
  epsHigh: number;
  /** KL coefficient; 0 skips the reference model. */
  beta: number;
  /** Ratio against the current policy itself (torchtune's GRPOSimpleLoss): old log-probs unused. */
  onPolicy: boolean;
}

/** TRL's loss_type names with their papers' settings; `eps`/`epsHigh` override the clip. */
export function grpoVariant(
  variant: string,
  opts: { epsilon?: number; epsilonHigh?: number | null; beta?: number } = {},
): GrpoLoss {
  const beta = opts.beta ?? 0.04;
  const epsLow = opts.epsilon ?? 0.2;
  const table: Record<string, [GrpoNormalization, boolean, number]> = {
    grpo: ["sequence", true, epsLow],
    bnpo: ["token", true, epsLow],
    dr_grpo: ["constant", false, epsLow],
    dapo: ["token", true, 0.28],
  };
  const row = table[variant];
  if (!row) {
    throw new TuneError(
      `loss.loss_type must be one of ${Object.keys(table).join(", ")}, got ${variant}`,
    );
  }
  const epsHigh = opts.epsilonHigh ?? (variant === "dapo" ? row[2] : epsLow);
  return validateGrpoLoss({
    name: variant,
    normalization: row[0],
    scaleRewards: row[1],
    epsLow,
    epsHigh,
    beta,
    onPolicy: false,
  });
}

/** Checks shared by the components. */
export function validateGrpoLoss(loss: GrpoLoss): GrpoLoss {
  const inRange = (key: string, v: number, lo: number, hi: number) => {
    if (!(Number.isFinite(v) && v >= lo && v < hi)) {
      throw new TuneError(`loss.${key} must be in [${lo}, ${hi}), got ${v}`);
    }
  };
  inRange("epsilon", loss.epsLow, 0, 1);
  inRange("epsilon_high", loss.epsHigh, 0, Infinity);
  inRange("beta (kl_coeff)", loss.beta, 0, Infinity);
  return loss;
}

/**
 * Group-normalised advantages of S = groups * G rewards laid out group by group:
 * r - mean(group), divided by (unbiased std(group) + 1e-4) when `scale`. A group of one
 * has std 0 (no NaN), as TRL's eval path.
 */
export function groupAdvantages(rewards: Float64Array, G: number, scale: boolean): Float64Array {
  if (!(G >= 1) || rewards.length % G !== 0) {
    throw new Error(`${rewards.length} rewards do not split into groups of ${G}`);
  }
  const out = new Float64Array(rewards.length);
  for (let g0 = 0; g0 < rewards.length; g0 += G) {
    let mean = 0;
    for (let i = 0; i < G; i++) mean += rewards[g0 + i];
    mean /= G;
    let ss = 0;
    for (let i = 0; i < G; i++) ss += (rewards[g0 + i] - mean) ** 2;
    const std = G > 1 ? Math.sqrt(ss / (G - 1)) : 0;
    for (let i = 0; i < G; i++) {
      const a = rewards[g0 + i] - mean;
      out[g0 + i] = scale ? a / (std + 1e-4) : a;
    }
  }
  return out;
}

/** Per-token inputs of some sequences of a step, (S, L) row-major, L the completion length. */
export interface GrpoTokens {
  /** The current policy's log-probabilities of the completion tokens. */
  logProbs: Float64Array; // (S, L)
  /** The generating policy's (kept from generation); ignored under `onPolicy`. */
  oldLogProbs: Float64Array | null; // (S, L)
  /** The reference model's; needed when beta > 0. */
  refLogProbs: Float64Array | null; // (S, L)
  /** 1 for completion tokens that count (not padding, up to and including the stop token). */
  mask: Uint8Array; // (S, L)
  advantages: Float64Array; // (S)
}

/** What the normalisation counts over the whole step (all micro-batches, all ranks). */
export interface GrpoStepCounts {
  sequences: number;
  tokens: number;
  /** Longest completion allowed (max_generated_tokens): Dr. GRPO's constant. */
  maxCompletionLength: number;
}

/** This part's share of the step's loss, its gradient and sums for the metrics. */
export interface GrpoLossResult {
  /** sum_t w_t * l_t over these sequences (the step's loss is the sum over all parts). */
  loss: number;
  /** d loss / d logProbs. */
  dLogProbs: Float64Array; // (S, L)
  /** Sums over counted tokens, for means over the step. */
  tokens: number;
  /** Sum of k3 KL over counted tokens (0 without reference log-probabilities). */
  klSum: number;
  ratioSum: number;
  /** Tokens whose ratio is clipped below (rho < 1 - epsLow, A < 0) or above (rho > 1 + epsHigh, A > 0). */
  clippedLow: number;
  clippedHigh: number;
}

/**
 * Loss, gradient and metric sums of some sequences (see the module doc). `rows` limits the
 * work to flat token indices [from, to) of the (S, L) inputs (one logit chunk of the model);
 * each sequence's token count still comes from its whole mask row.
 */
export function grpoLoss(
  loss: GrpoLoss,
  x: GrpoTokens,
  counts: GrpoStepCounts,
  rows: { from: number; to: number } | null = null,
): GrpoLossResult {
  const S = x.advantages.length;
  const L = S === 0 ? 0 : x.logProbs.length / S;
  if (x.mask.length !== S * L) throw new Error("logProbs and mask shapes differ");
  if (loss.beta > 0 && !x.refLogProbs) {
    throw new Error("a GRPO loss with beta > 0 needs the reference log-probabilities");
  }
  if (!loss.onPolicy && !x.oldLogProbs) {
    throw new Error("the GRPO loss needs the generating policy's log-probabilities");
  }
  const out: GrpoLossResult = {
    loss: 0,
    dLogProbs: new Float64Array(S * L),
    tokens: 0,
    klSum: 0,
    ratioSum: 0,
    clippedLow: 0,
    clippedHigh: 0,
  };
  for (let s = 0; s < S; s++) {
    const A = x.advantages[s];
    let n = 0;
    for (let t = 0; t < L; t++) n += x.mask[s * L + t];
    const w = loss.normalization === "sequence"
      ? 1 / (counts.sequences * Math.max(1, n))
      : loss.normalization === "token"
      ? 1 / Math.max(1, counts.tokens)
      : 1 / (counts.sequences * counts.maxCompletionLength);
    const t0 = rows ? Math.max(0, rows.from - s * L) : 0;
    const t1 = rows ? Math.min(L, rows.to - s * L) : L;
    for (let t = t0; t < t1; t++) {
      const i = s * L + t;
      if (!x.mask[i]) continue;
      const lp = x.logProbs[i];
      const old = loss.onPolicy ? lp : x.oldLogProbs![i];
      const rho = Math.exp(lp - old);
      const clipped = Math.min(Math.max(rho, 1 - loss.epsLow), 1 + loss.epsHigh);
      const unclippedTerm = rho * A, clippedTerm = clipped * A;
      // -min(rho A, clip(rho) A): the unclipped side's gradient is -A rho; the clipped side's is
      // 0 (it is only smaller when rho lies outside the clip range, where clamp is flat)
      let l = -Math.min(unclippedTerm, clippedTerm);
      let d = unclippedTerm <= clippedTerm ? -A * rho : 0;
      if (x.refLogProbs) {
        const delta = x.refLogProbs[i] - lp;
        const e = Math.exp(delta);
        const k = e - delta - 1;
        out.klSum += k; // logged even when beta is 0
        if (loss.beta > 0) {
          l += loss.beta * k;
          d += loss.beta * (1 - e);
        }
      }
      out.loss += w * l;
      out.dLogProbs[i] = w * d;
      out.tokens++;
      out.ratioSum += rho;
      if (rho < 1 - loss.epsLow && A < 0) out.clippedLow++;
      if (rho > 1 + loss.epsHigh && A > 0) out.clippedHigh++;
    }
  }
  return out;
}
