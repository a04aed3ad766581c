/**
 * Tiny random Hugging Face checkpoints, one per model family tune exports to GGUF, each a
 * complete model folder: config.json, model.safetensors (f16 values, so an f32 or f16 export
 * holds exactly the weights tune runs), the tokenizer files and a generation_config.json.
 * SentencePiece families use a small SentencePiece BPE model (tests/fixtures; Phi-3 adds its
 * chat tokens past it, as Phi-3's tokenizer_config.json does); byte-level BPE families
 * (Llama 3.2, Qwen2) a small tokenizer.json built here (the 256 byte symbols, a few merges,
 * the family's special tokens).
 */
import { join } from "node:path";
import type { CheckpointerOptions } from "../src/checkpoint/checkpointer.ts";
import { f16ToF32, f32ToF16 } from "../src/checkpoint/dtype.ts";
import { saveHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { hfConfigJson } from "../src/checkpoint/hf_config.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import { SeededRandom } from "../src/params/random.ts";
import { LLAMA3_PATTERN } from "../src/tokenizers/_regex.ts";
import { qwen2TokenizerJson } from "../src/tokenizers/hf_tokenizer.ts";

/** A 320-piece SentencePiece BPE model with byte fallback (tests/fixtures). */
const SMALL_SP = new URL("./fixtures/tokenizer_sp_small.model", import.meta.url).pathname;

/** One tiny family checkpoint. */
export interface TinyFamily {
  /** Test name. */
  name: string;
  /** config.json architecture. */
  arch: string;
  config: LlamaConfig;
  tokenizer: "sp" | "llama3" | "qwen2";
  /** Extra config.json keys. */
  extra?: Record<string, unknown>;
}

const SP_VOCAB = 320;
/** Phi-3's added chat tokens, at SP_VOCAB + offset (Phi-3 Mini puts them at 32000 + offset). */
const PHI3_ADDED: [string, number][] = [
  ["<|endoftext|>", 0],
  ["<|assistant|>", 1],
  ["<|system|>", 6],
  ["<|end|>", 7],
  ["<|user|>", 10],
];

function base(vocab: number): LlamaConfig {
  return {
    vocabSize: vocab,
    dim: 64,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    hiddenDim: 128,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    ropeLayout: "half",
    maxSeqLen: 256,
    tiedEmbeddings: false,
    qkvBias: false,
  };
}

/** GPT-2's byte -> printable character table (byte-level BPE symbols). */
export function byteSymbols(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const out: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = keep.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + n++);
  }
  return out;
}

const MERGES = [
  "Ġ t",
  "h e",
  "Ġt he",
  "i n",
  "a n",
  "e r",
  "o n",
  "Ġ a",
  "r e",
  "Ġ s",
  "Ġ w",
  "o u",
  "e n",
  "Ġ b",
  "Ġ o",
  "i s",
  "a t",
  "Ġ c",
  "Ġ f",
  "o r",
  "Ġ m",
  "Ġ d",
  "l l",
  "i t",
  "Ġ h",
  "e d",
  "Ġ p",
  "in g",
  "Ġ l",
  "Ġ n",
  "Ġ i",
  "a r",
  "Ġ g",
  "Ġ y",
  "Ġ u",
  "e s",
];

/** A small byte-level BPE vocabulary: 256 byte symbols then one token per merge. */
function bpeVocab(): { vocab: Record<string, number>; merges: string[] } {
  const vocab: Record<string, number> = {};
  byteSymbols().forEach((s, i) => (vocab[s] = i));
  let id = 256;
  for (const m of MERGES) vocab[m.replace(" ", "")] = id++;
  return { vocab, merges: MERGES };
}

/** The tokenizer.json (+ tokenizer_config.json) of a BPE family, and its token count. */
export function bpeTokenizerFiles(kind: "llama3" | "qwen2"): {
  json: unknown;
  config: Record<string, unknown>;
  count: number;
} {
  const { vocab, merges } = bpeVocab();
  const n = Object.keys(vocab).length;
  if (kind === "qwen2") {
    const specials = { "<|endoftext|>": n, "<|im_start|>": n + 1, "<|im_end|>": n + 2 };
    const json = qwen2TokenizerJson(vocab, merges.join("\n"), specials);
    const config = {
      bos_token: null,
      eos_token: "<|im_end|>",
      pad_token: "<|endoftext|>",
      add_bos_token: false,
      chat_template:
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
    };
    return { json, config, count: n + 3 };
  }
  const specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"];
  const json = {
    model: { type: "BPE", vocab, merges, ignore_merges: true },
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: LLAMA3_PATTERN }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, {
        Sequence: { id: "A", type_id: 0 },
      }],
      pair: [],
      special_tokens: {
        "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [n], tokens: ["<|begin_of_text|>"] },
      },
    },
    decoder: { type: "ByteLevel" },
    added_tokens: specials.map((content, i) => ({ id: n + i, content, special: true })),
  };
  const config = {
    bos_token: "<|begin_of_text|>",
    eos_token: "<|eot_id|>",
    chat_template:
      "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}",
  };
  return { json, config, count: n + specials.length };
}

