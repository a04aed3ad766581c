/**
 * Hugging Face `config.json` <-> LlamaConfig for LlamaForCausalLM, MistralForCausalLM,
 * Qwen2ForCausalLM, Qwen3ForCausalLM (per-head q/k RMSNorm), Phi3ForCausalLM (Phi-3 is the Llama architecture with q/k/v and
 * gate/up stored fused, see phi3_fused.ts) and GemmaForCausalLM (Gemma 1: GeGLU MLP,
 * embeddings times sqrt(hidden_size), norms times 1 + weight, tied output, explicit head_dim;
 * its tensors have Llama's names and its norm weights are stored zero-centred, as
 * torchtune's GemmaRMSNorm `scale`, so they load unchanged). Weights loaded from Hugging Face
 * use the rotate-half rotary layout.
 */
import { TuneError } from "../errors.ts";
import { headSize, type LlamaConfig } from "../models/llama/config.ts";
import { gemma2Fields, gemma2Json } from "./hf_gemma2.ts";

/** Model families tune writes config.json for, with torchtune's `model_type` names. */
export type ModelType =
  | "LLAMA2"
  | "LLAMA3"
  | "LLAMA3_2"
  | "MISTRAL"
  | "QWEN2"
  | "PHI3_MINI"
  | "PHI4"
  | "QWEN3"
  | "GEMMA"
  | "GEMMA2"
  | "LLAMA2C";

const ARCHS: Record<string, { hfModelType: string; defaultTheta: number }> = {
  LlamaForCausalLM: { hfModelType: "llama", defaultTheta: 10000 },
  MistralForCausalLM: { hfModelType: "mistral", defaultTheta: 10000 },
  Qwen2ForCausalLM: { hfModelType: "qwen2", defaultTheta: 10000 },
  Qwen3ForCausalLM: { hfModelType: "qwen3", defaultTheta: 10000 },
  Phi3ForCausalLM: { hfModelType: "phi3", defaultTheta: 10000 },
  GemmaForCausalLM: { hfModelType: "gemma", defaultTheta: 10000 },
  Gemma2ForCausalLM: { hfModelType: "gemma2", defaultTheta: 10000 },
};

/** Qwen3's architecture (torchtune's model_type QWEN3): per-head q/k norms, head_dim 128 by default. */
export const QWEN3_ARCH = "Qwen3ForCausalLM";

/** Gemma 1's architecture (torchtune's model_type GEMMA). */
export const GEMMA_ARCH = "GemmaForCausalLM";

/**
 * Gemma 2's architecture (torchtune's model_type GEMMA2): Gemma 1 plus soft-capped attention
 * and output logits, a sliding window on the even layers, query_pre_attn_scalar and norms
 * after attention and the MLP (gemma2.ts).
 */
export const GEMMA2_ARCH = "Gemma2ForCausalLM";

