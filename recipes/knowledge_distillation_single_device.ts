/**
 * Knowledge distillation into a LoRA student on one device (torchtune's
 * knowledge_distillation_single_device): an entry point of recipes/knowledge_distillation.ts (the
 * distillation task on the fine-tuning recipe for 1..N processes), with its own defaults.
 *
 *   deno task tune run knowledge_distillation_single_device --config tiny/kd_single_device
 *
 * `tune cp knowledge_distillation_single_device` copies recipes/knowledge_distillation.ts.
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { singleDeviceParams } from "../src/training/recipe_params.ts";
import {
  keyAliases as kdAliases,
  main as kdMain,
  params as kdParams,
} from "./knowledge_distillation.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = singleDeviceParams(kdParams, "knowledge_distillation_single_device");

/** The same top-level aliases as LoRA fine-tuning (`lora_rank=4`, ...). */
export const keyAliases = kdAliases;

/** The resolved config of this recipe. */
export type KnowledgeDistillationConfig = ResolvedConfig<typeof params>;

/** Run the recipe. */
export const main = kdMain;
