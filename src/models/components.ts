/**
 * `_component_` builders of src/models, registered with src/config/registry.ts under
 * torchtune's names (`torchtune.models.llama3_2.llama3_2_1b`, `...lora_llama3_2_1b`, the
 * early short names such as `torchtune.models.llama2_7b`), llama2.c's tinyllamas under
 * `tune.models.llama2c.*`, the generic `tune.models.llama` / `tune.models.lora_llama`, and
 * torchtune's generic Gemma builders `torchtune.models.gemma.gemma` / `lora_gemma`.
 * Each builds a ModelSpec. Imported (for its side effect) by src/components.ts.
 */
import { registerComponent } from "../config/registry.ts";
import type { ParamSchema } from "../config/schema.ts";
import type { RopeLayout } from "../backend/ops.ts";
import { familyComponentName, MODEL_FAMILIES } from "./builders/families.ts";
import { gemma, type GemmaOptions } from "./builders/gemma.ts";
import { gemma2 } from "./builders/gemma2.ts";
import { llama } from "./builders/llama.ts";
import { LORA_DEFAULTS, type LoraArgs, loraConfig } from "./builders/lora.ts";
import type { LlamaConfig } from "./llama/config.ts";
import type { ModelSpec } from "./model_spec.ts";
import { TuneError } from "../errors.ts";

/** torchtune's LoRA builder keys. */
export const LORA_PARAMS: ParamSchema = {
  lora_attn_modules: {
    type: "string[]",
    required: true,
    doc: "attention projections that get adapters: q_proj, k_proj, v_proj, output_proj",
  },
  apply_lora_to_mlp: { type: "bool", default: false, doc: "adapters on the MLP's w1, w2, w3" },
  apply_lora_to_output: { type: "bool", default: false, doc: "adapter on the output projection" },
  lora_rank: { type: "int", default: LORA_DEFAULTS.rank, doc: "rank r of the adapters" },
  lora_alpha: {
    type: "float",
    default: LORA_DEFAULTS.alpha,
    doc: "scale numerator: updates scale by alpha / r",
  },
  lora_dropout: {
    type: "float",
    default: LORA_DEFAULTS.dropout,
    doc: "dropout on the adapter input",
  },
  use_dora: {
    type: "bool",
    default: false,
    doc:
      "DoRA: a trainable magnitude per output row of each adapted layer (torchtune's DoRALinear)",
  },
  quantize_base: {
    type: "bool",
    default: false,
    doc: "QLoRA: keep every decoder linear's base weight in NF4 (torchao's to_nf4)",
  },
};

/** The generic builder's keys (torchtune's llama2 component builder, plus tie/bias/layout). */
export const LLAMA_PARAMS: ParamSchema = {
  vocab_size: { type: "int", required: true, doc: "vocabulary size V" },
  num_layers: { type: "int", required: true, doc: "decoder layers L" },
  num_heads: { type: "int", required: true, doc: "query heads NH" },
  num_kv_heads: { type: "int", default: null, doc: "key/value heads (default num_heads)" },
  embed_dim: { type: "int", required: true, doc: "model width C" },
  intermediate_dim: { type: "int", default: null, doc: "MLP width H (default torchtune's rule)" },
  max_seq_len: { type: "int", required: true, doc: "longest sequence T" },
  norm_eps: { type: "float", default: 1e-5, doc: "RMSNorm epsilon" },
  rope_base: { type: "float", default: 10000, doc: "RoPE theta" },
  tie_word_embeddings: {
    type: "bool",
    default: false,
    doc: "output projection shares the embedding",
  },
  qkv_bias: { type: "bool", default: false, doc: "biases on q/k/v projections (Qwen2)" },
  rope_layout: {
    type: "string",
    default: "half",
    choices: ["half", "interleaved"],
    doc: "rotary layout of freshly built weights (a loaded checkpoint's layout wins)",
  },
  attn_dropout: { type: "float", default: 0.0, doc: "accepted for torchtune configs; must be 0" },
  head_dim: { type: "int", default: null, doc: "head size HS (default embed_dim / num_heads)" },
  qk_norm: { type: "bool", default: false, doc: "per-head RMSNorm on q and k (Qwen3)" },
};

