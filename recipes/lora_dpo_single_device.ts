/**
 * Preference fine-tuning (DPO, RSO, SimPO) with LoRA on one device (torchtune's
 * lora_dpo_single_device): an entry point of recipes/lora_dpo.ts (the preference task on the
 * fine-tuning recipe for 1..N processes), with its own defaults.
 *
 *   deno task tune run lora_dpo_single_device --config tiny/lora_dpo_single_device
 *
 * `tune cp lora_dpo_single_device` copies recipes/lora_dpo.ts.
 */
import type { ResolvedConfig } from "../src/config/schema.ts";
import { singleDeviceParams } from "../src/training/recipe_params.ts";
import { keyAliases as dpoAliases, main as dpoMain, params as dpoParams } from "./lora_dpo.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = singleDeviceParams(dpoParams, "lora_dpo_single_device");

/** The same top-level aliases as LoRA fine-tuning (`lora_rank=4`, ...). */
export const keyAliases = dpoAliases;

/** The resolved config of this recipe. */
export type LoraDpoConfig = ResolvedConfig<typeof params>;

/** Run the recipe. */
export const main = dpoMain;
