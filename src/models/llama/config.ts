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
 * `ropeLayout` says how the q/k weights in memory pair their rotary dimensions:
 * "interleaved" rotates dims (2i, 2i+1) of a head (Meta, llama2.c), "half" rotates i with
 * i + HS/2 (Hugging Face). Tune's canonical in-memory layout is "interleaved": every checkpoint
 * loader (Meta, llama2.c, Hugging Face, PEFT adapters) returns q/k rows, Qwen q/k biases and
 * q/k LoRA B matrices in it, and every writer permutes them to its format's layout. One layout
 * means the model runs the same fp32 operations whatever format it was loaded from, so a
 * llama2.c -> HF -> load round trip gives bitwise-equal logits (the "half" layout sums the
 * q.k products in another order, about 4e-6 off after 4 layers). "half" stays supported by
 * the ops for state dicts that are built in it (e.g. a randomly initialised model).
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
