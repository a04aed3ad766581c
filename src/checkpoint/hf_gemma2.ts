/**
 * Gemma 2's keys of a Hugging Face config.json (Gemma2Config) <-> LlamaConfig: the attention
 * and final logit soft-caps, query_pre_attn_scalar, the sliding window of the even layers
 * (HF's default layer_types: "sliding_attention" for layer 0, 2, 4, ...) and the norms after
 * attention and the MLP. Absent keys take Gemma2Config's defaults.
 */
import { TuneError } from "../errors.ts";
import { headSize, type LlamaConfig } from "../models/llama/config.ts";

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

/** Gemma2Config's defaults for the keys a config.json may leave out. */
const DEFAULTS = {
  attn_logit_softcapping: 50,
  final_logit_softcapping: 30,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
};

function positive(json: Json, key: keyof typeof DEFAULTS, path: string): number | undefined {
  const v = json[key] === undefined ? DEFAULTS[key] : json[key];
  if (v === null) return undefined; // HF: no soft-cap
  if (typeof v !== "number" || !(v > 0)) {
    throw new TuneError(`${path}: ${key} ${v} must be a positive number or null`);
  }
  return v;
}

/** The Gemma 2 fields of a Gemma2ForCausalLM config.json (`path` names it in errors). */
export function gemma2Fields(json: Json, path: string): Partial<LlamaConfig> {
  const layers = json.num_hidden_layers as number;
  const window = positive(json, "sliding_window", path);
  if (window !== undefined && !Number.isInteger(window)) {
    throw new TuneError(`${path}: sliding_window ${window} must be a positive integer`);
  }
  const types = json.layer_types as string[] | undefined | null;
  if (types) {
    const alternating = types.length === layers &&
      types.every((t, i) => t === (i % 2 === 0 ? "sliding_attention" : "full_attention"));
    if (!alternating) {
      throw new TuneError(
        `${path}: layer_types other than Gemma 2's alternating sliding/full layers are not supported`,
      );
    }
  }
  const out: Partial<LlamaConfig> = { postNorms: true };
  if (window !== undefined) {
    out.slidingWindow = window;
    out.windowLayers = "even";
  }
  const attn = positive(json, "attn_logit_softcapping", path);
  if (attn !== undefined) out.attnSoftcap = attn;
  const fin = positive(json, "final_logit_softcapping", path);
  if (fin !== undefined) out.finalSoftcap = fin;
  out.queryPreAttnScalar = positive(json, "query_pre_attn_scalar", path);
  return out;
}

/** The Gemma 2 keys of the config.json written for `cfg`. */
export function gemma2Json(cfg: LlamaConfig): Json {
  if (cfg.slidingWindow !== undefined && cfg.windowLayers !== "even") {
    throw new TuneError(
      `a Gemma 2 model windows its even layers only (windowLayers "even"); this one windows all`,
    );
  }
  return {
    attn_logit_softcapping: cfg.attnSoftcap ?? null,
    final_logit_softcapping: cfg.finalSoftcap ?? null,
    query_pre_attn_scalar: cfg.queryPreAttnScalar ?? headSize(cfg),
    sliding_window: cfg.slidingWindow ?? null,
    hidden_activation: "gelu_pytorch_tanh",
  };
}
