/**
 * Knowledge distillation into a LoRA student sharded over several processes (torchtune's
 * knowledge_distillation_distributed): knowledge_distillation_single_device's step on
 * lora_finetune_distributed's FSDP/ZeRO-3 machinery.
 *
 *   deno task tune run --nproc_per_node 2 knowledge_distillation_distributed --config tiny/kd_distributed
 *
 * Each rank holds the whole frozen teacher (inference only) and its shard of the student's
 * adapters and frozen base; it runs the teacher on its share of every global batch, then the
 * student's class + KD loss and backward with every layer group gathered before it runs.
 * Both losses are means over the global batch's counted tokens, so the losses and adapters
 * are those of knowledge_distillation_single_device with batch_size * world size.
 */
import "../src/components.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import type { Batch } from "../src/data/mod.ts";
import type { LlamaModel } from "../src/models/llama/mod.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import { packingOf } from "../src/training/data.ts";
import type { BatchShape, FinetuneHooks } from "../src/training/recipe_api.ts";
import { distillMicroLoss, setupDistillation } from "../src/training/teacher.ts";
import { kdParams } from "./knowledge_distillation_single_device.ts";
import {
  keyAliases as loraKeyAliases,
  type LoraFinetuneDistributedConfig,
  LoraFinetuneRecipeDistributed,
  params as loraParams,
} from "./lora_finetune_distributed.ts";

/** Every top-level key: lora_finetune_distributed's, with the teacher and the KD loss. */
export const params = {
  ...loraParams,
  ...kdParams,
  output_dir: {
    type: "string",
    default: "out/knowledge_distillation_distributed",
    doc: "checkpoints and logs go here",
  },
} satisfies ParamSchema;

/** The same top-level aliases as lora_finetune_distributed (`lora_rank=4`, ...). */
export const keyAliases = loraKeyAliases;

/** The resolved config of this recipe. */
export type KnowledgeDistillationDistributedConfig = ResolvedConfig<typeof params>;

/** The recipe: lora_finetune_distributed with a teacher on every rank and the KD loss. */
export class KnowledgeDistillationRecipeDistributed extends LoraFinetuneRecipeDistributed {
  teacher!: LlamaModel;

  constructor(readonly kdCfg: KnowledgeDistillationDistributedConfig, hooks: FinetuneHooks = {}) {
    super(kdCfg as unknown as LoraFinetuneDistributedConfig, hooks);
  }

  protected override get recipeName(): string {
    return "knowledge_distillation_distributed";
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

  protected override async microBatch(
    batch: Batch,
    labels: Int32Array,
    gradScale: number,
    sums: Record<string, number>,
  ): Promise<number> {
    const r = this.kdCfg.kd_ratio;
    const teacherLogits = this.teacher.forward(batch.tokens, packingOf(batch)); // (B*T, V)
    const out = await this.model.distillLossAndBackwardAsync(
      batch.tokens,
      labels,
      gradScale,
      { teacherLogits, kdRatio: r },
      packingOf(batch),
    );
    return distillMicroLoss(out, r, sums);
  }

  override async finish(): Promise<void> {
    this.teacher?.free();
    await super.finish();
  }
}

/** Run the recipe on this rank. */
export async function main(
  cfg: KnowledgeDistillationDistributedConfig,
  _launch: LaunchOptions,
): Promise<void> {
  const recipe = new KnowledgeDistillationRecipeDistributed(cfg);
  await recipe.setup();
  await recipe.train();
  await recipe.finish();
}
