/**
 * Gemma 2 (torchtune.models.gemma2): Gemma 1's decoder (GeGLU, embeddings times
 * sqrt(embed_dim), 1 + scale norms, tied output, explicit head size) plus soft-capped attention
 * scores and output logits, a sliding window on the even layers (0, 2, ...; the odd ones see
 * the whole sequence), attention scaled by 1/sqrt(query_pre_attn_scalar) and norms after
 * attention and after the MLP (sa_scale, mlp_scale).
 *
 * The soft-caps are Hugging Face's (google/gemma-2-*'s config.json and Gemma2Config):
 * attention 50, final 30. torchtune's fixed-size builders pass them the other way round
 * (hidden_capping_value=30.0 to the attention, final_capping_value=50.0 to the output), which
 * does not match the published checkpoints; tune follows the checkpoints, and a loaded
 * checkpoint's config.json values win anyway (withCheckpointFields).
 */
import type { LlamaConfig } from "../llama/config.ts";
import { gemma, type GemmaOptions } from "./gemma.ts";
import { checkConfig } from "./llama.ts";

/** torchtune's `gemma2(...)` arguments beyond Gemma 1's (camelCase). */
export interface Gemma2Options extends GemmaOptions {
  /** Attention logit soft-cap (HF attn_logit_softcapping; default 50). */
  attnSoftcap?: number;
  /** Final logit soft-cap (HF final_logit_softcapping; default 30). */
  finalSoftcap?: number;
  /** Sliding window of the even layers (default 4096). */
  slidingWindowSize?: number;
  /** Attention scale 1/sqrt(this) (default head_dim). */
  queryPreAttnScalar?: number;
}

/** LlamaConfig of a Gemma 2 decoder. */
export function gemma2(o: Gemma2Options): LlamaConfig {
  const cfg: LlamaConfig = {
    ...gemma(o),
    slidingWindow: o.slidingWindowSize ?? 4096,
    windowLayers: "even",
    attnSoftcap: o.attnSoftcap ?? 50,
    finalSoftcap: o.finalSoftcap ?? 30,
    queryPreAttnScalar: o.queryPreAttnScalar ?? o.headDim,
    postNorms: true,
  };
  checkConfig(cfg);
  return cfg;
}

const COMMON = { vocabSize: 256000, maxSeqLen: 8192, normEps: 1e-6 };

/** torchtune's gemma2_2b: 26 layers, width 2304, 8 heads of 256 sharing 4 key/value heads. */
export function gemma2_2b(): LlamaConfig {
  return gemma2({
    ...COMMON,
    numLayers: 26,
    numHeads: 8,
    headDim: 256,
    numKvHeads: 4,
    embedDim: 2304,
    intermediateDim: 9216,
  });
}

/** torchtune's gemma2_9b: 42 layers, width 3584, 16 heads of 256, 8 key/value heads. */
export function gemma2_9b(): LlamaConfig {
  return gemma2({
    ...COMMON,
    numLayers: 42,
    numHeads: 16,
    headDim: 256,
    numKvHeads: 8,
    embedDim: 3584,
    intermediateDim: 14336,
  });
}

/** torchtune's gemma2_27b: 46 layers, width 4608, 32 heads of 128, scale 1/sqrt(144). */
export function gemma2_27b(): LlamaConfig {
  return gemma2({
    ...COMMON,
    numLayers: 46,
    numHeads: 32,
    headDim: 128,
    numKvHeads: 16,
    embedDim: 4608,
    intermediateDim: 36864,
    queryPreAttnScalar: 144,
  });
}
