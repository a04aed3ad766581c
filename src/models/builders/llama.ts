/**
 * The generic Llama-family builder (torchtune's `llama2(...)` component builder): every
 * architecture knob as an option, used by the tiny test configs and by the fixed-size
 * builders of families.ts.
 */
import type { RopeLayout } from "../../backend/ops.ts";
import { headSize, type LlamaConfig, type RopeScaling, SIZE_FIELDS } from "../llama/config.ts";

/** torchtune's builder options (camelCase here; the component schema uses snake_case). */
export interface LlamaOptions {
  vocabSize: number;
  numLayers: number;
  numHeads: number;
  /** Default: numHeads (multi-head attention). */
  numKvHeads?: number;
  embedDim: number;
  /** Default: torchtune's scale_hidden_dim_for_mlp(embedDim, 256). */
  intermediateDim?: number;
  maxSeqLen: number;
  normEps?: number;
  ropeBase?: number;
  ropeScaling?: RopeScaling | null;
  tieWordEmbeddings?: boolean;
  qkvBias?: boolean;
  /** Rotary layout of freshly built weights; a loaded checkpoint's layout wins. Default "half". */
  ropeLayout?: RopeLayout;
  /** Head size when not embedDim / numHeads (Qwen3, Mistral NeMo). */
  headDim?: number;
  /** Per-head RMSNorm on q and k (Qwen3). */
  qkNorm?: boolean;
}

/** torchtune's FFN width rule: 2/3 of 4*dim, rounded up to a multiple of `multipleOf`. */
export function scaleHiddenDimForMlp(dim: number, multipleOf = 256): number {
  const hidden = Math.trunc((2 * 4 * dim) / 3);
  return multipleOf * Math.trunc((hidden + multipleOf - 1) / multipleOf);
}

/** LlamaConfig from builder options. */
export function llama(o: LlamaOptions): LlamaConfig {
  const cfg: LlamaConfig = {
    vocabSize: o.vocabSize,
    dim: o.embedDim,
    nLayers: o.numLayers,
    nHeads: o.numHeads,
    nKvHeads: o.numKvHeads ?? o.numHeads,
    hiddenDim: o.intermediateDim ?? scaleHiddenDimForMlp(o.embedDim),
    normEps: o.normEps ?? 1e-5,
    ropeTheta: o.ropeBase ?? 10000,
    ropeScaling: o.ropeScaling ?? null,
    ropeLayout: o.ropeLayout ?? "half",
    maxSeqLen: o.maxSeqLen,
    tiedEmbeddings: o.tieWordEmbeddings ?? false,
    qkvBias: o.qkvBias ?? false,
    ...(o.headDim !== undefined && o.headDim !== o.embedDim / o.numHeads
      ? { headDim: o.headDim }
      : {}),
    ...(o.qkNorm ? { qkNorm: true } : {}),
  };
  checkConfig(cfg);
  return cfg;
}

/** Throw on an inconsistent architecture (e.g. heads that do not divide the width). */
export function checkConfig(cfg: LlamaConfig): void {
  const bad = (m: string) => {
    throw new Error(`invalid model config: ${m}`);
  };
  for (const k of SIZE_FIELDS) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) bad(`${k} must be a positive integer`);
  }
  if (cfg.headDim === undefined && cfg.dim % cfg.nHeads !== 0) {
    bad(`embed_dim ${cfg.dim} is not divisible by num_heads ${cfg.nHeads}`);
  }
  if (cfg.headDim !== undefined && (!Number.isInteger(cfg.headDim) || cfg.headDim <= 0)) {
    bad(`head_dim must be a positive integer`);
  }
  if (cfg.nHeads % cfg.nKvHeads !== 0) {
    bad(`num_heads ${cfg.nHeads} is not divisible by num_kv_heads ${cfg.nKvHeads}`);
  }
  if (headSize(cfg) % 2 !== 0) {
    bad(`head size ${headSize(cfg)} must be even for RoPE`);
  }
}
