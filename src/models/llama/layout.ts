/**
 * Parameter layouts of a Llama model in torchtune names: the base weights (one group for
 * the embedding, one per decoder layer, one for the head) and the LoRA adapters (one group
 * per layer plus the head), see config.ts for the names and shapes.
 */
import { type GroupDecl, ParamLayout } from "../../params/layout.ts";
import type { LoraAttnModule, LoraConfig } from "../model_spec.ts";
import { headSize, type LlamaConfig, SIZE_FIELDS } from "./config.ts";
import { TuneError } from "../../errors.ts";

/** A linear layer of the model by its torchtune prefix, e.g. "layers.0.attn.q_proj". */
export interface LinearSite {
  prefix: string;
  inDim: number;
  outDim: number;
  /** -1 for the final output projection. */
  layer: number;
}

/** Every linear layer of one decoder layer, with its LoRA target key. */
export function layerLinears(cfg: LlamaConfig, i: number): (LinearSite & { key: string })[] {
  const C = cfg.dim;
  const Q = cfg.nHeads * headSize(cfg);
  const KV = cfg.nKvHeads * headSize(cfg);
  const H = cfg.hiddenDim;
  const p = `layers.${i}`;
  return [
    { key: "q_proj", prefix: `${p}.attn.q_proj`, inDim: C, outDim: Q, layer: i },
    { key: "k_proj", prefix: `${p}.attn.k_proj`, inDim: C, outDim: KV, layer: i },
    { key: "v_proj", prefix: `${p}.attn.v_proj`, inDim: C, outDim: KV, layer: i },
    { key: "output_proj", prefix: `${p}.attn.output_proj`, inDim: Q, outDim: C, layer: i },
    { key: "w1", prefix: `${p}.mlp.w1`, inDim: C, outDim: H, layer: i },
    { key: "w2", prefix: `${p}.mlp.w2`, inDim: H, outDim: C, layer: i },
    { key: "w3", prefix: `${p}.mlp.w3`, inDim: C, outDim: H, layer: i },
  ];
}

/** Check the architecture is consistent; TuneError naming the bad field otherwise. */
export function validateConfig(cfg: LlamaConfig): void {
  const bad = (m: string) => {
    throw new TuneError(`invalid model config: ${m}`);
  };
  for (const k of [...SIZE_FIELDS, "maxSeqLen"] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) {
      bad(`${k} must be a positive integer, got ${cfg[k]}`);
    }
  }
  if (cfg.headDim === undefined && cfg.dim % cfg.nHeads !== 0) {
    bad(`dim ${cfg.dim} is not a multiple of nHeads ${cfg.nHeads}`);
  }
  if (!Number.isInteger(headSize(cfg)) || headSize(cfg) <= 0) {
    bad(`headDim must be a positive integer, got ${cfg.headDim}`);
  }
  if (headSize(cfg) % 2 !== 0) bad(`head size ${headSize(cfg)} must be even for rotary embeddings`);
  if (cfg.nHeads % cfg.nKvHeads !== 0) {
    bad(`nHeads ${cfg.nHeads} is not a multiple of nKvHeads ${cfg.nKvHeads}`);
  }
}

/** The base weights' layout: tok_embeddings, layers.0 .. layers.L-1, head. */
export function baseLayout(cfg: LlamaConfig): ParamLayout {
  validateConfig(cfg);
  const C = cfg.dim;
  const groups: GroupDecl[] = [{
    name: "tok_embeddings",
    tensors: [{ name: "tok_embeddings.weight", shape: [cfg.vocabSize, C] }],
  }];
  for (let i = 0; i < cfg.nLayers; i++) {
    const t: GroupDecl["tensors"] = [{ name: `layers.${i}.sa_norm.scale`, shape: [C] }];
    for (const s of layerLinears(cfg, i)) {
      if (s.key === "w1") t.push({ name: `layers.${i}.mlp_norm.scale`, shape: [C] });
      // Gemma 2's norms after attention and after the MLP
      if (cfg.postNorms && s.key === "w1") {
        t.push({ name: `layers.${i}.sa_scale.scale`, shape: [C] });
      }
      if (cfg.postNorms && s.key === "w3") {
        t.push({ name: `layers.${i}.mlp_scale.scale`, shape: [C] });
      }
      t.push({ name: `${s.prefix}.weight`, shape: [s.outDim, s.inDim] });
      if (cfg.qkvBias && (s.key === "q_proj" || s.key === "k_proj" || s.key === "v_proj")) {
        t.push({ name: `${s.prefix}.bias`, shape: [s.outDim] });
      }
      if (cfg.qkNorm && s.key === "output_proj") {
        const HS = headSize(cfg);
        t.push(
          { name: `layers.${i}.attn.q_norm.scale`, shape: [HS] },
          { name: `layers.${i}.attn.k_norm.scale`, shape: [HS] },
        );
      }
    }
    groups.push({ name: `layers.${i}`, tensors: t });
  }
  const head: GroupDecl["tensors"] = [{ name: "norm.scale", shape: [C] }];
  if (!cfg.tiedEmbeddings) head.push({ name: "output.weight", shape: [cfg.vocabSize, C] });
  groups.push({ name: "head", tensors: head });
  return new ParamLayout(groups);
}

