/**
 * tune's model (tune names, any rotary layout) -> a GGUF v3 file llama.cpp runs.
 *
 * Tensor names and metadata keys come from the family's row (gguf_families.ts); q/k rows are
 * permuted to the layout llama.cpp's rope type expects; 1-D tensors (norms, biases) are
 * stored F32 as llama.cpp's converter does, 2-D ones in the requested type (Q8_0 falls back to
 * F16 for a matrix whose rows are not a multiple of 32 values). Llama 3.1-style rope scaling
 * is stored as llama.cpp's `rope_freqs.weight` (one divisor per frequency), and its four
 * numbers as `tune.rope_scaling` so an import restores the config.
 */
import type { LlamaConfig } from "../models/llama/config.ts";
import { headSize, rotaryDims } from "../models/llama/config.ts";
import { ropeFrequencies } from "../modules/rope.ts";
import { convertRopeLayout } from "../checkpoint/rope_permute.ts";
import type { HostTensor, StateDict } from "../params/state_dict.ts";
import { TuneError } from "../errors.ts";
import { type GgmlTypeName, type GgufTensorOut, type GgufValue, writeGguf } from "./gguf_file.ts";
import { encodeGgml } from "./ggml_types.ts";
import {
  gemma2LlamaCppScalar,
  type GgufFamily,
  isNormScale,
  LAYER_TENSORS,
  TOP_TENSORS,
} from "./gguf_families.ts";

/** Output types of `tune export gguf --dtype`. */
export type GgufDtype = "f32" | "f16" | "bf16" | "q8_0";

const GGML_OF: Record<GgufDtype, GgmlTypeName> = {
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
  q8_0: "Q8_0",
};
/** llama.cpp's `general.file_type` (enum llama_ftype). */
const FILE_TYPE: Record<GgufDtype, number> = { f32: 0, f16: 1, q8_0: 7, bf16: 32 };

/** What `exportGguf` writes. */
export interface GgufExportOptions {
  family: GgufFamily;
  dtype: GgufDtype;
  /** `tokenizer.*` metadata (gguf_tokenizer.ts). */
  tokenizer: Map<string, GgufValue>;
  /** `general.name`. */
  name: string;
}

/** The GGUF tensor list of `sd` (tune names, layout `cfg.ropeLayout`), data not yet encoded. */
export function ggufTensors(
  sd: StateDict,
  cfg: LlamaConfig,
  family: GgufFamily,
  dtype: GgufDtype,
): GgufTensorOut[] {
  const laid = convertRopeLayout(sd, cfg, family.ropeLayout);
  const offset = cfg.normOffset ?? 0;
  const out: GgufTensorOut[] = [];
  const typeOf = (t: HostTensor): GgmlTypeName => {
    if (t.shape.length < 2) return "F32";
    const want = GGML_OF[dtype];
    return want === "Q8_0" && t.shape[t.shape.length - 1] % 32 !== 0 ? "F16" : want;
  };
  const push = (name: string, t: HostTensor, tuneName: string) => {
    const type = typeOf(t);
    const data = isNormScale(tuneName) && offset
      ? t.data.map((v: number) => Math.fround(v + offset))
      : t.data;
    out.push({ name, shape: t.shape, type, encode: () => encodeGgml(data, type) });
  };
  for (const [tuneName, gguf] of Object.entries(TOP_TENSORS)) {
    const t = laid.get(tuneName);
    if (t) push(gguf, t, tuneName);
  }
  if (cfg.ropeScaling) {
    const hs = headSize(cfg);
    const plain = ropeFrequencies(hs, cfg.ropeTheta, null);
    const scaled = ropeFrequencies(hs, cfg.ropeTheta, cfg.ropeScaling);
    const factors = plain.map((f, i) => f / scaled[i]); // (HS/2) divisors of each frequency
    out.push({
      name: "rope_freqs.weight",
      shape: [hs / 2],
      type: "F32",
      encode: () => encodeGgml(factors, "F32"),
    });
  }
  const fusedParts = new Set(family.fused.flatMap((f) => f.parts));
  for (let i = 0; i < cfg.nLayers; i++) {
    const p = `layers.${i}.`;
    for (const f of family.fused) {
      const parts = f.parts.map((n) => laid.get(p + n));
      if (parts.some((x) => !x)) throw new TuneError(`${p}: missing one of ${f.parts.join(", ")}`);
      const cols = parts[0]!.shape[1];
      const rows = parts.reduce((a, x) => a + x!.shape[0], 0);
      const data = new Float32Array(rows * cols); // (sum of rows, C)
      let at = 0;
      for (const x of parts) (data.set(x!.data, at), (at += x!.data.length));
      push(`blk.${i}.${f.gguf}`, { shape: [rows, cols], data }, p + f.parts[0]);
    }
    for (const [local, gguf] of Object.entries(LAYER_TENSORS)) {
      if (fusedParts.has(local)) continue;
      const t = laid.get(p + local);
      if (t) push(`blk.${i}.${gguf}`, t, p + local);
    }
  }
  const known = new Set([
    ...Object.keys(TOP_TENSORS),
    ...[...laid.keys()].filter((k) =>
      /^layers\.\d+\./.test(k) && LAYER_TENSORS[k.replace(/^layers\.\d+\./, "")]
    ),
  ]);
  for (const k of laid.keys()) {
    if (!known.has(k)) {
      throw new TuneError(
        `tensor ${k} has no GGUF name for ${family.arch}; merge LoRA weights before export`,
      );
    }
  }
  return out;
}

