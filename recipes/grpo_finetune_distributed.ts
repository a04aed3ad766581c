/**
 * GRPO (full or LoRA, by the model builder) sharded over processes (ZeRO-3): an entry point of recipes/grpo.ts. Each
 * rank samples its share of a round's prompts (batch_size counts them over all ranks), so
 * 2 ranks log one device's losses for the same config.
 *
 *   deno task tune run --nproc_per_node 2 grpo_finetune_distributed --config tiny/grpo_single_device
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { distributedParams } from "../src/training/recipe_params.ts";
import { keyAliases as grpoAliases, main as grpoMain, params as grpoParams } from "./grpo.ts";

export const params = {
  ...distributedParams(grpoParams, "grpo_finetune_distributed"),
  batch_size: {
    type: "int",
    default: 2,
    doc: "prompts per generation round over all ranks (a multiple of the ranks)",
  },
} as const;

export const keyAliases = grpoAliases;

export type GrpoDistributedConfig = ResolvedConfig<typeof params>;

export const main = grpoMain;