/** The LoRA modules of an attention block, torchtune's names. */
export const LORA_ATTN_MODULES: readonly LoraAttnModule[] = [
  "q_proj",
  "k_proj",
  "v_proj",
  "output_proj",
];

/**
 * The one check of LoRA settings against a model (builders and models call it): a TuneError
 * naming the bad `model.lora_*` key otherwise.
 */
export function checkLora(lora: LoraConfig, tiedEmbeddings: boolean): void {
  for (const m of lora.attnModules) {
    if (!LORA_ATTN_MODULES.includes(m)) {
      throw new TuneError(
        `model.lora_attn_modules: unknown module ${m}; choose from ${LORA_ATTN_MODULES.join(", ")}`,
      );
    }
  }
  if (!Number.isInteger(lora.rank) || lora.rank <= 0) {
    throw new TuneError(`model.lora_rank must be a positive integer, got ${lora.rank}`);
  }
  if (!(lora.dropout >= 0 && lora.dropout < 1)) {
    throw new TuneError(`model.lora_dropout must be in [0, 1), got ${lora.dropout}`);
  }
  if (lora.applyToOutput && tiedEmbeddings) {
    throw new TuneError(
      `model.apply_lora_to_output=True needs an untied output layer; this model ties it to ` +
        `the embeddings, set apply_lora_to_output=False`,
    );
  }
}

/** The linear layers LoRA adapts under `lora`, in layout order. */
export function loraSites(cfg: LlamaConfig, lora: LoraConfig): LinearSite[] {
  checkLora(lora, cfg.tiedEmbeddings);
  const sites: LinearSite[] = [];
  for (let i = 0; i < cfg.nLayers; i++) {
    for (const s of layerLinears(cfg, i)) {
      const isMlp = s.key === "w1" || s.key === "w2" || s.key === "w3";
      if (isMlp ? lora.applyToMlp : (lora.attnModules as string[]).includes(s.key)) sites.push(s);
    }
  }
  if (lora.applyToOutput) {
    sites.push({ prefix: "output", inDim: cfg.dim, outDim: cfg.vocabSize, layer: -1 });
  }
  return sites;
}

/**
 * The adapters' layout: lora_a (r, in) and lora_b (out, r) of each site (plus the DoRA
 * magnitude (out) with use_dora), grouped per layer.
 */
export function loraLayout(cfg: LlamaConfig, lora: LoraConfig): ParamLayout {
  const byGroup = new Map<string, GroupDecl>();
  for (const s of loraSites(cfg, lora)) {
    const g = s.layer < 0 ? "head" : `layers.${s.layer}`;
    if (!byGroup.has(g)) byGroup.set(g, { name: g, tensors: [] });
    byGroup.get(g)!.tensors.push(
      { name: `${s.prefix}.lora_a.weight`, shape: [lora.rank, s.inDim] },
      { name: `${s.prefix}.lora_b.weight`, shape: [s.outDim, lora.rank] },
    );
    if (lora.useDora) {
      byGroup.get(g)!.tensors.push({ name: `${s.prefix}.magnitude`, shape: [s.outDim] });
    }
  }
  return new ParamLayout([...byGroup.values()]);
}
