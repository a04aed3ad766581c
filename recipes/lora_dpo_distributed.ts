/**
 * Preference fine-tuning with LoRA sharded over several processes (torchtune's
 * lora_dpo_distributed): lora_dpo_single_device's DPO / RSO / SimPO step on
 * lora_finetune_distributed's FSDP/ZeRO-3 machinery.
 *
 *   deno task tune run --nproc_per_node 2 lora_dpo_distributed --config tiny/lora_dpo_distributed
 *
 * Each rank takes its share of every global batch of pairs (DistributedSampler order), runs
 * the reference forward (adapters off) and the policy's weighted forward and backward with
 * every layer group gathered before it runs, and its gradients reduce-scattered into the
 * rank's slice. Pair losses are independent, so a rank weighs its own sequences; the step's
 * loss is the mean over all pairs of all ranks and micro-batches, so losses and adapters
 * are those of lora_dpo_single_device with batch_size * world size.
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
import type { BatchShape, FinetuneHooks, StepLoss } from "../src/training/recipe_api.ts";
import { allSumF64 } from "../src/training/sharded.ts";
import {
  keyAliases as loraKeyAliases,
  type LoraFinetuneDistributedConfig,
  LoraFinetuneRecipeDistributed,
  params as loraParams,
} from "./lora_finetune_distributed.ts";
import { params as dpoParams } from "./lora_dpo_single_device.ts";

// validation during training scores SFT data; torchtune's DPO recipes have none either
const {
  dataset_val: _datasetVal,
  run_val_every_n_steps: _runVal,
  batch_size_val: _batchVal,
  ...loraKeys
} = loraParams;

/** Every top-level key: lora_finetune_distributed's, with lora_dpo_single_device's data and loss. */
export const params = {
  ...loraKeys,
  dataset: dpoParams.dataset,
  loss: dpoParams.loss,
  batch_size: { type: "int", default: 2, doc: "preference pairs per micro-batch on each rank" },
  output_dir: {
    type: "string",
    default: "out/lora_dpo_distributed",
    doc: "checkpoints and logs go here",
  },
} satisfies ParamSchema;

/** The same top-level aliases as lora_finetune_distributed (`lora_rank=4`, ...). */
export const keyAliases = loraKeyAliases;

/** The resolved config of this recipe. */
export type LoraDpoDistributedConfig = ResolvedConfig<typeof params>;

/** The recipe: lora_finetune_distributed's setup and loop with preference data and loss. */
export class LoraDpoRecipeDistributed extends LoraFinetuneRecipeDistributed {
  preferenceLoss!: PreferenceLoss;
  pairs!: PreferenceTrainingData;

  constructor(readonly dpoCfg: LoraDpoDistributedConfig, hooks: FinetuneHooks = {}) {
    super(dpoCfg as unknown as LoraFinetuneDistributedConfig, hooks);
  }

  protected override get recipeName(): string {
    return "lora_dpo_distributed";
  }

  protected override async setupLossAndData(spec: ModelSpec): Promise<BatchShape> {
    const cfg = this.dpoCfg;
    const p = await setupPreferenceTraining(
      cfg,
      this.tokenizer,
      spec,
      this.seed,
      this.group.rank,
      this.group.worldSize,
    );
    [this.preferenceLoss, this.pairs] = [p.loss, p.pairs];
    return p.shape;
  }

  protected override async accumulateStep(epoch: number, s: number, ga: number): Promise<StepLoss> {
    const { model } = this;
    const P = this.pairs.pairsPerBatch;
    const pairsInStep = P * ga * this.group.worldSize;
    const stats = new PreferenceStepStats();
    for (let k = 0; k < ga; k++) {
      const batch = this.pairs.batch(epoch, s * ga + k); // (2P, T) this rank's pairs
      const ref = needsReference(this.preferenceLoss)
        ? await model.withAdaptersDisabled(() =>
          model.sequenceLossesAsync(batch.tokens, batch.labels)
        )
        : null; // (2P)
      const mb = new PreferenceMicroBatch(this.preferenceLoss, batch.labels, P, pairsInStep, ref);
      const r = await model.weightedLossAndBackwardAsync(batch.tokens, batch.labels, mb.weigh);
      mb.record(r, model.cfg.vocabSize, stats);
    }
    // every rank's sums, for the global loss and metrics
    return PreferenceStepStats.fromValues(await allSumF64(this.backend, stats.values())).stepLoss();
  }
}

/** Run the recipe on this rank. */
export async function main(cfg: LoraDpoDistributedConfig, _launch: LaunchOptions): Promise<void> {
  const recipe = new LoraDpoRecipeDistributed(cfg);
  await recipe.setup();
  await recipe.train();
  await recipe.finish();
}
