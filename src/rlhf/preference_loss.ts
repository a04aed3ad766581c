/**
 * Preference losses (torchtune's rlhf.loss, after TRL's DPOTrainer): per chosen/rejected
 * pair, from the sequences' log-probabilities under the policy (and the frozen reference).
 *
 *   DPO   (Rafailov et al. 2023)  z = beta * ((pc - pr) - (rc - rr))
 *                                 loss = -(1 - ls) log sigmoid(z) - ls log sigmoid(-z)
 *   RSO   (Liu et al. 2023)       loss = relu(1 - gamma * ((pc - pr) - (rc - rr)))  (hinge)
 *   SimPO (Meng et al. 2024)      z = beta * (pc - pr) - gamma, pc/pr AVERAGE log-probs,
 *                                 no reference; loss as DPO's with z
 *
 * Besides the losses and rewards, `preferenceLoss` returns d loss_p / d pc_p and
 * d loss_p / d pr_p in closed form: the recipe turns them into per-sequence weights of the
 * model's token losses, so no autograd is needed on the host.
 */
import { TuneError } from "../errors.ts";

/** Which loss, with its hyper-parameters (torchtune's defaults in the components). */
export type PreferenceLoss =
  | { kind: "dpo"; beta: number; labelSmoothing: number }
  | { kind: "rso"; gamma: number }
  | { kind: "simpo"; beta: number; gamma: number; labelSmoothing: number };

/** Log-probabilities of P pairs; the reference ones are ignored by reference-free losses. */
export interface PairLogProbs {
  policyChosen: Float64Array; // (P)
  policyRejected: Float64Array; // (P)
  referenceChosen: Float64Array | null; // (P)
  referenceRejected: Float64Array | null; // (P)
}

/** Per-pair results. */
export interface PreferenceLossResult {
  losses: Float64Array; // (P)
  chosenRewards: Float64Array; // (P)
  rejectedRewards: Float64Array; // (P)
  /** d losses[p] / d policyChosen[p]. */
  dChosen: Float64Array; // (P)
  /** d losses[p] / d policyRejected[p]. */
  dRejected: Float64Array; // (P)
}

/** Whether the loss compares against a reference model (SimPO does not). */
export function needsReference(loss: PreferenceLoss): boolean {
  return loss.kind !== "simpo";
}

/** Whether the loss takes length-averaged log-probabilities (SimPO). */
export function averagesLogProbs(loss: PreferenceLoss): boolean {
  return loss.kind === "simpo";
}

/** log sigmoid(x) without overflow: min(x, 0) - log1p(exp(-|x|)). */
export function logSigmoid(x: number): number {
  return Math.min(x, 0) - Math.log1p(Math.exp(-Math.abs(x)));
}

/** sigmoid(x) without overflow. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** Losses, rewards and their gradients for P pairs. */
export function preferenceLoss(loss: PreferenceLoss, lp: PairLogProbs): PreferenceLossResult {
  const P = lp.policyChosen.length;
  if (lp.policyRejected.length !== P) throw new Error("chosen and rejected counts differ");
  const ref = needsReference(loss);
  if (ref && (!lp.referenceChosen || !lp.referenceRejected)) {
    throw new Error(`the ${loss.kind} loss needs reference log-probabilities`);
  }
  const out: PreferenceLossResult = {
    losses: new Float64Array(P),
    chosenRewards: new Float64Array(P),
    rejectedRewards: new Float64Array(P),
    dChosen: new Float64Array(P),
    dRejected: new Float64Array(P),
  };
  for (let p = 0; p < P; p++) {
    const pc = lp.policyChosen[p], pr = lp.policyRejected[p];
    const rc = ref ? lp.referenceChosen![p] : 0, rr = ref ? lp.referenceRejected![p] : 0;
    switch (loss.kind) {
      case "dpo": {
        const z = loss.beta * ((pc - pr) - (rc - rr));
        const ls = loss.labelSmoothing;
        out.losses[p] = -(1 - ls) * logSigmoid(z) - ls * logSigmoid(-z);
        const dz = -(1 - ls) * sigmoid(-z) + ls * sigmoid(z);
        out.dChosen[p] = loss.beta * dz;
        out.dRejected[p] = -loss.beta * dz;
        out.chosenRewards[p] = loss.beta * (pc - rc);
        out.rejectedRewards[p] = loss.beta * (pr - rr);
        break;
      }
      case "rso": {
        const margin = 1 - loss.gamma * ((pc - pr) - (rc - rr));
        out.losses[p] = Math.max(0, margin);
        // relu's gradient is 0 at 0, as in PyTorch
        const d = margin > 0 ? -loss.gamma : 0;
        out.dChosen[p] = d;
        out.dRejected[p] = -d;
        out.chosenRewards[p] = loss.gamma * (pc - rc);
        out.rejectedRewards[p] = loss.gamma * (pr - rr);
        break;
      }
      case "simpo": {
        const z = loss.beta * (pc - pr) - loss.gamma;
        const ls = loss.labelSmoothing;
        out.losses[p] = -(1 - ls) * logSigmoid(z) - ls * logSigmoid(-z);
        const dz = -(1 - ls) * sigmoid(-z) + ls * sigmoid(z);
        out.dChosen[p] = loss.beta * dz;
        out.dRejected[p] = -loss.beta * dz;
        out.chosenRewards[p] = loss.beta * pc;
        out.rejectedRewards[p] = loss.beta * pr;
        break;
      }
    }
  }
  return out;
}

/** Checks shared by the components: a finite positive temperature, smoothing in [0, 0.5). */
export function validatePreferenceLoss(loss: PreferenceLoss): PreferenceLoss {
  const positive = (name: string, v: number) => {
    if (!(Number.isFinite(v) && v > 0)) {
      throw new TuneError(`loss.${name} must be a positive number, got ${v}`);
    }
  };
  if (loss.kind === "rso") positive("gamma", loss.gamma);
  else positive("beta", loss.beta);
  if (loss.kind === "simpo" && !(Number.isFinite(loss.gamma) && loss.gamma >= 0)) {
    throw new TuneError(`loss.gamma must be a non-negative number, got ${loss.gamma}`);
  }
  if (loss.kind !== "rso" && !(loss.labelSmoothing >= 0 && loss.labelSmoothing < 0.5)) {
    throw new TuneError(
      `loss.label_smoothing must be in [0, 0.5), got ${loss.labelSmoothing}`,
    );
  }
  return loss;
}
