/**
 * LoRA fine-tuning on one device (torchtune's lora_finetune_single_device): an entry point of
 * recipes/finetune.ts, the one fine-tuning recipe for 1..N processes, with its own defaults.
 *
 *   deno task tune run lora_finetune_single_device --config tiny/lora_single_device
 *
 * `tune cp lora_finetune_single_device` copies recipes/finetune.ts, the whole recipe.
 * In-process use (the demo): `await runLoraFinetune(cfg, launch, { onStep, quiet })`.
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { singleDeviceParams } from "../src/training/recipe_params.ts";
import { finetuneMain, finetuneRunner, loraKeyAliases, loraParams } from "./finetune.ts";

const NAME = "lora_finetune_single_device";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = singleDeviceParams(loraParams, NAME);

/** Top-level keys of early torchtune overrides (`lora_rank=4`) and the model keys they set. */
export const keyAliases = loraKeyAliases;

/** The resolved config of this recipe. */
export type LoraFinetuneConfig = ResolvedConfig<typeof params>;

/** Run the recipe in this process and return what it produced (the demo calls this). */
export const runLoraFinetune = finetuneRunner<LoraFinetuneConfig>(NAME, "lora");

/** Run the recipe. */
export const main = finetuneMain("lora");
