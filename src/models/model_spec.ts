import type { LlamaConfig } from "./llama/config.ts";

/** Linear layers LoRA can target, torchtune's names. */
export type LoraAttnModule = "q_proj" | "k_proj" | "v_proj" | "output_proj";

/** LoRA settings of a model (torchtune's `lora_*` builder keys). */
export interface LoraConfig {
  /** Attention projections that get adapters. */
  attnModules: LoraAttnModule[];
  /** Adapters on the MLP's w1, w2, w3. */
  applyToMlp: boolean;
  /** Adapter on the final output projection. */
  applyToOutput: boolean;
  rank: number;
  alpha: number;
  dropout: number;
  /** DoRA (torchtune's use_dora): a trainable magnitude per output row of each adapted layer. */
  useDora?: boolean;
  /** QLoRA (torchtune's quantize_base): the decoder linears' base weights are kept in NF4. */
  quantizeBase?: boolean;
}

/** What a `model` component builds: the architecture, plus LoRA settings for LoRA builders. */
export interface ModelSpec {
  /** Builder name, e.g. "llama3_2_1b" (used for messages and checkpoint metadata). */
  name: string;
  config: LlamaConfig;
  lora: LoraConfig | null;
}
