/**
 * Full fine-tuning on one device (torchtune's full_finetune_single_device): an entry point of
 * recipes/finetune.ts, the one fine-tuning recipe for 1..N processes, with its own defaults.
 *
 *   deno task tune run full_finetune_single_device --config tiny/full_single_device
 *
 * `tune cp full_finetune_single_device` copies recipes/finetune.ts, the whole recipe.
 * In-process use (the demo): `await runFullFinetune(cfg, launch, { onStep, quiet })`.
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { singleDeviceParams } from "../src/training/recipe_params.ts";
import { finetuneMain, finetuneRunner, fullParams } from "./finetune.ts";

const NAME = "full_finetune_single_device";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = singleDeviceParams(fullParams, NAME);

/** This recipe has no top-level alias keys. */
export const keyAliases = {} as const;

/** The resolved config of this recipe. */
export type FullFinetuneConfig = ResolvedConfig<typeof params>;

/** Run the recipe in this process and return what it produced (the demo calls this). */
export const runFullFinetune = finetuneRunner<FullFinetuneConfig>(NAME, "full");

/** Run the recipe. */
export const main = finetuneMain("full");
