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
import type { ModelSpec } from "../src/models/model_spec.ts";
import { needsReference, type PreferenceLoss } from "../src/rlhf/preference_loss.ts";
import { PreferenceMicroBatch, PreferenceStepStats } from "../src/rlhf/preference_step.ts";
import {
  type PreferenceTrainingData,
  setupPreferenceTraining,
} from "../src/training/preference_data.ts";
import type {
  BatchShape,
  FinetuneHooks,
  FinetuneResult,
  StepLoss,
} from "../src/training/recipe_api.ts";
import {
  keyAliases as loraKeyAliases,
  type LoraFinetuneConfig,
  LoraFinetuneRecipeSingleDevice,
  params as loraParams,
  runRecipe,
} from "./lora_finetune_single_device.ts";

// validation during training scores SFT data; torchtune's DPO recipes have none either
const {
  dataset_val: _datasetVal,
  run_val_every_n_steps: _runVal,
  batch_size_val: _batchVal,
  ...loraKeys
} = loraParams;

/** Every top-level key this recipe reads: lora_finetune_single_device's, with preference data and loss. */
export const params = {
  ...loraKeys,
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
    const p = await setupPreferenceTraining(cfg, this.tokenizer, spec, this.seed);
    [this.preferenceLoss, this.pairs] = [p.loss, p.pairs];
    return p.shape;
  }

  protected override accumulateStep(epoch: number, s: number, ga: number): StepLoss {
    const { model } = this;
    const P = this.pairs.pairsPerBatch;
    const stats = new PreferenceStepStats();
    for (let k = 0; k < ga; k++) {
      const batch = this.pairs.batch(epoch, s * ga + k); // (2P, T)
      // reference: the frozen base (adapters off), no gradients, no dropout
      const ref = needsReference(this.preferenceLoss)
        ? model.withAdaptersDisabled(() => model.sequenceLosses(batch.tokens, batch.labels))
        : null; // (2P)
      const mb = new PreferenceMicroBatch(this.preferenceLoss, batch.labels, P, P * ga, ref);
      const r = model.weightedLossAndBackward(batch.tokens, batch.labels, mb.weigh);
      mb.record(r, model.cfg.vocabSize, stats);
    }
    return stats.stepLoss();
  }
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
