/**
 * llama.cpp's names for tune's model families: one row per family (add a family = add a row).
 *
 * A row says which Hugging Face architectures it covers, llama.cpp's architecture name (the
 * prefix of its metadata keys), how q/k rows must lie in the file, which tensors are stored
 * fused, and what else differs. Tensor names follow llama.cpp's gguf-py constants
 * (`token_embd`, `blk.N.attn_q`, ...). Rotary layout: llama.cpp's "llama" architecture rotates
 * adjacent pairs (rope type NORM), so its q/k rows are Meta's "interleaved" order (Hugging Face
 * files are permuted back, as convert_hf_to_gguf.py does); qwen2/3, gemma/gemma2 and phi3 rotate halves
 * (rope type NEOX) and keep Hugging Face's "half" order.
 */
import type { RopeLayout } from "../backend/ops.ts";
import type { LlamaConfig } from "../models/llama/config.ts";

/** One GGUF tensor made of several tune tensors stacked along rows. */
export interface FusedTensor {
  /** GGUF layer-local name, e.g. `attn_qkv.weight`. */
  gguf: string;
  /** tune layer-local names, in stacking order. */
  parts: string[];
}

/** A family's GGUF conventions. */
export interface GgufFamily {
  /** tune's name of the family (torchtune's model_type where there is one). */
  name: string;
  /** Hugging Face `architectures[0]` values of this family. */
  hfArchitectures: string[];
  /** llama.cpp's `general.architecture`. */
  arch: string;
  /** q/k row order llama.cpp expects. */
  ropeLayout: RopeLayout;
  /** Layer tensors stored fused in GGUF (Phi-3's qkv and gate_up). */
  fused: FusedTensor[];
  /**
   * Architecture flags of tune's config that the GGUF architecture implies (Gemma: GeGLU,
   * scaled embeddings, 1 + scale norms). GGUF stores each norm's effective multiplier
   * (scale + normOffset), as llama.cpp multiplies by the stored weight.
   */
  tuneConfig: Partial<LlamaConfig>;
  /** `tokenizer.ggml.pre` for a byte-level BPE vocabulary of this family. */
  bpePre: string;
}

/** tune top-level name -> GGUF name (all families). */
export const TOP_TENSORS: Readonly<Record<string, string>> = {
  "tok_embeddings.weight": "token_embd.weight",
  "norm.scale": "output_norm.weight",
  "output.weight": "output.weight",
};

/** tune layer-local name -> GGUF layer-local name (`layers.N.` -> `blk.N.`), all families. */
export const LAYER_TENSORS: Readonly<Record<string, string>> = {
  "sa_norm.scale": "attn_norm.weight",
  "attn.q_proj.weight": "attn_q.weight",
  "attn.k_proj.weight": "attn_k.weight",
  "attn.v_proj.weight": "attn_v.weight",
  "attn.q_proj.bias": "attn_q.bias",
  "attn.k_proj.bias": "attn_k.bias",
  "attn.v_proj.bias": "attn_v.bias",
  "attn.output_proj.weight": "attn_output.weight",
  "mlp_norm.scale": "ffn_norm.weight",
  "mlp.w1.weight": "ffn_gate.weight",
  "mlp.w2.weight": "ffn_down.weight",
  "mlp.w3.weight": "ffn_up.weight",
  "attn.q_norm.scale": "attn_q_norm.weight", // Qwen3's per-head q/k norms
  "attn.k_norm.scale": "attn_k_norm.weight",
  "sa_scale.scale": "post_attention_norm.weight", // Gemma 2's norms after attention and MLP
  "mlp_scale.scale": "post_ffw_norm.weight",
};

/** Every family tune exports, one row each. */
export const GGUF_FAMILIES: readonly GgufFamily[] = [
  {
    name: "llama", // Llama 2, 3, 3.1, 3.2, llama2.c, and Mistral (llama.cpp runs Mistral as llama)
    hfArchitectures: ["LlamaForCausalLM", "MistralForCausalLM"],
    arch: "llama",
    ropeLayout: "interleaved",
    fused: [],
    tuneConfig: {},
    bpePre: "llama-bpe",
  },
  {
    name: "qwen2",
    hfArchitectures: ["Qwen2ForCausalLM"],
    arch: "qwen2",
    ropeLayout: "half",
    fused: [],
    tuneConfig: {},
    bpePre: "qwen2",
  },
  {
    name: "qwen3",
    hfArchitectures: ["Qwen3ForCausalLM"],
    arch: "qwen3",
    ropeLayout: "half",
    fused: [],
    tuneConfig: { qkNorm: true },
    bpePre: "qwen2",
  },
  {
    name: "gemma",
    hfArchitectures: ["GemmaForCausalLM"],
    arch: "gemma",
    ropeLayout: "half",
    fused: [],
    tuneConfig: { hiddenAct: "gelu_tanh", embedScale: true, normOffset: 1 },
    bpePre: "default",
  },
  {
    // soft-caps and the window go in gemma2.* metadata (ggufModelMetadata); llama.cpp scales
    // attention by 1/sqrt(head_dim) (1/sqrt(dim/heads) for the 46-layer 27B)
    name: "gemma2",
    hfArchitectures: ["Gemma2ForCausalLM"],
    arch: "gemma2",
    ropeLayout: "half",
    fused: [],
    tuneConfig: {
      hiddenAct: "gelu_tanh",
      embedScale: true,
      normOffset: 1,
      postNorms: true,
      windowLayers: "even",
    },
    bpePre: "default",
  },
  {
    name: "phi3",
    hfArchitectures: ["Phi3ForCausalLM"],
    arch: "phi3",
    ropeLayout: "half",
    fused: [
      {
        gguf: "attn_qkv.weight",
        parts: ["attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight"],
      },
      { gguf: "ffn_up.weight", parts: ["mlp.w1.weight", "mlp.w3.weight"] },
    ],
    tuneConfig: {},
    bpePre: "default",
  },
];

/** The family of a Hugging Face architecture, or undefined. */
export function familyOfHfArchitecture(arch: string): GgufFamily | undefined {
  return GGUF_FAMILIES.find((f) => f.hfArchitectures.includes(arch));
}

/** The family of a GGUF `general.architecture`, or undefined. */
export function familyOfGgufArch(arch: string): GgufFamily | undefined {
  return GGUF_FAMILIES.find((f) => f.arch === arch);
}

/** Whether a tune name is an RMSNorm scale. */
export function isNormScale(tuneName: string): boolean {
  return /(norm|_scale)\.scale$/.test(tuneName); // sa_norm, ..., Gemma 2's sa_scale, mlp_scale
}

/** llama.cpp's attention scale of a Gemma 2 model: query_pre_attn_scalar it can express. */
export function gemma2LlamaCppScalar(cfg: LlamaConfig, headDim: number): number {
  return cfg.nLayers === 46 ? cfg.dim / cfg.nHeads : headDim;
}
