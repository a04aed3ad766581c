/**
 * Fixed-size builders of the published Llama-family models, with the architecture of each
 * model's Hugging Face config.json (torchtune's builders use the same numbers).
 */
import type { LlamaConfig, RopeScaling } from "../llama/config.ts";
import { gemma2b, gemma7b } from "./gemma.ts";
import { gemma2_27b, gemma2_2b, gemma2_9b } from "./gemma2.ts";
import { llama, type LlamaOptions } from "./llama.ts";

const LLAMA31_SCALING: RopeScaling = {
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 8192,
};
const LLAMA32_SCALING: RopeScaling = { ...LLAMA31_SCALING, factor: 32 };

/** One published model: torchtune module, builder name, and its config. */
export interface ModelFamilyEntry {
  /** torchtune module, e.g. "llama3_2" (component `torchtune.models.llama3_2.llama3_2_1b`). */
  module: string;
  /** Builder name, e.g. "llama3_2_1b"; the LoRA builder is "lora_" + name. */
  name: string;
  config: () => LlamaConfig;
  /** Other accepted component names (torchtune's early short names). */
  aliases?: string[];
}

/** The family's options other than its sizes. */
type FamilyOptions = Omit<
  LlamaOptions,
  "embedDim" | "numLayers" | "numHeads" | "numKvHeads" | "intermediateDim"
>;

/** A config of sizes C (embed), L (layers), NH, NKV (heads) and hidden, plus `rest`. */
function sized(
  embedDim: number,
  numLayers: number,
  numHeads: number,
  numKvHeads: number,
  hidden: number,
  rest: FamilyOptions,
): LlamaConfig {
  return llama({ ...rest, embedDim, numLayers, numHeads, numKvHeads, intermediateDim: hidden });
}

const llama2 =
  (embedDim: number, numLayers: number, numHeads: number, numKvHeads: number, hidden: number) =>
  () =>
    sized(embedDim, numLayers, numHeads, numKvHeads, hidden, {
      vocabSize: 32000,
      maxSeqLen: 4096,
      normEps: 1e-5,
      ropeBase: 10000,
    });

const llama3 = (
  embedDim: number,
  numLayers: number,
  numHeads: number,
  hidden: number,
  extra: { maxSeqLen: number; scaling: RopeScaling | null; tied: boolean },
) =>
() =>
  sized(embedDim, numLayers, numHeads, 8, hidden, {
    vocabSize: 128256,
    maxSeqLen: extra.maxSeqLen,
    normEps: 1e-5,
    ropeBase: 500000,
    ropeScaling: extra.scaling,
    tieWordEmbeddings: extra.tied,
  });

const qwen2_5 = (
  vocabSize: number,
  embedDim: number,
  numLayers: number,
  numHeads: number,
  numKvHeads: number,
  hidden: number,
  tied: boolean,
  maxSeqLen: number,
) =>
() =>
  sized(embedDim, numLayers, numHeads, numKvHeads, hidden, {
    vocabSize,
    maxSeqLen,
    normEps: 1e-6,
    ropeBase: 1000000,
    tieWordEmbeddings: tied,
    qkvBias: true,
  });

/**
 * Qwen3 (torchtune.models.qwen3; Hugging Face Qwen3ForCausalLM): per-head q/k RMSNorm, no
 * q/k/v bias, head_dim 128 whatever embed_dim / num_heads is; `_base` has 32768 positions and
 * `_instruct` 40960 (the 32B has one builder, instruct's).
 */
function qwen3(
  size: string,
  layers: number,
  heads: number,
  dim: number,
  hidden: number,
  tied: boolean,
  variants: ("base" | "instruct" | "")[] = ["base", "instruct"],
): ModelFamilyEntry[] {
  const cfg = (maxSeqLen: number) => (): LlamaConfig => ({
    ...sized(dim, layers, heads, 8, hidden, {
      vocabSize: 151936,
      maxSeqLen,
      normEps: 1e-6,
      ropeBase: 1000000,
      tieWordEmbeddings: tied,
    }),
    ...(dim / heads === 128 ? {} : { headDim: 128 }),
    qkNorm: true,
  });
  return variants.map((v) => ({
    module: "qwen3",
    name: v ? `qwen3_${size}_${v}` : `qwen3_${size}`,
    config: cfg(v === "base" ? 32768 : 40960),
  }));
}

