/**
 * Preference fine-tuning with LoRA on one or more processes (torchtune's
 * lora_dpo_single_device and lora_dpo_distributed are the entry points): DPO, RSO (hinge)
 * or SimPO on pairs of chosen and rejected conversations.
 *
 *   deno task tune run lora_dpo_single_device --config tiny/lora_dpo_single_device
 *   deno task tune run --nproc_per_node 2 lora_dpo_distributed --config tiny/lora_dpo_distributed
 *
 * This file is the preference task: the pairs (the data transform) and the preference loss
 * head, passed to the fine-tuning recipe (recipes/finetune.ts), which does everything else
 * (setup, the loop, PEFT and merged checkpoints, exact resume, metrics, sharding).
 *
 * The policy is the LoRA model; the reference is the same model with its adapters switched
 * off (the frozen base, torchtune's disable_adapter), so no second copy of the weights
 * exists. Each micro-batch of P pairs runs as (2P, T) sequences, chosen then rejected: one
 * no-gradient forward of the reference, then one forward and backward of the policy in
 * which each sequence's token losses carry the weight the preference loss gives that
 * sequence, so the gradients are those of the mean pair loss over the step's pairs of all
 * ranks, with no extra forward. Pair losses are independent, so each rank weighs its own.
 * Metrics per step: loss, lr, grad_norm, tokens, tokens_per_s and, averaged over the step's
 * pairs, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
 * log_probs/chosen, log_probs/rejected, logits/chosen and logits/rejected (the mean logit
 * over the positions that count in the loss, as TRL logs it).
 */
import "../src/components.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import { needsReference } from "../src/rlhf/preference_loss.ts";
import { PreferenceMicroBatch, PreferenceStepStats } from "../src/rlhf/preference_step.ts";
import { allSum } from "../src/training/parallel.ts";
import { withoutKeys } from "../src/training/recipe_params.ts";
import { VALIDATION_KEYS } from "../src/training/validation.ts";
import { type PreferenceKeys, setupPreferenceTraining } from "../src/training/preference_data.ts";
import type { FinetuneHooks, FinetuneResult } from "../src/training/recipe_api.ts";
import type { TaskBuilder } from "../src/training/tasks.ts";
import {
  launchedName,
  loraKeyAliases,
  loraParams,
  type RecipeKeys,
  runFinetune,
} from "./finetune.ts";

// validation during training scores SFT data; torchtune's DPO recipes have none either
const loraKeys = withoutKeys(loraParams, VALIDATION_KEYS);

/** Every top-level key: LoRA fine-tuning's, with preference data and loss. */
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
  output_dir: { type: "string", default: "out/lora_dpo", doc: "checkpoints and logs go here" },
} satisfies ParamSchema;

/** The same top-level aliases as LoRA fine-tuning (`lora_rank=4`, ...). */
export const keyAliases = loraKeyAliases;

/** The resolved config of this recipe. */
export type LoraDpoConfig = ResolvedConfig<typeof params>;

/** The preference task: this rank's pairs and the preference loss head. */
export function preferenceTask(keys: PreferenceKeys): TaskBuilder {
  return async ({ rt, tokenizer, spec, seed }) => {
    const p = await setupPreferenceTraining(keys, tokenizer, spec, seed, rt.rank, rt.worldSize);
    const P = p.pairs.pairsPerBatch;
    return {
      shape: p.shape, // (2P, T): chosen rows, then rejected rows
      validation: null,
      head: (model, calls) => ({
        async step(epoch, s, ga) {
          const stats = new PreferenceStepStats();
          for (let k = 0; k < ga; k++) {
            const batch = p.pairs.batch(epoch, s * ga + k); // (2P, T) this rank's pairs
            // reference: the frozen base (adapters off), no gradients, no dropout
            const ref = needsReference(p.loss)
              ? await model.withAdaptersDisabled(() =>
                calls.sequenceLosses(batch.tokens, batch.labels)
              )
              : null; // (2P)
            const pairsInStep = P * ga * rt.worldSize;
            const mb = new PreferenceMicroBatch(p.loss, batch.labels, P, pairsInStep, ref);
            const r = await calls.weightedLossAndBackward(batch.tokens, batch.labels, mb.weigh);
            mb.record(r, model.cfg.vocabSize, stats);
          }
          if (!rt.sharded) return stats.stepLoss();
          // every rank's sums, for the global loss and metrics
          return PreferenceStepStats.fromValues(await allSum(rt, stats.values())).stepLoss();
        },
        free() {},
      }),
    };
  };
}

/** Run the recipe in this process and return what it produced. */
export async function runLoraDpo(
  cfg: RecipeKeys & PreferenceKeys,
  opts: { name: string; launch: LaunchOptions; hooks?: FinetuneHooks },
): Promise<FinetuneResult & { exitCode: number }> {
  return await runFinetune(cfg, { ...opts, method: "lora", task: preferenceTask(cfg) });
}

/** Run the recipe on this rank; exit 130/143 after a stop request. */
export async function main(cfg: RecipeKeys & PreferenceKeys, launch: LaunchOptions) {
  const r = await runLoraDpo(cfg, { name: launchedName(launch, "lora_dpo"), launch });
  r.model.free();
  if (r.exitCode) Deno.exit(r.exitCode);
}
