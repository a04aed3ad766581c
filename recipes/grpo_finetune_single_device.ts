/**
 * GRPO (full or LoRA, by the model builder) on one device: an entry point of recipes/grpo.ts (the GRPO task on the one
 * fine-tuning recipe, recipes/finetune.ts).
 *
 *   deno task tune run grpo_finetune_single_device --config tiny/grpo_single_device
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { singleDeviceParams } from "../src/training/recipe_params.ts";
import { keyAliases as grpoAliases, main as grpoMain, params as grpoParams } from "./grpo.ts";

export const params = singleDeviceParams(grpoParams, "grpo_finetune_single_device");

export const keyAliases = grpoAliases;

export type GrpoSingleDeviceConfig = ResolvedConfig<typeof params>;

export const main = grpoMain;
