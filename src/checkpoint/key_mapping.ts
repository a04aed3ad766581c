/**
 * Parameter names between tune (torchtune names, src/models/llama/config.ts), Hugging Face
 * (`model.layers.N.self_attn.q_proj.weight`), Meta (`layers.N.attention.wq.weight`) and
 * PEFT adapters (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`).
 */

// tune layer-local suffix -> [HF suffix, Meta suffix]
const LAYER: Record<string, [string, string]> = {
  "sa_norm.scale": ["input_layernorm.weight", "attention_norm.weight"],
  "attn.q_proj.weight": ["self_attn.q_proj.weight", "attention.wq.weight"],
  "attn.k_proj.weight": ["self_attn.k_proj.weight", "attention.wk.weight"],
  "attn.v_proj.weight": ["self_attn.v_proj.weight", "attention.wv.weight"],
  "attn.q_proj.bias": ["self_attn.q_proj.bias", "attention.wq.bias"],
  "attn.k_proj.bias": ["self_attn.k_proj.bias", "attention.wk.bias"],
  "attn.v_proj.bias": ["self_attn.v_proj.bias", "attention.wv.bias"],
  "attn.output_proj.weight": ["self_attn.o_proj.weight", "attention.wo.weight"],
  // Qwen3's per-head q/k norms (Meta's params.json cannot describe them: never written there)
  "attn.q_norm.scale": ["self_attn.q_norm.weight", "attention.q_norm.weight"],
  "attn.k_norm.scale": ["self_attn.k_norm.weight", "attention.k_norm.weight"],
  "mlp_norm.scale": ["post_attention_layernorm.weight", "ffn_norm.weight"],
  "mlp.w1.weight": ["mlp.gate_proj.weight", "feed_forward.w1.weight"],
  "mlp.w2.weight": ["mlp.down_proj.weight", "feed_forward.w2.weight"],
  "mlp.w3.weight": ["mlp.up_proj.weight", "feed_forward.w3.weight"],
};
const TOP: Record<string, [string, string]> = {
  "tok_embeddings.weight": ["model.embed_tokens.weight", "tok_embeddings.weight"],
  "norm.scale": ["model.norm.weight", "norm.weight"],
  "output.weight": ["lm_head.weight", "output.weight"],
};

function invert(col: 0 | 1): { top: Map<string, string>; layer: Map<string, string> } {
  return {
    top: new Map(Object.entries(TOP).map(([k, v]) => [v[col], k])),
    layer: new Map(Object.entries(LAYER).map(([k, v]) => [v[col], k])),
  };
}
const FROM_HF = invert(0);
const FROM_META = invert(1);

const TUNE_LAYER = /^layers\.(\d+)\.(.+)$/;

function toFormat(tuneName: string, col: 0 | 1, layerPrefix: string): string | null {
  const top = TOP[tuneName];
  if (top) return top[col];
  const m = TUNE_LAYER.exec(tuneName);
  if (!m || !LAYER[m[2]]) return null;
  return `${layerPrefix}${m[1]}.${LAYER[m[2]][col]}`;
}

function fromFormat(
  name: string,
  maps: { top: Map<string, string>; layer: Map<string, string> },
  layerRe: RegExp,
): string | null {
  const top = maps.top.get(name);
  if (top) return top;
  const m = layerRe.exec(name);
  if (!m) return null;
  const s = maps.layer.get(m[2]);
  return s ? `layers.${m[1]}.${s}` : null;
}

/**
 * Gemma 2's four layer norms (a model with `postNorms`): torchtune's sa_norm, sa_scale,
 * mlp_norm and mlp_scale. There HF's post_attention_layernorm is the norm AFTER attention
 * (Gemma 1 and Llama use that name for the norm before the MLP).
 */
const GEMMA2_NORMS: Record<string, string> = {
  "sa_scale.scale": "post_attention_layernorm.weight",
  "mlp_norm.scale": "pre_feedforward_layernorm.weight",
  "mlp_scale.scale": "post_feedforward_layernorm.weight",
};
const GEMMA2_FROM_HF = new Map(Object.entries(GEMMA2_NORMS).map(([k, v]) => [v, k]));
const HF_LAYER = /^model\.layers\.(\d+)\.(.+)$/;

