/**
 * Preference fine-tuning (DPO, RSO, SimPO) with LoRA sharded over several processes (torchtune's
 * lora_dpo_distributed): an entry point of recipes/lora_dpo.ts (the preference task on the
 * fine-tuning recipe for 1..N processes), with its own defaults.
 *
 *   deno task tune run --nproc_per_node 2 lora_dpo_distributed --config tiny/lora_dpo_distributed
 *
 * `tune cp lora_dpo_distributed` copies recipes/lora_dpo.ts.
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { distributedParams } from "../src/training/recipe_params.ts";
import { keyAliases as dpoAliases, main as dpoMain, params as dpoParams } from "./lora_dpo.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = distributedParams(dpoParams, "lora_dpo_distributed", "preference pairs");

/** The same top-level aliases as LoRA fine-tuning (`lora_rank=4`, ...). */
export const keyAliases = dpoAliases;

/** The resolved config of this recipe. */
export type LoraDpoDistributedConfig = ResolvedConfig<typeof params>;

/** Run the recipe. */
export const main = dpoMain;