/** Gemma's GELU spellings in config.json that mean the tanh approximation. */
const GELU_TANH = ["gelu_pytorch_tanh", "gelu_new", "gelu_fast"];

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
  // transformers' Qwen3Config defaults head_dim to 128 (not hidden_size / heads)
  const hd = json.head_dim ?? (arch === QWEN3_ARCH ? 128 : undefined);
  if (hd !== undefined && hd !== null && (!Number.isInteger(hd) || hd <= 0 || hd % 2 !== 0)) {
    throw new TuneError(`${path}: head_dim ${hd} must be a positive even integer`);
  }
  // an explicit head size that differs from hidden_size / num_attention_heads (Gemma 7B,
  // Mistral NeMo, Qwen3)
  const headDim = hd !== undefined && hd !== null && hd !== dim / nHeads ? hd as number : undefined;
  const act = json.hidden_act;
  const gemmaLike = arch === GEMMA_ARCH || arch === GEMMA2_ARCH;
  if (!gemmaLike && act !== undefined && act !== null && act !== "silu") {
    throw new TuneError(`${path}: hidden_act ${act} is not supported for ${arch}; tune runs silu`);
  }
  if (json.mlp_bias === true) {
    throw new TuneError(`${path}: mlp_bias true (biases on the MLP projections) is not supported`);
  }
  // dropout rates (Phi-3 names its residual and embedding ones): tune has none in the model
  for (const k of ["attention_dropout", "resid_pdrop", "embd_pdrop"]) {
    if (typeof json[k] === "number" && json[k] !== 0) {
      throw new TuneError(
        `${path}: ${k} ${
          json[k]
        } is not supported; tune's model has no such dropout (set it to 0.0)`,
      );
    }
  }
  if (headDim === undefined && dim % nHeads !== 0) {
    throw new TuneError(
      `${path}: hidden_size ${dim} is not divisible by num_attention_heads ${nHeads} and there is no head_dim`,
    );
  }
  const gemma = gemmaLike ? gemmaFields(json, path, arch === GEMMA2_ARCH) : {};
  let ropeScaling: LlamaConfig["ropeScaling"] = null;
  const rs = json.rope_scaling as Json | null | undefined;
  const partial = json.partial_rotary_factor;
  let partialRotary: { partialRotaryFactor?: number } = {};
  if (partial !== undefined && partial !== null && partial !== 1) {
    const hs = headDim ?? dim / nHeads;
    const rd = typeof partial === "number" ? Math.floor(hs * partial) : NaN;
    if (arch !== PHI3_ARCH) {
      throw new TuneError(
        `${path}: partial_rotary_factor ${partial} is not supported for ${arch} (transformers applies it in Phi3ForCausalLM only)`,
      );
    }
    if (!(partial > 0 && partial < 1) || rd < 2 || rd % 2 !== 0) {
      throw new TuneError(
        `${path}: partial_rotary_factor ${partial} must be in (0, 1] and rotate an even number of the ${hs} head dims`,
      );
    }
    partialRotary = { partialRotaryFactor: partial };
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
    tiedEmbeddings: json.tie_word_embeddings ?? gemmaLike,
    qkvBias: arch === "Qwen2ForCausalLM" || json.attention_bias === true,
    ...(arch === QWEN3_ARCH ? { qkNorm: true } : {}),
    ...(headDim === undefined ? {} : { headDim }),
    ...slidingWindow(json, arch, path),
    ...gemma,
    ...partialRotary,
  };
}

/**
 * The sliding window of Mistral and Phi-3 (`sliding_window`), and of Qwen2 when
 * `use_sliding_window` is true (there HF windows only layers from max_window_layers on).
 */
function slidingWindow(json: Json, arch: string, path: string): Partial<LlamaConfig> {
  const w = json.sliding_window;
  if (w === undefined || w === null || arch === GEMMA_ARCH || arch === GEMMA2_ARCH) return {};
  const qwen = arch === "Qwen2ForCausalLM" || arch === QWEN3_ARCH;
  if (qwen && json.use_sliding_window !== true) return {};
  if (qwen) {
    // HF's Qwen2/3 window only layers max_window_layers.. (none in the published models)
    const from = json.max_window_layers ?? json.num_hidden_layers;
    if (from >= json.num_hidden_layers) return {};
    throw new TuneError(
      `${path}: use_sliding_window with max_window_layers ${from} < num_hidden_layers is not supported (a window on only some Qwen layers); set use_sliding_window false`,
    );
  }
  if (!Number.isInteger(w) || w <= 0) {
    throw new TuneError(`${path}: sliding_window ${w} must be a positive integer or null`);
  }
  return { slidingWindow: w };
}

/**
 * Gemma's architecture flags from its config.json. transformers' GemmaMLP uses
 * `hidden_activation` and falls back to the tanh-approximate GELU whatever `hidden_act` says
 * (the published files say "gelu"), so only an explicit exact `hidden_activation` is refused.
 */
