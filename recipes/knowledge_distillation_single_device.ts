/**
 * Knowledge distillation into a LoRA student on one device (torchtune's
 * knowledge_distillation_single_device): a frozen teacher (e.g. Llama 3.1 8B) and a
 * student with LoRA adapters (e.g. Llama 3.2 1B) that share a tokenizer.
 *
 *   deno task tune run knowledge_distillation_single_device --config tiny/kd_single_device
 *
 * Each micro-batch runs the teacher forward (inference only, no gradients), then the
 * student's forward and backward with loss = (1 - kd_ratio) * class loss + kd_ratio * KD loss,
 * both means over the step's counted tokens; the KD loss of a token is torchtune's
 * ForwardKLLoss, -sum_v softmax(teacher)_v log softmax(student)_v. One fused op
 * (`distillCrossEntropy`) gives both losses and the student's logits gradient.
 *
 * Everything else (student checkpoints in PEFT and merged form, exact resume, metrics, the
 * scheduler) is lora_finetune_single_device's. Extra metrics per step: class_loss, kd_loss.
 */
import "../src/components.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import type { Batch } from "../src/data/mod.ts";
import type { LlamaModel } from "../src/models/llama/mod.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import { packingOf } from "../src/training/data.ts";
import type { BatchShape, FinetuneHooks, FinetuneResult } from "../src/training/recipe_api.ts";
import { distillMicroLoss, setupDistillation } from "../src/training/teacher.ts";
import {
  keyAliases as loraKeyAliases,
  type LoraFinetuneConfig,
  LoraFinetuneRecipeSingleDevice,
  params as loraParams,
  runRecipe,
} from "./lora_finetune_single_device.ts";

/** The distillation keys (torchtune's), shared with knowledge_distillation_distributed. */
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

/** Every top-level key: lora_finetune_single_device's, with the teacher and the KD loss. */
export const params = {
  ...loraParams,
  ...kdParams,
  output_dir: {
    type: "string",
    default: "out/knowledge_distillation_single_device",
    doc: "checkpoints and logs go here",
  },
} satisfies ParamSchema;

/** The same top-level aliases as lora_finetune_single_device (`lora_rank=4`, ...). */
export const keyAliases = loraKeyAliases;

/** The resolved config of this recipe. */
export type KnowledgeDistillationConfig = ResolvedConfig<typeof params>;

/** The recipe: lora_finetune_single_device with a teacher and the distillation loss. */
export class KnowledgeDistillationRecipeSingleDevice extends LoraFinetuneRecipeSingleDevice {
  teacher!: LlamaModel;

  constructor(readonly kdCfg: KnowledgeDistillationConfig, hooks: FinetuneHooks = {}) {
    super(kdCfg as unknown as LoraFinetuneConfig, hooks);
  }

  protected override get recipeName(): string {
    return "knowledge_distillation_single_device";
  }

  protected override async setupLossAndData(spec: ModelSpec): Promise<BatchShape> {
    const shape = await super.setupLossAndData(spec);
    const cfg = this.kdCfg;
    this.teacher = setupDistillation(
      this.backend,
      cfg,
      spec,
      shape,
      this.seed,
      this.loss.ignoreIndex,
    );
    return shape;
  }

  protected override microBatch(
    batch: Batch,
    labels: Int32Array,
    gradScale: number,
    sums: Record<string, number>,
  ): number {
    const r = this.kdCfg.kd_ratio;
    const teacherLogits = this.teacher.forward(batch.tokens, packingOf(batch)); // (B*T, V)
    const out = this.model.distillLossAndBackward(
      batch.tokens,
      labels,
      gradScale,
      { teacherLogits, kdRatio: r },
      packingOf(batch),
    );
    return distillMicroLoss(out, r, sums);
  }
}

/** Run the recipe in this process and return what it produced. */
export async function runKnowledgeDistillation(
  cfg: KnowledgeDistillationConfig,
  _launch: LaunchOptions,
  hooks: FinetuneHooks = {},
): Promise<FinetuneResult> {
  const recipe = new KnowledgeDistillationRecipeSingleDevice(cfg, hooks);
  try {
    return await runRecipe(recipe);
  } finally {
    recipe.teacher?.free();
  }
}

/** Run the recipe. */
export async function main(cfg: KnowledgeDistillationConfig, launch: LaunchOptions): Promise<void> {
  const r = await runKnowledgeDistillation(cfg, launch);
  r.model.free();
}
