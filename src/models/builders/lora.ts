/** LoRA builder options (torchtune's `lora_*` keys) -> LoraConfig, with checks. */
import { checkLora } from "../llama/layout.ts";
import type { LoraAttnModule, LoraConfig } from "../model_spec.ts";

/** The `lora_*` keys of a LoRA builder section. */
export interface LoraArgs {
  lora_attn_modules: string[];
  apply_lora_to_mlp?: boolean;
  apply_lora_to_output?: boolean;
  lora_rank?: number;
  lora_alpha?: number;
  lora_dropout?: number;
  use_dora?: boolean;
  quantize_base?: boolean;
}

/** Defaults of the `lora_*` keys (torchtune's LoRA builders). */
export const LORA_DEFAULTS = { rank: 8, alpha: 16, dropout: 0 } as const;

/** Convert LoRA builder keys to a LoraConfig, checked against the model (`checkLora`). */
export function loraConfig(a: LoraArgs, tiedEmbeddings: boolean): LoraConfig {
  const lora: LoraConfig = {
    attnModules: a.lora_attn_modules as LoraAttnModule[],
    applyToMlp: a.apply_lora_to_mlp ?? false,
    applyToOutput: a.apply_lora_to_output ?? false,
    rank: a.lora_rank ?? LORA_DEFAULTS.rank,
    alpha: a.lora_alpha ?? LORA_DEFAULTS.alpha,
    dropout: a.lora_dropout ?? LORA_DEFAULTS.dropout,
    ...(a.use_dora ? { useDora: true } : {}),
    ...(a.quantize_base ? { quantizeBase: true } : {}),
  };
  checkLora(lora, tiedEmbeddings);
  return lora;
}
