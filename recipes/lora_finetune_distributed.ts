/**
 * LoRA fine-tuning sharded over several processes (torchtune's lora_finetune_distributed): an
 * entry point of recipes/finetune.ts, the one fine-tuning recipe for 1..N processes, with
 * its own defaults.
 *
 *   deno task tune run --nproc_per_node 2 lora_finetune_distributed --config tiny/lora_distributed
 *
 * `tune cp lora_finetune_distributed` copies recipes/finetune.ts, the whole recipe.
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { distributedParams } from "../src/training/recipe_params.ts";
import { finetuneMain, loraKeyAliases, loraParams } from "./finetune.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = distributedParams(loraParams, "lora_finetune_distributed");

/** Top-level keys of early torchtune overrides (`lora_rank=4`) and the model keys they set. */
export const keyAliases = loraKeyAliases;

/** The resolved config of this recipe. */
export type LoraFinetuneDistributedConfig = ResolvedConfig<typeof params>;

/** Run the recipe on this rank. */
export const main = finetuneMain("lora");
