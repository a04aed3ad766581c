/**
 * Preference fine-tuning with LoRA on one device (torchtune's lora_dpo_single_device):
 * DPO, RSO (hinge) or SimPO on pairs of chosen and rejected conversations.
 *
 *   deno task tune run lora_dpo_single_device --config tiny/lora_dpo_single_device
 *
 * The policy is the LoRA model; the reference is the same model with its adapters switched
 * off (the frozen base, torchtune's disable_adapter), so no second copy of the weights
 * exists. Each micro-batch of P pairs runs as (2P, T) sequences, chosen then rejected:
 * one no-gradient forward of the reference, then one forward and backward of the policy in
 * which each sequence's token losses carry the weight the preference loss gives that
 * sequence (`LlamaModel.weightedLossAndBackward`), so the gradients are those of the mean
 * pair loss (divided by gradient_accumulation_steps) with no extra forward.
 *
 * Everything else (checkpoints in PEFT and merged form, exact resume, metrics, the
 * scheduler) is lora_finetune_single_device's; this file only replaces the data and the step.
 * Metrics per step: loss, lr, grad_norm, tokens, tokens_per_s and, averaged over the step's
 * pairs, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
 * log_probs/chosen, log_probs/rejected, logits/chosen and logits/rejected (the mean logit
 * over the positions that count in the loss, as TRL logs it).
 */
import "../src/components.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import { instantiate } from "../src/config/instantiate.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import {
  averagesLogProbs,
  needsReference,
  type PreferenceLoss,
  preferenceLoss,
  type PreferenceLossResult,
} from "../src/rlhf/preference_loss.ts";
import {
  type PreferenceTrainingData,
  setupPreferenceData,
} from "../src/training/preference_data.ts";
import type { FinetuneHooks, FinetuneResult } from "../src/training/recipe_api.ts";
import {
  type BatchShape,
  keyAliases as loraKeyAliases,
  type LoraFinetuneConfig,
  LoraFinetuneRecipeSingleDevice,
  params as loraParams,
  runRecipe,
  type StepLoss,
} from "./lora_finetune_single_device.ts";

/** Every top-level key this recipe reads: lora_finetune_single_device's, with preference data and loss. */
export const params = {
  ...loraParams,
  dataset: {
    type: "component",
    kind: "preference_dataset",
    required: true,
    doc: "preference pairs (preference_dataset, stack_exchange_paired_dataset, ...)",
  },
  loss: {
    type: "component",
    kind: "preference_loss",
    default: null,
    doc: "preference loss (null: torchtune.rlhf.loss.DPOLoss with beta 0.1)",
  },
  batch_size: { type: "int", default: 2, doc: "preference pairs per micro-batch" },
  output_dir: {
    type: "string",
    default: "out/lora_dpo_single_device",
    doc: "checkpoints and logs go here",
  },
} satisfies ParamSchema;

/** The same top-level aliases as lora_finetune_single_device (`lora_rank=4`, ...). */
export const keyAliases = loraKeyAliases;

/** The resolved config of this recipe. */
export type LoraDpoConfig = ResolvedConfig<typeof params>;

const NAME = "lora_dpo_single_device";

/** Sums of the per-pair numbers a step logs. */
class PairStats {
  pairs = 0;
  #sums = new Map<string, number>();

  add(name: string, values: ArrayLike<number>): void {
    let s = this.#sums.get(name) ?? 0;
    for (let i = 0; i < values.length; i++) s += values[i];
    this.#sums.set(name, s);
  }

  /** Each metric's mean over the pairs added. */
  means(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of this.#sums) out[k] = v / Math.max(1, this.pairs);
    return out;
  }
}

/** The recipe: lora_finetune_single_device's setup and loop with preference data and loss. */
export class LoraDpoRecipeSingleDevice extends LoraFinetuneRecipeSingleDevice {
  preferenceLoss!: PreferenceLoss;
  pairs!: PreferenceTrainingData;

  constructor(readonly dpoCfg: LoraDpoConfig, hooks: FinetuneHooks = {}) {
    super(dpoCfg as unknown as LoraFinetuneConfig, hooks);
  }

  protected override get recipeName(): string {
    return NAME;
  }

