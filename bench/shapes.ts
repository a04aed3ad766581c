/** The model shapes of `deno task bench` (issue #6), shared by the tune side and the table. */
import type { LlamaConfig } from "../src/models/llama/config.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";

/** One benchmark shape: the architecture and the training micro-batch. */
export interface BenchShape {
  name: "15M" | "260K";
  config: LlamaConfig;
  /** Training micro-batch B. */
  batch: number;
  /** Training sequence length T. */
  seqLen: number;
}

/** New tokens of the generation rows (batch 1, from one BOS token). */
export const GEN_TOKENS = 256;

/** LoRA of the lora rows: rank 8 (alpha 16) on q and v, no dropout (as torch_bench.py). */
export const BENCH_LORA: LoraConfig = {
  attnModules: ["q_proj", "v_proj"],
  applyToMlp: false,
  applyToOutput: false,
  rank: 8,
  alpha: 16,
  dropout: 0,
};

function config(
  dim: number,
  nLayers: number,
  nHeads: number,
  nKvHeads: number,
  hiddenDim: number,
  vocabSize: number,
): LlamaConfig {
  return {
    vocabSize,
    dim,
    nLayers,
    nHeads,
    nKvHeads,
    hiddenDim,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    ropeLayout: "interleaved",
    maxSeqLen: 1024,
    tiedEmbeddings: true, // as llama2.c's stories15M (and torch_bench.py)
    qkvBias: false,
  };
}

/** "15M" (llama2.c stories15M) and "260K" shapes. */
export const SHAPES: readonly BenchShape[] = [
  { name: "15M", config: config(288, 6, 6, 6, 768, 32000), batch: 4, seqLen: 256 },
  { name: "260K", config: config(64, 5, 8, 4, 172, 512), batch: 8, seqLen: 512 },
];
