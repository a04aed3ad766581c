/**
 * Hugging Face `config.json` <-> LlamaConfig for LlamaForCausalLM, MistralForCausalLM,
 * Qwen2ForCausalLM and Phi3ForCausalLM (Phi-3 is the Llama architecture with q/k/v and
 * gate/up stored fused, see phi3_fused.ts). Weights loaded from Hugging Face use the
 * rotate-half rotary layout.
 */
import { TuneError } from "../errors.ts";
import type { LlamaConfig } from "../models/llama/config.ts";

/** Model families tune writes config.json for, with torchtune's `model_type` names. */
export type ModelType =
  | "LLAMA2"
  | "LLAMA3"
  | "LLAMA3_2"
  | "MISTRAL"
  | "QWEN2"
  | "PHI3_MINI"
  | "LLAMA2C";

const ARCHS: Record<string, { hfModelType: string; defaultTheta: number }> = {
  LlamaForCausalLM: { hfModelType: "llama", defaultTheta: 10000 },
  MistralForCausalLM: { hfModelType: "mistral", defaultTheta: 10000 },
  Qwen2ForCausalLM: { hfModelType: "qwen2", defaultTheta: 10000 },
  Phi3ForCausalLM: { hfModelType: "phi3", defaultTheta: 10000 },
};

/** The architecture whose checkpoints hold fused qkv_proj and gate_up_proj tensors. */
export const PHI3_ARCH = "Phi3ForCausalLM";

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

/** LlamaConfig from a parsed config.json; `path` names the file in errors. */
export function llamaConfigFromHf(json: Json, path: string): LlamaConfig {
  const arch = (json.architectures ?? [])[0] as string | undefined;
  if (!arch || !ARCHS[arch]) {
    throw new TuneError(
      `${path}: architecture ${arch} is not supported; tune loads ` +
        `${Object.keys(ARCHS).join(", ")}`,
    );
  }
  const need = (k: string): number => {
    if (typeof json[k] !== "number") throw new TuneError(`${path}: missing number ${k}`);
    return json[k];
  };
  const dim = need("hidden_size");
  const nHeads = need("num_attention_heads");
  if (json.head_dim !== undefined && json.head_dim !== null && json.head_dim !== dim / nHeads) {
    throw new TuneError(
      `${path}: head_dim ${json.head_dim} != hidden_size / num_attention_heads; not supported`,
    );
  }
  let ropeScaling: LlamaConfig["ropeScaling"] = null;
  const rs = json.rope_scaling as Json | null | undefined;
  const partial = json.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1) {
    throw new TuneError(
      `${path}: partial_rotary_factor ${partial} (rotary on part of each head) is not supported`,
    );
  }
  if (rs && arch === PHI3_ARCH) {
    // Phi-3 128k models: "su" / "longrope" scaling with per-dimension factors.
    throw new TuneError(
      `${path}: Phi-3 rope_scaling ${rs.rope_type ?? rs.type} (the 128k-context models) is not ` +
        `supported; use a 4k model such as Phi-3-mini-4k-instruct`,
    );
  }
  if (rs) {
    const type = rs.rope_type ?? rs.type;
    if (type !== "llama3") {
      throw new TuneError(`${path}: rope_scaling type ${type} is not supported (only llama3)`);
    }
    ropeScaling = {
      factor: rs.factor,
      lowFreqFactor: rs.low_freq_factor,
      highFreqFactor: rs.high_freq_factor,
      originalMaxPositionEmbeddings: rs.original_max_position_embeddings,
    };
  }
  return {
    vocabSize: need("vocab_size"),
    dim,
    nLayers: need("num_hidden_layers"),
    nHeads,
    nKvHeads: json.num_key_value_heads ?? nHeads,
    hiddenDim: need("intermediate_size"),
    normEps: json.rms_norm_eps ?? 1e-6,
    ropeTheta: json.rope_theta ?? ARCHS[arch].defaultTheta,
    ropeScaling,
    ropeLayout: "half",
    maxSeqLen: json.max_position_embeddings ?? 2048,
    tiedEmbeddings: json.tie_word_embeddings ?? false,
    qkvBias: arch === "Qwen2ForCausalLM" || json.attention_bias === true,
  };
}

/** Read and parse `<dir>/config.json`. */
export function readHfConfig(path: string): { json: Json; config: LlamaConfig } {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    throw new TuneError(`${path} not found; a Hugging Face checkpoint needs its config.json`);
  }
  let json: Json;
  try {
    json = JSON.parse(text);
  } catch {
    throw new TuneError(`${path} is not valid JSON`);
  }
  return { json, config: llamaConfigFromHf(json, path) };
}

/**
 * A config.json for `cfg`. With `base` (the config.json read at load), its other keys are
 * kept and only the architecture keys are refreshed.
 */
export function hfConfigJson(
  cfg: LlamaConfig,
  options: { modelType?: ModelType; base?: Json; torchDtype?: string } = {},
): Json {
  const arch = options.base?.architectures?.[0] ??
    (options.modelType === "MISTRAL"
      ? "MistralForCausalLM"
      : options.modelType === "PHI3_MINI"
      ? PHI3_ARCH
      : options.modelType === "QWEN2" || (cfg.qkvBias && !options.modelType)
      ? "Qwen2ForCausalLM"
      : "LlamaForCausalLM");
  const out: Json = {
    ...(options.base ?? {}),
    architectures: [arch],
    model_type: ARCHS[arch]?.hfModelType ?? "llama",
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.dim,
    intermediate_size: cfg.hiddenDim,
    num_hidden_layers: cfg.nLayers,
    num_attention_heads: cfg.nHeads,
    num_key_value_heads: cfg.nKvHeads,
    hidden_act: "silu",
    max_position_embeddings: cfg.maxSeqLen,
    rms_norm_eps: cfg.normEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: cfg.ropeScaling
      ? {
        rope_type: "llama3",
        factor: cfg.ropeScaling.factor,
        low_freq_factor: cfg.ropeScaling.lowFreqFactor,
        high_freq_factor: cfg.ropeScaling.highFreqFactor,
        original_max_position_embeddings: cfg.ropeScaling.originalMaxPositionEmbeddings,
      }
      : null,
    tie_word_embeddings: cfg.tiedEmbeddings,
    torch_dtype: options.torchDtype ?? options.base?.torch_dtype ?? "float32",
  };
  if (arch === "LlamaForCausalLM") out.attention_bias = cfg.qkvBias;
  return out;
}