/** The families tune exports, one tiny model each. */
export function tinyFamilies(): TinyFamily[] {
  const bpe3 = bpeTokenizerFiles("llama3").count;
  const bpeQ = bpeTokenizerFiles("qwen2").count;
  return [
    { name: "llama2", arch: "LlamaForCausalLM", config: base(SP_VOCAB), tokenizer: "sp" },
    {
      name: "llama3_2",
      arch: "LlamaForCausalLM",
      config: {
        ...base(bpe3),
        ropeTheta: 500000,
        tiedEmbeddings: true,
        ropeScaling: {
          factor: 32,
          lowFreqFactor: 1,
          highFreqFactor: 4,
          originalMaxPositionEmbeddings: 64,
        },
      },
      tokenizer: "llama3",
    },
    { name: "mistral", arch: "MistralForCausalLM", config: base(SP_VOCAB), tokenizer: "sp" },
    {
      name: "qwen2",
      arch: "Qwen2ForCausalLM",
      config: { ...base(bpeQ), qkvBias: true, tiedEmbeddings: true, ropeTheta: 1000000 },
      tokenizer: "qwen2",
    },
    {
      name: "qwen3",
      arch: "Qwen3ForCausalLM",
      config: {
        ...base(bpeQ),
        qkNorm: true,
        headDim: 32,
        tiedEmbeddings: true,
        ropeTheta: 1000000,
      },
      tokenizer: "qwen2",
    },
    {
      name: "gemma",
      arch: "GemmaForCausalLM",
      config: {
        ...base(SP_VOCAB),
        nKvHeads: 1,
        headDim: 32,
        tiedEmbeddings: true,
        hiddenAct: "gelu_tanh",
        embedScale: true,
        normOffset: 1,
        normEps: 1e-6,
      },
      tokenizer: "sp",
    },
    {
      name: "phi3",
      arch: "Phi3ForCausalLM",
      config: { ...base(SP_VOCAB + 32), nKvHeads: 4 }, // embeddings padded, as Phi-3's 32064
      tokenizer: "sp",
    },
  ];
}

/**
 * A tiny Gemma 2 (kept out of `tinyFamilies()`, whose per-family file lists it would join):
 * every feature on, a window (3) shorter than the sequences on the even layers, both
 * soft-caps, norms after attention and the MLP; query_pre_attn_scalar = head_dim, the scale
 * llama.cpp applies.
 */
export function tinyGemma2(): TinyFamily {
  const g = tinyFamilies().find((f) => f.name === "gemma")!;
  return {
    name: "gemma2",
    arch: "Gemma2ForCausalLM",
    config: {
      ...g.config,
      slidingWindow: 3,
      windowLayers: "even",
      attnSoftcap: 50,
      finalSoftcap: 30,
      queryPreAttnScalar: g.config.headDim,
      postNorms: true,
    },
    tokenizer: "sp",
  };
}

