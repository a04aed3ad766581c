/**
 * Full fine-tuning sharded over several processes (torchtune's full_finetune_distributed): an
 * entry point of recipes/finetune.ts, the one fine-tuning recipe for 1..N processes, with
 * its own defaults.
 *
 *   deno task tune run --nproc_per_node 2 full_finetune_distributed --config tiny/full_distributed
 *
 * `tune cp full_finetune_distributed` copies recipes/finetune.ts, the whole recipe.
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { distributedParams } from "../src/training/recipe_params.ts";
import { finetuneMain, fullParams } from "./finetune.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = distributedParams(fullParams, "full_finetune_distributed");

/** This recipe has no top-level alias keys. */
export const keyAliases = {} as const;

/** The resolved config of this recipe. */
export type FullFinetuneDistributedConfig = ResolvedConfig<typeof params>;

/** Run the recipe on this rank. */
export const main = finetuneMain("full");