function gemmaFields(json: Json, path: string, gemma2: boolean): Partial<LlamaConfig> {
  const act = json.hidden_activation;
  if (act !== undefined && act !== null && !GELU_TANH.includes(act)) {
    throw new TuneError(
      `${path}: hidden_activation ${act} is not supported for Gemma; tune runs gelu_pytorch_tanh`,
    );
  }
  if (json.tie_word_embeddings === false) {
    throw new TuneError(
      `${path}: tie_word_embeddings false is not supported for Gemma (its output layer is the embedding)`,
    );
  }
  const gemma1: Partial<LlamaConfig> = { hiddenAct: "gelu_tanh", embedScale: true, normOffset: 1 };
  if (gemma2) return { ...gemma1, ...gemma2Fields(json, path) };
  for (const k of ["final_logit_softcapping", "attn_logit_softcapping", "sliding_window"]) {
    if (json[k] !== undefined && json[k] !== null) {
      throw new TuneError(
        `${path}: ${k} is a Gemma 2 feature; set architectures to Gemma2ForCausalLM for a Gemma 2 checkpoint`,
      );
    }
  }
  return gemma1;
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
      : options.modelType === "GEMMA2" || (cfg.postNorms && !options.modelType)
      ? GEMMA2_ARCH
      : options.modelType === "GEMMA" || (cfg.embedScale && !options.modelType)
      ? GEMMA_ARCH
      : options.modelType === "PHI3_MINI" || options.modelType === "PHI4"
      ? PHI3_ARCH
      : options.modelType === "QWEN3" || (cfg.qkNorm && !options.modelType)
      ? QWEN3_ARCH
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
  if (arch === "LlamaForCausalLM" || arch === QWEN3_ARCH) out.attention_bias = cfg.qkvBias;
  if ((arch === GEMMA2_ARCH) !== (cfg.postNorms ?? false)) {
    throw new TuneError(
      cfg.postNorms
        ? `a Gemma 2 model can only be saved as Gemma2ForCausalLM; set checkpointer.model_type=GEMMA2`
        : `model_type GEMMA2 needs a Gemma 2 model; pick a torchtune.models.gemma2 builder`,
    );
  }
  if (
    arch !== GEMMA2_ARCH && (cfg.attnSoftcap || cfg.finalSoftcap || cfg.windowLayers === "even")
  ) {
    throw new TuneError(
      `soft-capped or alternating-window attention is Gemma 2's; set checkpointer.model_type=GEMMA2`,
    );
  }
  if ((arch === QWEN3_ARCH) !== (cfg.qkNorm ?? false)) {
    throw new TuneError(
      cfg.qkNorm
        ? `a model with per-head q/k norms can only be saved as Qwen3ForCausalLM; set checkpointer.model_type=QWEN3`
        : `model_type QWEN3 needs a Qwen3 model (per-head q/k norms); pick a torchtune.models.qwen3 builder`,
    );
  }
  if (arch === QWEN3_ARCH) {
    out.head_dim = headSize(cfg); // Qwen3Config's default (128) is not hidden_size / heads
    out.use_sliding_window = cfg.slidingWindow !== undefined;
  }
  if (cfg.slidingWindow !== undefined) out.sliding_window = cfg.slidingWindow;
  if (cfg.partialRotaryFactor !== undefined) {
    if (arch !== PHI3_ARCH) {
      throw new TuneError(
        `a model with partial rotary embeddings can only be saved as Phi3ForCausalLM; set checkpointer.model_type=PHI3_MINI`,
      );
    }
    out.partial_rotary_factor = cfg.partialRotaryFactor;
  }
  const gemmaLike = arch === GEMMA_ARCH || arch === GEMMA2_ARCH;
  if (cfg.headDim !== undefined || gemmaLike) out.head_dim = headSize(cfg);
  if (arch === GEMMA2_ARCH) Object.assign(out, gemma2Json(cfg));
  if (gemmaLike) {
    if (!cfg.embedScale || cfg.normOffset !== 1 || cfg.hiddenAct !== "gelu_tanh") {
      throw new TuneError(
        `model_type GEMMA needs a Gemma model (gelu_tanh MLP, scaled embeddings, 1 + scale norms); pick the torchtune.models.gemma builder`,
      );
    }
    out.hidden_act = options.base?.hidden_act ?? "gelu";
    out.hidden_activation = "gelu_pytorch_tanh";
    out.attention_bias = cfg.qkvBias;
  } else if (cfg.embedScale || cfg.normOffset || (cfg.hiddenAct ?? "silu") !== "silu") {
    throw new TuneError(
      `a Gemma model can only be saved as GemmaForCausalLM; set checkpointer.model_type=GEMMA`,
    );
  }
  return out;
}