function genericConfig(a: Record<string, unknown>): LlamaConfig {
  if (a.attn_dropout) throw new TuneError(`model.attn_dropout is not supported; set it to 0.0`);
  return modelError(() =>
    llama({
      vocabSize: a.vocab_size as number,
      numLayers: a.num_layers as number,
      numHeads: a.num_heads as number,
      numKvHeads: (a.num_kv_heads as number | null) ?? undefined,
      embedDim: a.embed_dim as number,
      intermediateDim: (a.intermediate_dim as number | null) ?? undefined,
      maxSeqLen: a.max_seq_len as number,
      normEps: a.norm_eps as number,
      ropeBase: a.rope_base as number,
      tieWordEmbeddings: a.tie_word_embeddings as boolean,
      qkvBias: a.qkv_bias as boolean,
      ropeLayout: a.rope_layout as RopeLayout,
      headDim: (a.head_dim as number | null) ?? undefined,
      qkNorm: (a.qk_norm as boolean | undefined) ?? false,
    })
  );
}

/** A model builder and its LoRA twin (which adds LORA_PARAMS and adapters over the same config). */
interface ModelBuilder {
  /** Component name and aliases of the plain builder. */
  name: string;
  aliases?: string[];
  /** Component name and aliases of the LoRA twin. */
  loraName: string;
  loraAliases?: string[];
  /** The ModelSpec name; the twin's is `lora_` + it. */
  id: string;
  doc: string;
  loraDoc: string;
  params: ParamSchema;
  config: (a: Record<string, unknown>) => LlamaConfig;
}

/** Register a model builder and its LoRA twin. */
function registerModel(m: ModelBuilder): void {
  registerComponent<ModelSpec>({
    name: m.name,
    aliases: m.aliases,
    kind: "model",
    doc: m.doc,
    params: m.params,
    build: (a) => ({ name: m.id, config: m.config(a), lora: null }),
  });
  registerComponent<ModelSpec>({
    name: m.loraName,
    aliases: m.loraAliases,
    kind: "model",
    doc: m.loraDoc,
    params: { ...m.params, ...LORA_PARAMS },
    build: (a) => {
      const config = m.config(a);
      return {
        name: `lora_${m.id}`,
        config,
        lora: loraConfig(a as unknown as LoraArgs, config.tiedEmbeddings),
      };
    },
  });
}

/** torchtune's `gemma(...)` component builder keys. */
export const GEMMA_PARAMS: ParamSchema = {
  vocab_size: { type: "int", required: true, doc: "vocabulary size V" },
  num_layers: { type: "int", required: true, doc: "decoder layers L" },
  num_heads: { type: "int", required: true, doc: "query heads NH" },
  head_dim: {
    type: "int",
    required: true,
    doc: "head size HS (need not be embed_dim / num_heads)",
  },
  num_kv_heads: { type: "int", required: true, doc: "key/value heads" },
  embed_dim: { type: "int", required: true, doc: "model width C" },
  intermediate_dim: { type: "int", required: true, doc: "MLP width H" },
  max_seq_len: { type: "int", required: true, doc: "longest sequence T" },
  attn_dropout: { type: "float", default: 0.0, doc: "accepted for torchtune configs; must be 0" },
  norm_eps: { type: "float", default: 1e-6, doc: "RMSNorm epsilon" },
  rope_base: { type: "float", default: 10000, doc: "RoPE theta" },
  norm_embeddings: {
    type: "bool",
    default: true,
    doc: "accepted for torchtune configs; Gemma always scales its embeddings by sqrt(embed_dim)",
  },
};