/** Seeded random weights (rounded to f16) for `cfg`, tune names, "half" q/k layout. */
export function randomWeights(cfg: LlamaConfig, seed: number): StateDict {
  const rng = new SeededRandom(seed);
  const hs = cfg.headDim ?? cfg.dim / cfg.nHeads;
  const sd: StateDict = new Map();
  const f16 = new Float32Array(1);
  const t = (shape: number[], std: number, mean = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      f16[0] = mean + std * rng.normal();
      data[i] = f16ToNearest(f16[0]);
    }
    return { shape, data, sourceDtype: "f16" as const };
  };
  const C = cfg.dim, H = cfg.hiddenDim, V = cfg.vocabSize;
  const norm = cfg.normOffset ? 0 : 1;
  sd.set("tok_embeddings.weight", t([V, C], 1));
  for (let i = 0; i < cfg.nLayers; i++) {
    const p = `layers.${i}.`;
    sd.set(p + "sa_norm.scale", t([C], 0.1, norm));
    sd.set(p + "attn.q_proj.weight", t([cfg.nHeads * hs, C], 1 / Math.sqrt(C)));
    sd.set(p + "attn.k_proj.weight", t([cfg.nKvHeads * hs, C], 1 / Math.sqrt(C)));
    sd.set(p + "attn.v_proj.weight", t([cfg.nKvHeads * hs, C], 1 / Math.sqrt(C)));
    if (cfg.qkvBias) {
      sd.set(p + "attn.q_proj.bias", t([cfg.nHeads * hs], 0.1));
      sd.set(p + "attn.k_proj.bias", t([cfg.nKvHeads * hs], 0.1));
      sd.set(p + "attn.v_proj.bias", t([cfg.nKvHeads * hs], 0.1));
    }
    if (cfg.qkNorm) {
      sd.set(p + "attn.q_norm.scale", t([hs], 0.1, 1));
      sd.set(p + "attn.k_norm.scale", t([hs], 0.1, 1));
    }
    sd.set(p + "attn.output_proj.weight", t([C, cfg.nHeads * hs], 1 / Math.sqrt(C)));
    sd.set(p + "mlp_norm.scale", t([C], 0.1, norm));
    sd.set(p + "mlp.w1.weight", t([H, C], 1 / Math.sqrt(C)));
    sd.set(p + "mlp.w2.weight", t([C, H], 1 / Math.sqrt(H)));
    sd.set(p + "mlp.w3.weight", t([H, C], 1 / Math.sqrt(C)));
    if (cfg.postNorms) {
      // Gemma 2's norms after attention and after the MLP (drawn last: other families'
      // weights stay the same)
      sd.set(p + "sa_scale.scale", t([C], 0.1, norm));
      sd.set(p + "mlp_scale.scale", t([C], 0.1, norm));
    }
  }
  sd.set("norm.scale", t([C], 0.1, norm));
  if (!cfg.tiedEmbeddings) sd.set("output.weight", t([V, C], 6 / Math.sqrt(C))); // peaked next-token distributions
  return sd;
}

function f16ToNearest(v: number): number {
  return f16ToF32(f32ToF16(v));
}

/** Write family `f` as a complete Hugging Face folder in `dir`. */
export function writeTinyFamily(f: TinyFamily, dir: string, seed = 7): void {
  const sd = randomWeights(f.config, seed);
  const modelType = f.arch === "Phi3ForCausalLM"
    ? "PHI3_MINI"
    : f.arch === "GemmaForCausalLM"
    ? "GEMMA"
    : f.arch === "Gemma2ForCausalLM"
    ? "GEMMA2"
    : f.arch === "Qwen2ForCausalLM"
    ? "QWEN2"
    : f.arch === "Qwen3ForCausalLM"
    ? "QWEN3"
    : f.arch === "MistralForCausalLM"
    ? "MISTRAL"
    : "LLAMA3_2";
  const configJson = { ...hfConfigJson(f.config, { modelType }), ...(f.extra ?? {}) };
  saveHfCheckpoint(dir, sd, f.config, { configJson, modelType });
  if (f.tokenizer === "sp") {
    Deno.copyFileSync(SMALL_SP, join(dir, "tokenizer.model"));
    Deno.writeTextFileSync(
      join(dir, "tokenizer_config.json"),
      JSON.stringify(
        {
          bos_token: "<s>",
          eos_token: f.arch === "Phi3ForCausalLM" ? "<|endoftext|>" : "</s>",
          add_bos_token: true,
          ...(f.arch === "Phi3ForCausalLM"
            ? {
              added_tokens_decoder: Object.fromEntries(
                PHI3_ADDED.map(([content, k]) => [SP_VOCAB + k, { content, special: true }]),
              ),
              chat_template:
                "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}",
            }
            : {}),
        },
        null,
        2,
      ),
    );
  } else {
    const t = bpeTokenizerFiles(f.tokenizer);
    Deno.writeTextFileSync(join(dir, "tokenizer.json"), JSON.stringify(t.json));
    Deno.writeTextFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(t.config, null, 2));
  }
  Deno.writeTextFileSync(
    join(dir, "generation_config.json"),
    JSON.stringify({ do_sample: false, max_new_tokens: 32 }, null, 2),
  );
}

/** Checkpointer options reading `input` and writing `output` (torchtune keys' defaults). */
export function checkpointerOptions(
  input: string,
  output: string,
  more: Partial<CheckpointerOptions> = {},
): CheckpointerOptions {
  return {
    checkpointDir: input,
    checkpointFiles: [],
    outputDir: output,
    modelType: "LLAMA3_2",
    adapterCheckpoint: null,
    recipeCheckpoint: null,
    resumeFromCheckpoint: false,
    ...more,
  };
}
