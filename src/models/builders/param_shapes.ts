/**
 * Every parameter's name and shape for a Llama-family config (and LoRA settings), computed
 * from the config alone: the basis of `parameterCount` and of checkpoint shape checks.
 */
import { headSize, type LlamaConfig } from "../llama/config.ts";
import type { LoraConfig } from "../model_spec.ts";

/** Names and shapes of the base model's parameters, in torchtune order. */
export function paramShapes(cfg: LlamaConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const hs = headSize(cfg);
  const q = cfg.nHeads * hs; // NH*HS
  const kv = cfg.nKvHeads * hs; // KV
  out.set("tok_embeddings.weight", [cfg.vocabSize, cfg.dim]);
  for (let i = 0; i < cfg.nLayers; i++) {
    const p = `layers.${i}.`;
    out.set(`${p}sa_norm.scale`, [cfg.dim]);
    out.set(`${p}attn.q_proj.weight`, [q, cfg.dim]);
    out.set(`${p}attn.k_proj.weight`, [kv, cfg.dim]);
    out.set(`${p}attn.v_proj.weight`, [kv, cfg.dim]);
    if (cfg.qkvBias) {
      out.set(`${p}attn.q_proj.bias`, [q]);
      out.set(`${p}attn.k_proj.bias`, [kv]);
      out.set(`${p}attn.v_proj.bias`, [kv]);
    }
    out.set(`${p}attn.output_proj.weight`, [cfg.dim, q]);
    out.set(`${p}mlp_norm.scale`, [cfg.dim]);
    out.set(`${p}mlp.w1.weight`, [cfg.hiddenDim, cfg.dim]);
    out.set(`${p}mlp.w2.weight`, [cfg.dim, cfg.hiddenDim]);
    out.set(`${p}mlp.w3.weight`, [cfg.hiddenDim, cfg.dim]);
  }
  out.set("norm.scale", [cfg.dim]);
  if (!cfg.tiedEmbeddings) out.set("output.weight", [cfg.vocabSize, cfg.dim]);
  return out;
}

/** Names and shapes of LoRA adapter parameters: `<linear>.lora_a.weight` (r, in), `.lora_b.weight` (out, r). */
export function loraParamShapes(cfg: LlamaConfig, lora: LoraConfig): Map<string, number[]> {
  const base = paramShapes(cfg);
  const out = new Map<string, number[]>();
  const add = (linear: string) => {
    const [o, i] = base.get(`${linear}.weight`)!;
    out.set(`${linear}.lora_a.weight`, [lora.rank, i]);
    out.set(`${linear}.lora_b.weight`, [o, lora.rank]);
  };
  for (let l = 0; l < cfg.nLayers; l++) {
    for (const m of lora.attnModules) add(`layers.${l}.attn.${m}`);
    if (lora.applyToMlp) { for (const m of ["w1", "w2", "w3"]) add(`layers.${l}.mlp.${m}`); }
  }
  if (lora.applyToOutput) {
    if (cfg.tiedEmbeddings) {
      throw new Error("apply_lora_to_output needs an untied output projection");
    }
    add("output");
  }
  return out;
}
