/**
 * Gemma 1 (torchtune.models.gemma): the generic `gemma(...)` component builder and its
 * fixed sizes. Gemma is the Llama decoder with four differences, all flags of LlamaConfig:
 * a GeGLU MLP (gelu with the tanh approximation on the gate), token embeddings multiplied
 * by sqrt(embed_dim), RMSNorms that multiply by 1 + scale (zero-centred scales), and an
 * output layer tied to the embedding; the head size is explicit (256 for both sizes, which
 * for gemma_7b is not embed_dim / num_heads). Gemma 2 builds on it (gemma2.ts).
 */
import type { LlamaConfig } from "../llama/config.ts";
import { checkConfig } from "./llama.ts";

/** torchtune's `gemma(...)` arguments (camelCase). */
export interface GemmaOptions {
  vocabSize: number;
  numLayers: number;
  numHeads: number;
  headDim: number;
  numKvHeads: number;
  embedDim: number;
  intermediateDim: number;
  maxSeqLen: number;
  /** Default 1e-6. */
  normEps?: number;
  /** Default 10000. */
  ropeBase?: number;
}

/** LlamaConfig of a Gemma 1 decoder (rotate-half rotary layout for fresh weights). */
export function gemma(o: GemmaOptions): LlamaConfig {
  const cfg: LlamaConfig = {
    vocabSize: o.vocabSize,
    dim: o.embedDim,
    nLayers: o.numLayers,
    nHeads: o.numHeads,
    nKvHeads: o.numKvHeads,
    hiddenDim: o.intermediateDim,
    normEps: o.normEps ?? 1e-6,
    ropeTheta: o.ropeBase ?? 10000,
    ropeScaling: null,
    ropeLayout: "half",
    maxSeqLen: o.maxSeqLen,
    tiedEmbeddings: true,
    qkvBias: false,
    headDim: o.headDim,
    hiddenAct: "gelu_tanh",
    embedScale: true,
    normOffset: 1,
  };
  checkConfig(cfg);
  return cfg;
}

/** torchtune's gemma_2b: 18 layers, width 2048, 8 query heads sharing 1 key/value head. */
export function gemma2b(): LlamaConfig {
  return gemma({
    vocabSize: 256000,
    numLayers: 18,
    numHeads: 8,
    headDim: 256,
    numKvHeads: 1,
    embedDim: 2048,
    intermediateDim: 16384,
    maxSeqLen: 8192,
    normEps: 1e-6,
  });
}

/** torchtune's gemma_7b: 28 layers, width 3072, 16 heads of 256 (16 * 256 = 4096 != 3072). */
export function gemma7b(): LlamaConfig {
  return gemma({
    vocabSize: 256000,
    numLayers: 28,
    numHeads: 16,
    headDim: 256,
    numKvHeads: 16,
    embedDim: 3072,
    intermediateDim: 24576,
    maxSeqLen: 8192,
    normEps: 1e-6,
  });
}
