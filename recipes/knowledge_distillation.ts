/**
 * Knowledge distillation into a LoRA student on one or more processes (torchtune's
 * knowledge_distillation_single_device and knowledge_distillation_distributed are the entry
 * points): a frozen teacher (e.g. Llama 3.1 8B) and a student with LoRA adapters (e.g.
 * Llama 3.2 1B) that share a tokenizer.
 *
 *   deno task tune run knowledge_distillation_single_device --config tiny/kd_single_device
 *   deno task tune run --nproc_per_node 2 knowledge_distillation_distributed --config tiny/kd_distributed
 *
 * This file is the distillation task: the supervised data and a loss head with a teacher,
 * passed to the fine-tuning recipe (recipes/finetune.ts), which does everything else
 * (setup, the loop, student checkpoints in PEFT and merged form, exact resume, metrics,
 * sharding).
 *
 * Each micro-batch runs the teacher forward (inference only, no gradients; every rank holds
 * the whole teacher), then the student's forward and backward with loss = (1 - kd_ratio) *
 * class loss + kd_ratio * KD loss, both means over the global step's counted tokens; the KD
 * loss of a token is torchtune's ForwardKLLoss, -sum_v softmax(teacher)_v log
 * softmax(student)_v. One fused op gives both losses and the student's logits gradient.
 * Extra metrics per step: class_loss, kd_loss.
 */
import "../src/components.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import { packingOf } from "../src/training/data.ts";
import type { FinetuneHooks, FinetuneResult } from "../src/training/recipe_api.ts";
import { setupSftData, sftHead, type SftKeys, type TaskBuilder } from "../src/training/tasks.ts";
import {
  type DistillationKeys,
  distillMicroLoss,
  setupDistillation,
} from "../src/training/teacher.ts";
import {
  launchedName,
  loraKeyAliases,
  loraParams,
  type RecipeKeys,
  runFinetune,
} from "./finetune.ts";

/** The distillation keys (torchtune's). */
export const kdParams = {
  teacher_model: {
    type: "component",
    kind: "model",
    required: true,
    doc: "the teacher's model builder (a full model with the student's vocabulary)",
  },
  teacher_checkpointer: {
    type: "component",
    kind: "checkpointer",
    default: null,
    doc: "reads the teacher's weights (needed unless teacher_model_init=random)",
  },
  teacher_model_init: {
    type: "string",
    default: "checkpoint",
    choices: ["checkpoint", "random"],
    doc: "checkpoint: the teacher's weights from teacher_checkpointer; random: seeded fresh " +
      "weights (tiny test models only)",
  },
  kd_loss: {
    type: "component",
    kind: "kd_loss",
    default: null,
    doc: "distillation loss (null: torchtune.modules.loss.ForwardKLLoss)",
  },
  kd_ratio: {
    type: "float",
    default: 0.5,
    doc: "weight of the KD loss: loss = (1 - kd_ratio) * class loss + kd_ratio * KD loss",
  },
} satisfies ParamSchema;

/** Every top-level key: LoRA fine-tuning's, with the teacher and the KD loss. */
export const params = {
  ...loraParams,
  ...kdParams,
  output_dir: {
    type: "string",
    default: "out/knowledge_distillation",
    doc: "checkpoints and logs go here",
  },
} satisfies ParamSchema;

/** The same top-level aliases as LoRA fine-tuning (`lora_rank=4`, ...). */
export const keyAliases = loraKeyAliases;

/** The resolved config of this recipe. */
export type KnowledgeDistillationConfig = ResolvedConfig<typeof params>;

/** The distillation task: the supervised data, and a head that runs the teacher first. */
export function distillationTask(keys: SftKeys & DistillationKeys): TaskBuilder {
  return async (ctx) => {
    const sft = await setupSftData(keys, ctx);
    const r = keys.kd_ratio;
    return {
      shape: sft.shape,
      validation: sft.validation,
      head(_model, calls) {
        // the teacher, once the student's loss and batch shape are known (checked against them)
        const teacher = setupDistillation(
          ctx.rt.backend,
          keys,
          ctx.spec,
          sft.shape,
          ctx.seed,
          sft.loss.ignoreIndex,
        );
        return {
          step: sftHead(ctx.rt, sft, async (batch, labels, scale, sums) => {
            const teacherLogits = teacher.forward(batch.tokens, packingOf(batch)); // (B*T, V)
            const out = await calls.distillLossAndBackward(
              batch.tokens,
              labels,
              scale,
              { teacherLogits, kdRatio: r },
              packingOf(batch),
            );
            return distillMicroLoss(out, r, sums);
          }),
          free: () => teacher.free(),
        };
      },
    };
  };
}

/** Run the recipe in this process and return what it produced. */
export async function runKnowledgeDistillation(
  cfg: RecipeKeys & SftKeys & DistillationKeys,
  opts: { name: string; launch: LaunchOptions; hooks?: FinetuneHooks },
): Promise<FinetuneResult & { exitCode: number }> {
  return await runFinetune(cfg, { ...opts, method: "lora", task: distillationTask(cfg) });
}

/** Run the recipe on this rank; exit 130/143 after a stop request. */
export async function main(cfg: RecipeKeys & SftKeys & DistillationKeys, launch: LaunchOptions) {
  const name = launchedName(launch, "knowledge_distillation");
  const r = await runKnowledgeDistillation(cfg, { name, launch });
  r.model.free();
  if (r.exitCode) Deno.exit(r.exitCode);
}
