/** LoRA builder options (torchtune's `lora_*` keys) -> LoraConfig, with checks. */
import { TuneError } from "../../errors.ts";
import type { LoraAttnModule, LoraConfig } from "../model_spec.ts";

const MODULES: readonly LoraAttnModule[] = ["q_proj", "k_proj", "v_proj", "output_proj"];

/** The `lora_*` keys of a LoRA builder section. */
export interface LoraArgs {
  lora_attn_modules: string[];
  apply_lora_to_mlp?: boolean;
  apply_lora_to_output?: boolean;
  lora_rank?: number;
  lora_alpha?: number;
  lora_dropout?: number;
  use_dora?: boolean;
}

/** Check and convert LoRA builder keys. */
export function loraConfig(a: LoraArgs, tiedEmbeddings: boolean): LoraConfig {
  for (const m of a.lora_attn_modules) {
    if (!MODULES.includes(m as LoraAttnModule)) {
      throw new TuneError(
        `model.lora_attn_modules: unknown module ${m}; choose from ${MODULES.join(", ")}`,
      );
    }
  }
  const rank = a.lora_rank ?? 8;
  if (!Number.isInteger(rank) || rank <= 0) {
    throw new TuneError(`model.lora_rank must be a positive integer, got ${rank}`);
  }
  const dropout = a.lora_dropout ?? 0;
  if (dropout < 0 || dropout >= 1) throw new TuneError(`model.lora_dropout must be in [0, 1)`);
  if (a.apply_lora_to_output && tiedEmbeddings) {
    throw new TuneError(
      `model.apply_lora_to_output=True needs an untied output layer; this model ties it to ` +
        `the embeddings, set apply_lora_to_output=False`,
    );
  }
  return {
    attnModules: a.lora_attn_modules as LoraAttnModule[],
    applyToMlp: a.apply_lora_to_mlp ?? false,
    applyToOutput: a.apply_lora_to_output ?? false,
    rank,
    alpha: a.lora_alpha ?? 16,
    dropout,
    ...(a.use_dora ? { useDora: true } : {}),
  };
}