/** The `general.*` and `<arch>.*` metadata of a model. */
export function ggufModelMetadata(
  cfg: LlamaConfig,
  family: GgufFamily,
  dtype: GgufDtype,
  name: string,
): Map<string, GgufValue> {
  const a = family.arch;
  const hs = headSize(cfg);
  const u32 = (value: number): GgufValue => ({ type: "u32", value });
  const f32 = (value: number): GgufValue => ({ type: "f32", value });
  const m = new Map<string, GgufValue>([
    ["general.architecture", { type: "string", value: a }],
    ["general.name", { type: "string", value: name }],
    ["general.file_type", u32(FILE_TYPE[dtype])],
  ]);
  if (dtype === "q8_0") m.set("general.quantization_version", u32(2));
  m.set(`${a}.vocab_size`, u32(cfg.vocabSize));
  m.set(`${a}.context_length`, u32(cfg.maxSeqLen));
  m.set(`${a}.embedding_length`, u32(cfg.dim));
  m.set(`${a}.block_count`, u32(cfg.nLayers));
  m.set(`${a}.feed_forward_length`, u32(cfg.hiddenDim));
  m.set(`${a}.attention.head_count`, u32(cfg.nHeads));
  m.set(`${a}.attention.head_count_kv`, u32(cfg.nKvHeads));
  m.set(`${a}.attention.key_length`, u32(hs));
  m.set(`${a}.attention.value_length`, u32(hs));
  m.set(`${a}.attention.layer_norm_rms_epsilon`, f32(cfg.normEps));
  m.set(`${a}.rope.dimension_count`, u32(rotaryDims(cfg)));
  if (family.arch === "gemma2") {
    if ((cfg.queryPreAttnScalar ?? hs) !== gemma2LlamaCppScalar(cfg, hs)) {
      throw new TuneError(
        `query_pre_attn_scalar ${cfg.queryPreAttnScalar} cannot be expressed in GGUF: llama.cpp ` +
          `scales Gemma 2 attention by 1/sqrt(${gemma2LlamaCppScalar(cfg, hs)})`,
      );
    }
    if (cfg.attnSoftcap) m.set(`${a}.attn_logit_softcapping`, f32(cfg.attnSoftcap));
    if (cfg.finalSoftcap) m.set(`${a}.final_logit_softcapping`, f32(cfg.finalSoftcap));
    if (cfg.slidingWindow !== undefined) {
      m.set(`${a}.attention.sliding_window`, u32(cfg.slidingWindow));
    }
  }
  m.set(`${a}.rope.freq_base`, f32(cfg.ropeTheta));
  if (cfg.ropeScaling) {
    const s = cfg.ropeScaling;
    m.set("tune.rope_scaling", {
      type: "array",
      of: "f32",
      value: [s.factor, s.lowFreqFactor, s.highFreqFactor, s.originalMaxPositionEmbeddings],
    });
  }
  return m;
}

/** Write `sd` (tune names, layout `cfg.ropeLayout`) as a GGUF file at `path`. */
export function exportGguf(
  path: string,
  sd: StateDict,
  cfg: LlamaConfig,
  options: GgufExportOptions,
): void {
  const meta = ggufModelMetadata(cfg, options.family, options.dtype, options.name);
  for (const [k, v] of options.tokenizer) meta.set(k, v);
  writeGguf(path, meta, ggufTensors(sd, cfg, options.family, options.dtype));
}
