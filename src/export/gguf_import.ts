/**
 * A GGUF file (F32, F16, BF16 or Q8_0 tensors) -> tune's model: tune names, q/k rows in tune's
 * canonical "interleaved" layout, the config from the metadata. The inverse of gguf_export.ts:
 * fused tensors are split, norms lose the offset their family adds, 16-bit tensors keep their
 * dtype as `sourceDtype` so a save writes them back unchanged (Q8_0 comes back as f32).
 */
import { convertRopeLayout } from "../checkpoint/rope_permute.ts";
import type { HostTensor, StateDict } from "../params/state_dict.ts";
import { TuneError } from "../errors.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import { type GgufHeader, readGgufHeader, readGgufTensorBytes } from "./gguf_file.ts";
import { decodeGgml } from "./ggml_types.ts";
import {
  familyOfGgufArch,
  GGUF_FAMILIES,
  type GgufFamily,
  isNormScale,
  LAYER_TENSORS,
  TOP_TENSORS,
} from "./gguf_families.ts";

/** What `importGguf` returns. */
export interface GgufModel {
  stateDict: StateDict;
  config: LlamaConfig;
  family: GgufFamily;
  header: GgufHeader;
}

const SOURCE: Record<string, HostTensor["sourceDtype"]> = { F32: "f32", F16: "f16", BF16: "bf16" };

/** The shortest decimal that is the same f32 (GGUF stores epsilons and bases as f32: 1e-5, not 9.99e-6). */
function shortestF32(v: number): number {
  for (let p = 1; p <= 9; p++) {
    const c = Number(v.toPrecision(p));
    if (Math.fround(c) === v) return c;
  }
  return v;
}

function configOf(
  h: GgufHeader,
  family: GgufFamily,
  hasOutput: boolean,
  hasBias: boolean,
  vocab: number,
): LlamaConfig {
  const a = family.arch;
  const get = (k: string, fallback?: number): number => {
    const v = h.metadata.get(`${a}.${k}`);
    if (typeof v === "number") return v;
    if (fallback !== undefined) return fallback;
    throw new TuneError(`${h.path}: GGUF metadata lacks ${a}.${k}`);
  };
  const dim = get("embedding_length");
  const nHeads = get("attention.head_count");
  const hs = get("attention.key_length", dim / nHeads);
  const rs = h.metadata.get("tune.rope_scaling") as number[] | undefined;
  if (!rs && h.tensors.some((t) => t.name === "rope_freqs.weight")) {
    throw new TuneError(
      `${h.path}: rope_freqs.weight (Llama 3.1 rope scaling) without tune.rope_scaling; ` +
        `tune imports the rope scaling of GGUF files it exported only`,
    );
  }
  return {
    vocabSize: vocab,
    dim,
    nLayers: get("block_count"),
    nHeads,
    nKvHeads: get("attention.head_count_kv", nHeads),
    hiddenDim: get("feed_forward_length"),
    normEps: shortestF32(get("attention.layer_norm_rms_epsilon")),
    ropeTheta: shortestF32(get("rope.freq_base", 10000)),
    ropeScaling: rs
      ? {
        factor: rs[0],
        lowFreqFactor: rs[1],
        highFreqFactor: rs[2],
        originalMaxPositionEmbeddings: rs[3],
      }
      : null,
    ropeLayout: family.ropeLayout,
    maxSeqLen: get("context_length"),
    tiedEmbeddings: !hasOutput,
    qkvBias: hasBias,
    ...(hs !== dim / nHeads ? { headDim: hs } : {}),
    ...(get("rope.dimension_count", hs) !== hs
      ? { partialRotaryFactor: get("rope.dimension_count") / hs }
      : {}),
    ...family.tuneConfig,
    ...(family.arch === "gemma2" ? gemma2Fields(h, a, dim, nHeads, hs, get) : {}),
  };
}