/** Qwen2.5 14B/32B/72B: `_base` (131072 positions, norm_eps 1e-5) and `_instruct`. */
function qwen2_5Large(
  size: string,
  layers: number,
  heads: number,
  dim: number,
  hidden: number,
): ModelFamilyEntry[] {
  const cfg = (maxSeqLen: number, normEps: number) => () => ({
    ...qwen2_5(152064, dim, layers, heads, 8, hidden, false, maxSeqLen)(),
    normEps,
  });
  return [
    { module: "qwen2_5", name: `qwen2_5_${size}_base`, config: cfg(131072, 1e-5) },
    { module: "qwen2_5", name: `qwen2_5_${size}_instruct`, config: cfg(32768, 1e-6) },
  ];
}

// llama2.c's tinyllamas: tied classifier, interleaved rotary layout (model.py).
const stories = (
  embedDim: number,
  numLayers: number,
  numHeads: number,
  numKvHeads: number,
  vocabSize: number,
  maxSeqLen: number,
  hidden: number,
) =>
() =>
  sized(embedDim, numLayers, numHeads, numKvHeads, hidden, {
    vocabSize,
    maxSeqLen,
    normEps: 1e-5,
    ropeBase: 10000,
    tieWordEmbeddings: true,
    ropeLayout: "interleaved",
  });