/** What the name mapping needs of a model: whether it has Gemma 2's post-norms. */
export interface NameMapping {
  postNorms?: boolean;
}

/** tune name -> Hugging Face name, or null for a name with no Hugging Face twin. */
export function tuneToHf(tuneName: string, cfg?: NameMapping): string | null {
  if (cfg?.postNorms) {
    const m = TUNE_LAYER.exec(tuneName);
    if (m && GEMMA2_NORMS[m[2]]) return `model.layers.${m[1]}.${GEMMA2_NORMS[m[2]]}`;
  }
  return toFormat(tuneName, 0, "model.layers.");
}

/** Hugging Face name -> tune name, or null (e.g. `rotary_emb.inv_freq`, which is recomputed). */
export function hfToTune(hfName: string, cfg?: NameMapping): string | null {
  if (cfg?.postNorms) {
    const m = HF_LAYER.exec(hfName);
    const t = m ? GEMMA2_FROM_HF.get(m[2]) : undefined;
    if (t) return `layers.${m![1]}.${t}`;
  }
  return fromFormat(hfName, FROM_HF, HF_LAYER);
}

/** tune name -> Meta name, or null. */
export function tuneToMeta(tuneName: string): string | null {
  return toFormat(tuneName, 1, "layers.");
}

/** Meta name -> tune name, or null (e.g. `rope.freqs`, which is recomputed). */
export function metaToTune(metaName: string): string | null {
  return fromFormat(metaName, FROM_META, /^layers\.(\d+)\.(.+)$/);
}

/** Hugging Face names that carry no weights tune needs (recomputed buffers). */
export function isIgnorableHfKey(name: string): boolean {
  return name.endsWith("rotary_emb.inv_freq");
}

/** Meta names that carry no weights tune needs. */
export function isIgnorableMetaKey(name: string): boolean {
  return name === "rope.freqs";
}

const LORA = /^(.*)\.lora_(a|b)\.weight$/;
const DORA = /^(.*)\.magnitude$/;

/**
 * tune LoRA name (`layers.0.attn.q_proj.lora_a.weight`) -> PEFT name
 * (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), or null. A DoRA
 * magnitude (`layers.0.attn.q_proj.magnitude`) -> PEFT's saved name
 * `base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector` (no `.weight`).
 */
export function tuneLoraToPeft(tuneName: string): string | null {
  const d = DORA.exec(tuneName);
  if (d) {
    const hf = tuneToHf(`${d[1]}.weight`);
    return hf ? `base_model.model.${hf.slice(0, -".weight".length)}.lora_magnitude_vector` : null;
  }
  const m = LORA.exec(tuneName);
  if (!m) return null;
  const hf = tuneToHf(`${m[1]}.weight`);
  if (!hf) return null;
  return `base_model.model.${hf.slice(0, -".weight".length)}.lora_${m[2].toUpperCase()}.weight`;
}

const PEFT = /^base_model\.model\.(.*)\.lora_(A|B)\.weight$/;
// PEFT saves DoRA magnitudes without ".weight"; older PEFT versions with it
const PEFT_DORA = /^base_model\.model\.(.*)\.lora_magnitude_vector(?:\.weight)?$/;

/** PEFT adapter name -> tune LoRA name, or null. */
export function peftToTuneLora(peftName: string): string | null {
  const d = PEFT_DORA.exec(peftName);
  if (d) {
    const t = hfToTune(`${d[1]}.weight`);
    return t ? `${t.slice(0, -".weight".length)}.magnitude` : null;
  }
  const m = PEFT.exec(peftName);
  if (!m) return null;
  const t = hfToTune(`${m[1]}.weight`);
  if (!t) return null;
  return `${t.slice(0, -".weight".length)}.lora_${m[2].toLowerCase()}.weight`;
}

/** The PEFT `target_modules` name of a tune linear (q_proj, o_proj, gate_proj, lm_head, ...). */
export function peftModuleName(tuneModule: string): string {
  const map: Record<string, string> = {
    q_proj: "q_proj",
    k_proj: "k_proj",
    v_proj: "v_proj",
    output_proj: "o_proj",
    w1: "gate_proj",
    w2: "down_proj",
    w3: "up_proj",
    output: "lm_head",
  };
  return map[tuneModule] ?? tuneModule;
}