/** Gemma's builder options from a config section (torchtune's keys). */
function gemmaOptions(a: Record<string, unknown>): GemmaOptions {
  if (a.attn_dropout) throw new TuneError(`model.attn_dropout is not supported; set it to 0.0`);
  return {
    vocabSize: a.vocab_size as number,
    numLayers: a.num_layers as number,
    numHeads: a.num_heads as number,
    headDim: a.head_dim as number,
    numKvHeads: a.num_kv_heads as number,
    embedDim: a.embed_dim as number,
    intermediateDim: a.intermediate_dim as number,
    maxSeqLen: a.max_seq_len as number,
    normEps: a.norm_eps as number,
    ropeBase: a.rope_base as number,
  };
}

/** `build()` as a one-line TuneError naming the model section. */
function modelError<T>(build: () => T): T {
  try {
    return build();
  } catch (e) {
    if (e instanceof TuneError) throw e;
    throw new TuneError(`model: ${(e as Error).message}`);
  }
}

function gemmaConfig(a: Record<string, unknown>): LlamaConfig {
  const o = gemmaOptions(a);
  return modelError(() => gemma(o));
}

/** torchtune's `gemma2(...)` component builder keys: Gemma's plus soft-caps and the window. */
export const GEMMA2_PARAMS: ParamSchema = {
  ...GEMMA_PARAMS,
  hidden_capping_value: {
    type: "float",
    default: 50,
    doc: "attention logit soft-cap (HF attn_logit_softcapping)",
  },
  final_capping_value: {
    type: "float",
    default: 30,
    doc: "output logit soft-cap (HF final_logit_softcapping)",
  },
  sliding_window_size: { type: "int", default: 4096, doc: "window of the even layers" },
  query_pre_attn_scalar: {
    type: "int",
    default: null,
    doc: "attention scale 1/sqrt(this) (null: head_dim)",
  },
};

function gemma2Config(a: Record<string, unknown>): LlamaConfig {
  const o = gemmaOptions(a);
  return modelError(() =>
    gemma2({
      ...o,
      attnSoftcap: a.hidden_capping_value as number,
      finalSoftcap: a.final_capping_value as number,
      slidingWindowSize: a.sliding_window_size as number,
      queryPreAttnScalar: (a.query_pre_attn_scalar as number | null) ?? undefined,
    })
  );
}

/** The generic builders (any size), each with its LoRA twin. */
const GENERIC_MODELS: ModelBuilder[] = [
  {
    name: "tune.models.llama",
    aliases: ["torchtune.models.llama2.llama2"],
    loraName: "tune.models.lora_llama",
    loraAliases: ["torchtune.models.llama2.lora_llama2"],
    id: "llama",
    doc: "Llama-family decoder of any size (generic builder)",
    loraDoc: "Llama-family decoder of any size with LoRA adapters (generic builder)",
    params: LLAMA_PARAMS,
    config: genericConfig,
  },
  {
    name: "torchtune.models.gemma.gemma",
    loraName: "torchtune.models.gemma.lora_gemma",
    id: "gemma",
    doc: "Gemma 1 decoder of any size (generic builder: GeGLU, scaled embeddings, tied output)",
    loraDoc: "Gemma 1 decoder of any size with LoRA adapters (generic builder)",
    params: GEMMA_PARAMS,
    config: gemmaConfig,
  },
  {
    name: "torchtune.models.gemma2.gemma2",
    loraName: "torchtune.models.gemma2.lora_gemma2",
    id: "gemma2",
    doc: "Gemma 2 decoder of any size (generic builder: soft-caps, alternating windows)",
    loraDoc: "Gemma 2 decoder of any size with LoRA adapters (generic builder)",
    params: GEMMA2_PARAMS,
    config: gemma2Config,
  },
];
for (const m of GENERIC_MODELS) registerModel(m);

for (const f of MODEL_FAMILIES) {
  registerModel({
    name: familyComponentName(f, false),
    aliases: f.aliases,
    loraName: familyComponentName(f, true),
    loraAliases: f.aliases?.map((a) => a.replace(/\.([^.]+)$/, ".lora_$1")),
    id: f.name,
    doc: `${f.name} (published architecture)`,
    loraDoc: `${f.name} with LoRA adapters`,
    params: {},
    config: () => f.config(),
  });
}