/** Every fixed-size model tune knows. */
export const MODEL_FAMILIES: ModelFamilyEntry[] = [
  {
    module: "llama2",
    name: "llama2_7b",
    config: llama2(4096, 32, 32, 32, 11008),
    aliases: ["torchtune.models.llama2_7b"],
  },
  {
    module: "llama2",
    name: "llama2_13b",
    config: llama2(5120, 40, 40, 40, 13824),
    aliases: ["torchtune.models.llama2_13b"],
  },
  {
    module: "llama2",
    name: "llama2_70b",
    config: llama2(8192, 80, 64, 8, 28672),
    aliases: ["torchtune.models.llama2_70b"],
  },
  {
    module: "llama3",
    name: "llama3_8b",
    config: llama3(4096, 32, 32, 14336, { maxSeqLen: 8192, scaling: null, tied: false }),
    aliases: ["torchtune.models.llama3_8b"],
  },
  {
    module: "llama3",
    name: "llama3_70b",
    config: llama3(8192, 80, 64, 28672, { maxSeqLen: 8192, scaling: null, tied: false }),
    aliases: ["torchtune.models.llama3_70b"],
  },
  {
    module: "llama3_1",
    name: "llama3_1_8b",
    config: llama3(4096, 32, 32, 14336, {
      maxSeqLen: 131072,
      scaling: LLAMA31_SCALING,
      tied: false,
    }),
  },
  {
    module: "llama3_1",
    name: "llama3_1_70b",
    config: llama3(8192, 80, 64, 28672, {
      maxSeqLen: 131072,
      scaling: LLAMA31_SCALING,
      tied: false,
    }),
  },
  {
    module: "llama3_1",
    name: "llama3_1_405b",
    config: llama3(16384, 126, 128, 53248, {
      maxSeqLen: 131072,
      scaling: LLAMA31_SCALING,
      tied: false,
    }),
  },
  {
    module: "llama3_2",
    name: "llama3_2_1b",
    config: llama3(2048, 16, 32, 8192, { maxSeqLen: 131072, scaling: LLAMA32_SCALING, tied: true }),
  },
  {
    module: "llama3_2",
    name: "llama3_2_3b",
    config: llama3(3072, 28, 24, 8192, { maxSeqLen: 131072, scaling: LLAMA32_SCALING, tied: true }),
  },
  {
    module: "llama3_3",
    name: "llama3_3_70b",
    config: llama3(8192, 80, 64, 28672, {
      maxSeqLen: 131072,
      scaling: LLAMA31_SCALING,
      tied: false,
    }),
  },
  {
    module: "mistral",
    name: "mistral_7b",
    config: () =>
      sized(4096, 32, 32, 8, 14336, {
        vocabSize: 32000,
        maxSeqLen: 32768,
        normEps: 1e-5,
        ropeBase: 10000,
      }),
  },
  // torchtune.models.qwen2 (Qwen2): q/k/v biases, small sizes tie the output
  {
    module: "qwen2",
    name: "qwen2_0_5b",
    config: qwen2_5(151936, 896, 24, 14, 2, 4864, true, 32768),
  },
  {
    module: "qwen2",
    name: "qwen2_1_5b",
    config: qwen2_5(151936, 1536, 28, 12, 2, 8960, true, 32768),
  },
  {
    module: "qwen2",
    name: "qwen2_7b",
    config: qwen2_5(152064, 3584, 28, 28, 4, 18944, false, 32768),
  },
  // torchtune.models.qwen2_5: base and instruct differ in max_seq_len (and norm_eps from 14B)
  {
    module: "qwen2_5",
    name: "qwen2_5_0_5b",
    config: qwen2_5(151936, 896, 24, 14, 2, 4864, true, 32768),
  },
  {
    module: "qwen2_5",
    name: "qwen2_5_1_5b_base",
    config: qwen2_5(151936, 1536, 28, 12, 2, 8960, true, 131072),
  },
  {
    module: "qwen2_5",
    name: "qwen2_5_1_5b_instruct",
    config: qwen2_5(151936, 1536, 28, 12, 2, 8960, true, 32768),
    // tune's earlier name of this size
    aliases: ["torchtune.models.qwen2_5.qwen2_5_1_5b"],
  },
  {
    module: "qwen2_5",
    name: "qwen2_5_3b",
    config: qwen2_5(151936, 2048, 36, 16, 2, 11008, true, 32768),
  },
  {
    module: "qwen2_5",
    name: "qwen2_5_7b_base",
    config: qwen2_5(152064, 3584, 28, 28, 4, 18944, false, 131072),
    // tune's earlier name of this size
    aliases: ["torchtune.models.qwen2_5.qwen2_5_7b"],
  },
  {
    module: "qwen2_5",
    name: "qwen2_5_7b_instruct",
    config: qwen2_5(152064, 3584, 28, 28, 4, 18944, false, 32768),
  },
  ...qwen2_5Large("14b", 48, 40, 5120, 13824),
  ...qwen2_5Large("32b", 64, 40, 5120, 27648),
  ...qwen2_5Large("72b", 80, 64, 8192, 29568),
  {
    // torchtune's phi3_mini (Phi-3-mini-4k-instruct): Llama architecture, rotate-half rope
    // (Hugging Face Phi-3 applies rotate_half directly: no q/k permutation in its files),
    // untied output; the checkpoint's fused qkv_proj / gate_up_proj are split on load.
    module: "phi3",
    name: "phi3_mini",
    config: () =>
      sized(3072, 32, 32, 32, 8192, {
        vocabSize: 32064,
        maxSeqLen: 4096,
        normEps: 1e-5,
        ropeBase: 10000,
        ropeLayout: "half",
      }),
  },
  {
    // torchtune's phi4_14b (Phi-4): the Phi-3 architecture (fused qkv/gate_up in its files)
    module: "phi4",
    name: "phi4_14b",
    config: () =>
      sized(5120, 40, 40, 10, 17920, {
        vocabSize: 100352,
        maxSeqLen: 16384,
        normEps: 1e-5,
        ropeBase: 250000,
        ropeLayout: "half",
      }),
  },
  ...qwen3("0_6b", 28, 16, 1024, 3072, true),
  ...qwen3("1_7b", 28, 16, 2048, 6144, true),
  ...qwen3("4b", 36, 32, 2560, 9728, true),
  ...qwen3("8b", 36, 32, 4096, 12288, false),
  ...qwen3("14b", 40, 40, 5120, 17408, false),
  ...qwen3("32b", 64, 64, 5120, 25600, false, [""]),
  // torchtune.models.gemma (Gemma 1): GeGLU, scaled embeddings, 1 + scale norms, tied output
  { module: "gemma", name: "gemma_2b", config: gemma2b },
  { module: "gemma", name: "gemma_7b", config: gemma7b },
  // torchtune.models.gemma2: soft-caps, windows on even layers, post-norms (gemma2.ts)
  { module: "gemma2", name: "gemma2_2b", config: gemma2_2b },
  { module: "gemma2", name: "gemma2_9b", config: gemma2_9b },
  { module: "gemma2", name: "gemma2_27b", config: gemma2_27b },
  { module: "llama2c", name: "stories15m", config: stories(288, 6, 6, 6, 32000, 256, 768) },
  { module: "llama2c", name: "stories42m", config: stories(512, 8, 8, 8, 32000, 1024, 1376) },
  { module: "llama2c", name: "stories110m", config: stories(768, 12, 12, 12, 32000, 1024, 2048) },
  { module: "llama2c", name: "stories260k", config: stories(64, 5, 8, 4, 512, 512, 172) },
];

/** Component name of a family entry: torchtune's, or tune's for llama2.c models. */
export function familyComponentName(e: ModelFamilyEntry, lora: boolean): string {
  const root = e.module === "llama2c" ? "tune.models.llama2c" : `torchtune.models.${e.module}`;
  return `${root}.${lora ? "lora_" : ""}${e.name}`;
}