  protected override async setupLossAndData(spec: ModelSpec): Promise<BatchShape> {
    const cfg = this.dpoCfg;
    this.preferenceLoss = cfg.loss
      ? instantiate<PreferenceLoss>(cfg.loss)
      : { kind: "dpo", beta: 0.1, labelSmoothing: 0 };
    this.pairs = await setupPreferenceData(cfg.dataset, this.tokenizer, {
      batchSize: cfg.batch_size,
      seed: this.seed,
      shuffle: cfg.shuffle,
      modelMaxSeqLen: spec.config.maxSeqLen,
    });
    // 2P sequences per micro-batch; all logits at once, since every weight depends on
    // every sequence's loss
    return {
      batch: 2 * cfg.batch_size,
      seqLen: this.pairs.seqLen,
      logitChunks: 1,
      batchesPerEpoch: this.pairs.sampler.stepsPerEpoch,
    };
  }

  protected override accumulateStep(epoch: number, s: number, ga: number): StepLoss {
    const { model } = this;
    const loss = this.preferenceLoss;
    const P = this.pairs.pairsPerBatch;
    const stats = new PairStats();
    let lossSum = 0;
    let tokens = 0;
    for (let k = 0; k < ga; k++) {
      const batch = this.pairs.batch(epoch, s * ga + k); // (2P, T)
      // reference log-probabilities: the frozen base, no gradients, no dropout
      const refLoss = needsReference(loss)
        ? model.withAdaptersDisabled(() => model.sequenceLosses(batch.tokens, batch.labels))
        : null; // (2P)
      let pairLoss: PreferenceLossResult | null = null;
      const counted = countedPerSequence(batch.labels, 2 * P); // (2P)
      const r = model.weightedLossAndBackward(batch.tokens, batch.labels, (seqLoss) => {
        const lp = logProbs(seqLoss, counted, averagesLogProbs(loss)); // (2P)
        const ref = refLoss ? logProbs(refLoss, counted, false) : null;
        pairLoss = preferenceLoss(loss, {
          policyChosen: lp.subarray(0, P),
          policyRejected: lp.subarray(P),
          referenceChosen: ref ? ref.subarray(0, P) : null,
          referenceRejected: ref ? ref.subarray(P) : null,
        });
        return sequenceWeights(pairLoss, counted, averagesLogProbs(loss), P * ga);
      });
      const pl = pairLoss! as PreferenceLossResult;
      lossSum += pl.losses.reduce((a, b) => a + b, 0) / P;
      tokens += r.tokens.reduce((a, b) => a + b, 0);
      const V = model.cfg.vocabSize;
      const lp = logProbs(r.seqLoss, counted, averagesLogProbs(loss));
      stats.pairs += P;
      stats.add("rewards/chosen", pl.chosenRewards);
      stats.add("rewards/rejected", pl.rejectedRewards);
      stats.add(
        "rewards/accuracies",
        pl.chosenRewards.map((c, p) => c > pl.rejectedRewards[p] ? 1 : 0),
      );
      stats.add("rewards/margins", pl.chosenRewards.map((c, p) => c - pl.rejectedRewards[p]));
      stats.add("log_probs/chosen", lp.subarray(0, P));
      stats.add("log_probs/rejected", lp.subarray(P));
      stats.add("logits/chosen", meanLogits(r.logitSums, r.tokens, V, 0, P));
      stats.add("logits/rejected", meanLogits(r.logitSums, r.tokens, V, P, 2 * P));
    }
    return { loss: lossSum / ga, tokens, metrics: stats.means() };
  }
}

/** (B) targets that count (not -100) in each of the B rows of (B, T) labels. */
export function countedPerSequence(labels: Int32Array, B: number): Int32Array {
  const T = labels.length / B;
  const out = new Int32Array(B);
  for (let i = 0; i < labels.length; i++) if (labels[i] !== -100) out[Math.floor(i / T)]++;
  return out;
}

/** Log-probabilities (B) from summed token losses: -loss, or -loss / tokens for SimPO. */
function logProbs(seqLoss: Float64Array, counted: Int32Array, average: boolean): Float64Array {
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

function meanLogits(sums: Float64Array, tokens: Int32Array, V: number, a: number, b: number) {
  const out = new Float64Array(b - a);
  for (let i = a; i < b; i++) out[i - a] = sums[i] / Math.max(1, tokens[i] * V);
  return out;
}

/** Run the recipe in this process and return what it produced. */
export async function runLoraDpo(
  cfg: LoraDpoConfig,
  _launch: LaunchOptions,
  hooks: FinetuneHooks = {},
): Promise<FinetuneResult> {
  return await runRecipe(new LoraDpoRecipeSingleDevice(cfg, hooks));
}

/** Run the recipe. */
export async function main(cfg: LoraDpoConfig, launch: LaunchOptions): Promise<void> {
  const r = await runLoraDpo(cfg, launch);
  r.model.free();
}
