import type { RopeLayout } from "../../backend/ops.ts";

/** Llama 3.1-style rotary frequency scaling ("rope_type": "llama3" in Hugging Face configs). */
export interface RopeScaling {
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/**
 * Architecture of a Llama-family decoder (Llama 2/3/3.1/3.2, Mistral, Qwen2.5, llama2.c).
 *
 * Parameter names inside tune follow torchtune (shapes in dimension letters of ops.ts,
 * HS = dim / nHeads, KV = nKvHeads * HS):
 *   tok_embeddings.weight            (V, C)
 *   layers.{i}.sa_norm.scale         (C)
 *   layers.{i}.attn.q_proj.weight    (NH*HS, C)   (+ .bias (NH*HS) when qkvBias)
 *   layers.{i}.attn.k_proj.weight    (KV, C)      (+ .bias)
 *   layers.{i}.attn.v_proj.weight    (KV, C)      (+ .bias)
 *   layers.{i}.attn.output_proj.weight (C, NH*HS)
 *   layers.{i}.mlp_norm.scale        (C)
 *   layers.{i}.mlp.w1.weight         (H, C)   gate
 *   layers.{i}.mlp.w2.weight         (C, H)   down
 *   layers.{i}.mlp.w3.weight         (H, C)   up
 *   norm.scale                       (C)
 *   output.weight                    (V, C)   absent when tiedEmbeddings
 * LoRA adds `<module>.lora_a.weight` (r, in) and `<module>.lora_b.weight` (out, r) beside a
 * targeted linear's weight, e.g. layers.0.attn.q_proj.lora_a.weight.
 *
 * `ropeLayout` says how the q/k weights in memory pair their rotary dimensions; loading
 * from Meta/llama2.c gives "interleaved", from Hugging Face "half". Checkpoint writers
 * permute q/k rows when the target format uses the other layout.
 */
export interface LlamaConfig {
  vocabSize: number;
  dim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  hiddenDim: number;
  normEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  ropeLayout: RopeLayout;
  maxSeqLen: number;
  tiedEmbeddings: boolean;
  /** Biases on q/k/v projections (Qwen2). */
  qkvBias: boolean;
}

/** Head size of a config. */
export function headSize(cfg: LlamaConfig): number {
  return cfg.dim / cfg.nHeads;
}