/** Gemma 2's soft-caps, window and attention scale from its gemma2.* metadata. */
function gemma2Fields(
  h: GgufHeader,
  a: string,
  dim: number,
  nHeads: number,
  hs: number,
  get: (k: string, fallback?: number) => number,
): Partial<LlamaConfig> {
  const out: Partial<LlamaConfig> = {
    queryPreAttnScalar: get("block_count") === 46 ? dim / nHeads : hs,
  };
  const cap = (k: string) => h.metadata.get(`${a}.${k}`);
  if (typeof cap("attn_logit_softcapping") === "number") {
    out.attnSoftcap = shortestF32(cap("attn_logit_softcapping") as number);
  }
  if (typeof cap("final_logit_softcapping") === "number") {
    out.finalSoftcap = shortestF32(cap("final_logit_softcapping") as number);
  }
  const w = cap("attention.sliding_window");
  if (typeof w === "number") out.slidingWindow = w;
  return out;
}

/** Read a GGUF file into tune's model. */
export function importGguf(path: string): GgufModel {
  const h = readGgufHeader(path);
  const arch = String(h.metadata.get("general.architecture"));
  const family = familyOfGgufArch(arch);
  if (!family) {
    throw new TuneError(
      `${path}: GGUF architecture ${arch} is not one tune runs (${
        GGUF_FAMILIES.map((f) => f.arch).join(", ")
      })`,
    );
  }
  const fromTop = new Map(Object.entries(TOP_TENSORS).map(([k, v]) => [v, k]));
  const fromLayer = new Map(Object.entries(LAYER_TENSORS).map(([k, v]) => [v, k]));
  const fused = new Map(family.fused.map((f) => [f.gguf, f.parts]));
  const raw: StateDict = new Map();
  const file = Deno.openSync(path, { read: true });
  const fusedSeen: [string, HostTensor, string[]][] = [];
  try {
    for (const t of h.tensors) {
      if (t.name === "rope_freqs.weight") continue; // recomputed from tune.rope_scaling
      const data = decodeGgml(readGgufTensorBytes(file, t), t.type);
      const ht: HostTensor = { shape: t.shape, data, sourceDtype: SOURCE[t.type] ?? "f32" };
      const m = /^blk\.(\d+)\.(.+)$/.exec(t.name);
      if (m && fused.has(m[2])) {
        fusedSeen.push([`layers.${m[1]}.`, ht, fused.get(m[2])!]);
        continue;
      }
      const name = m
        ? (fromLayer.has(m[2]) ? `layers.${m[1]}.${fromLayer.get(m[2])}` : undefined)
        : fromTop.get(t.name);
      if (!name) throw new TuneError(`${path}: tensor ${t.name} is not one tune reads for ${arch}`);
      raw.set(name, ht);
    }
  } finally {
    file.close();
  }
  const embed = raw.get("tok_embeddings.weight");
  if (!embed) throw new TuneError(`${path}: no token_embd.weight tensor`);
  const cfg = configOf(
    h,
    family,
    raw.has("output.weight"),
    [...raw.keys()].some((k) => k.endsWith("attn.q_proj.bias")),
    embed.shape[0],
  );
  const hs = cfg.headDim ?? cfg.dim / cfg.nHeads;
  for (const [p, t, parts] of fusedSeen) {
    const rows = parts.length === 3
      ? [cfg.nHeads * hs, cfg.nKvHeads * hs, cfg.nKvHeads * hs]
      : [cfg.hiddenDim, cfg.hiddenDim];
    const cols = t.shape[1];
    let at = 0;
    parts.forEach((part, i) => {
      const data = t.data.slice(at * cols, (at + rows[i]) * cols); // (rows[i], C)
      raw.set(p + part, { shape: [rows[i], cols], data, sourceDtype: t.sourceDtype });
      at += rows[i];
    });
  }
  const offset = cfg.normOffset ?? 0;
  if (offset) {
    for (const [k, t] of raw) {
      if (isNormScale(k)) {
        raw.set(k, {
          ...t,
          data: t.data.map((v: number) => Math.fround(v - offset)),
        });
      }
    }
  }
  const stateDict = convertRopeLayout(raw, cfg, "interleaved");
  return { stateDict, config: { ...cfg, ropeLayout: "interleaved" }, family, header: h };
}
