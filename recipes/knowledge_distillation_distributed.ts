/**
 * Knowledge distillation into a LoRA student sharded over several processes (torchtune's
 * knowledge_distillation_distributed): an entry point of recipes/knowledge_distillation.ts (the
 * distillation task on the fine-tuning recipe for 1..N processes), with its own defaults.
 *
 *   deno task tune run --nproc_per_node 2 knowledge_distillation_distributed --config tiny/kd_distributed
 *
 * `tune cp knowledge_distillation_distributed` copies recipes/knowledge_distillation.ts.
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { distributedParams } from "../src/training/recipe_params.ts";
import {
  keyAliases as kdAliases,
  main as kdMain,
  params as kdParams,
} from "./knowledge_distillation.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = distributedParams(kdParams, "knowledge_distillation_distributed");

/** The same top-level aliases as LoRA fine-tuning (`lora_rank=4`, ...). */
export const keyAliases = kdAliases;

/** The resolved config of this recipe. */
export type KnowledgeDistillationDistributedConfig = ResolvedConfig<typeof params>;

/** Run the recipe. */
export const main = kdMain;
