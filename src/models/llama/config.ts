import { type AttentionVariant, plainAttention, type RopeLayout } from "../../backend/ops.ts";
import type { HiddenAct } from "../../modules/feed_forward.ts";
import type { RopeScaling } from "../../modules/rope.ts";

export type { HiddenAct, RopeScaling };

/**
 * Architecture of a Llama-family decoder (Llama 2/3/3.1/3.2, Mistral, Qwen2.5, llama2.c).
 *
 * Parameter names inside tune follow torchtune (shapes in dimension letters of ops.ts,
 * HS = headSize(cfg) (dim / nHeads unless `headDim` is set), KV = nKvHeads * HS):
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
  /**
   * Explicit head size HS when it is not dim / nHeads (Gemma 7B: 3072 / 16 heads of 256).
   * Absent: dim / nHeads.
   */
  headDim?: number;
  /** MLP activation on the gate: "silu" (SwiGLU, default) or "gelu_tanh" (Gemma's GeGLU). */
  hiddenAct?: HiddenAct;
  /** Multiply token embeddings by sqrt(dim) before the first layer (Gemma). Default false. */
  embedScale?: boolean;
  /**
   * Added to every RMSNorm scale when it is applied: out = norm(x) * (normOffset + scale).
   * Gemma stores zero-centred scales and uses 1 (GemmaRMSNorm); default 0.
   */
  normOffset?: number;
  /**
   * Sliding-window attention (Mistral, Phi-3 `sliding_window`, Gemma 2's local layers): a
   * token at position p sees only keys p - W + 1..p.
   */
  slidingWindow?: number;
  /**
   * Which layers the window applies to: "all" (Mistral, default) or "even" (Gemma 2: layers
   * 0, 2, 4, ... are local, the odd ones global; HF's layer_types).
   */
  windowLayers?: "all" | "even";
  /** Attention logit soft-cap c (Gemma 2 `attn_logit_softcapping`): c * tanh(score / c). */
  attnSoftcap?: number;
  /** Final logit soft-cap c (Gemma 2 `final_logit_softcapping`): logits = c * tanh(logits / c). */
  finalSoftcap?: number;
  /** Attention scale 1/sqrt(queryPreAttnScalar) instead of 1/sqrt(HS) (Gemma 2). */
  queryPreAttnScalar?: number;
  /**
   * Norms after attention and after the MLP too (Gemma 2): h = x + sa_scale(attn(sa_norm(x))),
   * y = h + mlp_scale(mlp(mlp_norm(h))); layers.{i}.sa_scale.scale and mlp_scale.scale (C).
   */
  postNorms?: boolean;
  /**
   * Per-head RMSNorm on q and k after their projections, before rope (Qwen3's q_norm and
   * k_norm): layers.{i}.attn.q_norm.scale (HS) and k_norm.scale (HS), eps normEps.
   */
  qkNorm?: boolean;
  /**
   * Rotary embedding on the first floor(HS * factor) dims of each head only, the rest passed
   * through (Hugging Face `partial_rotary_factor`, Phi-4-mini 0.75). Absent: 1 (all dims).
   */
  partialRotaryFactor?: number;
}

/** The sizes of a config: positive integers that fix every parameter's shape. */
export const SIZE_FIELDS = [
  "vocabSize",
  "dim",
  "nLayers",
  "nHeads",
  "nKvHeads",
  "hiddenDim",
] as const;

/**
 * The config a recipe builds its model from: the builder's architecture plus what only the
 * loaded checkpoint knows, its rotary layout and its sliding window (Mistral's
 * `sliding_window`), so neither is silently dropped.
 */
export function withCheckpointFields(builder: LlamaConfig, checkpoint: LlamaConfig): LlamaConfig {
  const out: LlamaConfig = { ...builder, ropeLayout: checkpoint.ropeLayout };
  if (checkpoint.slidingWindow !== undefined) out.slidingWindow = checkpoint.slidingWindow;
  if (checkpoint.partialRotaryFactor !== undefined) {
    out.partialRotaryFactor = checkpoint.partialRotaryFactor;
  }
  if (checkpoint.windowLayers !== undefined) out.windowLayers = checkpoint.windowLayers;
  for (const key of ["attnSoftcap", "finalSoftcap", "queryPreAttnScalar"] as const) {
    if (checkpoint[key] !== undefined) out[key] = checkpoint[key];
  }
  return out;
}

/**
 * The attention variant of layer `i` (its window, soft-cap and scale), or null when the
 * layer's attention is the plain causal one.
 */
export function layerAttention(cfg: LlamaConfig, i: number): AttentionVariant | null {
  const v: AttentionVariant = {};
  const windowed = (cfg.windowLayers ?? "all") === "all" || i % 2 === 0;
  if (cfg.slidingWindow !== undefined && windowed) v.window = cfg.slidingWindow;
  if (cfg.attnSoftcap) v.softcap = cfg.attnSoftcap;
  if (cfg.queryPreAttnScalar !== undefined) v.scale = 1 / Math.sqrt(cfg.queryPreAttnScalar);
  return plainAttention(v) ? null : v;
}

/** True when some layer's attention has a window, soft-cap or scale (no fused decode). */
export function hasAttentionVariant(cfg: LlamaConfig): boolean {
  for (let i = 0; i < cfg.nLayers; i++) if (layerAttention(cfg, i) !== null) return true;
  return false;
}

/** Head size of a config. */
export function headSize(cfg: LlamaConfig): number {
  return cfg.headDim ?? cfg.dim / cfg.nHeads;
}

/** Rotated dims of each head: floor(HS * partialRotaryFactor) as transformers computes it (HS when unset). */
export function rotaryDims(cfg: LlamaConfig): number {
  const hs = headSize(cfg);
  return cfg.partialRotaryFactor === undefined ? hs : Math.floor(hs * cfg.partialRotaryFactor);
}

/** The MLP activation of a config (default "silu"). */
export function hiddenAct(cfg: LlamaConfig): HiddenAct {
  return cfg.hiddenAct ?? "silu";
}

/**
 * The constant the token embeddings are multiplied by (1 when `embedScale` is off):
 * sqrt(dim) rounded to the activation dtype, as torchtune's GemmaNormEmbeddings and
 * Hugging Face's GemmaModel do (`torch.tensor(dim ** 0.5, dtype=x.dtype)`): fp32 for fp32
 * activations, bf16 (e.g. sqrt(3072) = 55.43 -> 55.5) for bf16 ones.
 */
export function embedScaleValue(cfg: LlamaConfig, dtype: "f32" | "bf16"): number {
  if (!cfg.embedScale) return 1;
  const f = Math.fround(Math.sqrt(cfg.dim));
  if (dtype === "f32") return f;
  // round to nearest even at bf16's 8-bit mantissa
  const u = new Uint32Array(new Float32Array([f]).buffer)[0];
  const r = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000;
  return new Float32Array(new Uint32Array([r >>> 0]).buffer)[0];
}
