/**
 * Meta `params.json` <-> LlamaConfig. Meta checkpoints (and llama2.c) use the interleaved
 * rotary layout. params.json does not state the vocabulary or FFN width directly
 * (vocab_size may be -1; hidden = multiple_of-rounded 8/3*dim*ffn_dim_multiplier), so the
 * loader takes both from the tensor shapes.
 */
import { TuneError } from "../errors.ts";
import { headSize, hiddenAct, type LlamaConfig } from "../models/llama/config.ts";

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

/** Meta's FFN width rule (llama/model.py FeedForward). */
export function metaHiddenDim(
  dim: number,
  multipleOf: number,
  ffnMultiplier: number | null,
): number {
  let hidden = Math.trunc((2 * 4 * dim) / 3);
  if (ffnMultiplier !== null && ffnMultiplier !== undefined) {
    hidden = Math.trunc(ffnMultiplier * hidden);
  }
  return multipleOf * Math.trunc((hidden + multipleOf - 1) / multipleOf);
}

/**
 * LlamaConfig from params.json plus the shapes of `tok_embeddings.weight` (V, C) and
 * `layers.0.feed_forward.w1.weight` (H, C). `use_scaled_rope` gives Llama 3.1 scaling with
 * `rope_scaling_factor` (default 8, Llama 3.2's 1B/3B use 32: set it in params.json).
 */
export function llamaConfigFromMeta(
  json: Json,
  shapes: { vocabSize: number; hiddenDim: number; tied: boolean; qkvBias: boolean },
  path: string,
): LlamaConfig {
  for (const k of ["dim", "n_layers", "n_heads"]) {
    if (typeof json[k] !== "number") throw new TuneError(`${path}: missing number ${k}`);
  }
  return {
    vocabSize: shapes.vocabSize,
    dim: json.dim,
    nLayers: json.n_layers,
    nHeads: json.n_heads,
    nKvHeads: json.n_kv_heads ?? json.n_heads,
    hiddenDim: shapes.hiddenDim,
    normEps: json.norm_eps ?? 1e-5,
    ropeTheta: json.rope_theta ?? 10000,
    ropeScaling: json.use_scaled_rope
      ? {
        factor: json.rope_scaling_factor ?? 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 8192,
      }
      : null,
    ropeLayout: "interleaved",
    maxSeqLen: json.max_seq_len ?? 2048,
    tiedEmbeddings: shapes.tied,
    qkvBias: shapes.qkvBias,
  };
}

/** A params.json for `cfg` whose multiple_of / ffn_dim_multiplier reproduce `cfg.hiddenDim`. */
export function metaParamsJson(cfg: LlamaConfig): Json {
  // params.json has no head_dim, activation, embedding scale or norm offset (Gemma)
  if (
    headSize(cfg) !== cfg.dim / cfg.nHeads || cfg.embedScale || cfg.normOffset ||
    hiddenAct(cfg) !== "silu" || cfg.qkNorm || cfg.slidingWindow !== undefined
  ) {
    throw new TuneError(
      `cannot write this model as a Meta checkpoint (params.json has no Gemma, head_dim, q/k norm or sliding window fields); use FullModelHFCheckpointer`,
    );
  }
  let multipleOf = 1;
  let ffn: number | null = null;
  const found = [256, 128, 64, 32, 16, 8, 4, 2, 1].find((m) =>
    metaHiddenDim(cfg.dim, m, null) === cfg.hiddenDim
  );
  if (found) multipleOf = found;
  else {
    const base = Math.trunc((8 * cfg.dim) / 3);
    ffn = cfg.hiddenDim / base;
    for (let i = 0; i < 8 && Math.trunc(ffn * base) < cfg.hiddenDim; i++) ffn += 1e-12;
    if (metaHiddenDim(cfg.dim, 1, ffn) !== cfg.hiddenDim) {
      throw new Error(`cannot express hidden dim ${cfg.hiddenDim} in params.json`);
    }
  }
  const out: Json = {
    dim: cfg.dim,
    n_layers: cfg.nLayers,
    n_heads: cfg.nHeads,
    n_kv_heads: cfg.nKvHeads,
    vocab_size: cfg.vocabSize,
    multiple_of: multipleOf,
    ffn_dim_multiplier: ffn,
    norm_eps: cfg.normEps,
    rope_theta: cfg.ropeTheta,
    max_seq_len: cfg.maxSeqLen,
  };
  if (cfg.ropeScaling) {
    out.use_scaled_rope = true;
    out.rope_scaling_factor = cfg.ropeScaling.factor;
  }
  return out;
}
