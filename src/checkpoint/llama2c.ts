/**
 * llama2.c model files (karpathy/llama2.c export.py / run.c), read and write.
 *
 * Legacy (version 0) layout, all little-endian:
 *   header: 7 int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *           (a negative vocab_size means the classifier is NOT shared with the embedding)
 *   fp32:   tok_embeddings (V, C); attention_norm (L, C); wq (L, C, C); wk (L, KV, C);
 *           wv (L, KV, C); wo (L, C, C); ffn_norm (L, C); w1 (L, H, C); w2 (L, C, H);
 *           w3 (L, H, C); norm (C); freq_cis_real (seq_len, HS/2); freq_cis_imag
 *           (seq_len, HS/2) (skipped on read, recomputed on write); output (V, C) if unshared
 * Versioned header (256 bytes): uint32 magic 0x616b3432 ("ak42"), int32 version, the 7
 * int32 above (vocab_size positive), uint8 shared_classifier, (version 2: int32 group_size),
 * zero padding. Version 1 (fp32): attention_norm (L, C), ffn_norm (L, C), norm (C),
 * tok_embeddings, wq, wk, wv, wo, w1, w2, w3 (each (L, ...)), output if unshared.
 * Version 2 (Q8_0): the three norms in fp32, then every matrix of the version 1 order
 * (per layer) as int8 values followed by fp32 scales, one per group_size values.
 *
 * Weights are Meta/llama2.c layout, so the StateDict has ropeLayout "interleaved"; run.c
 * hardcodes rope theta 10000 and RMSNorm epsilon 1e-5.
 */
import { headSize, hiddenAct, type LlamaConfig } from "../models/llama/config.ts";
import { TuneError } from "../errors.ts";
import { ropeTables } from "../modules/rope.ts";
import { atomicWrite } from "./atomic_write.ts";
import { convertRopeLayout } from "./rope_permute.ts";
import type { StateDict } from "../params/state_dict.ts";

/** "ak42" as a little-endian uint32. */
export const LLAMA2C_MAGIC = 0x616b3432;

/** A parsed llama2.c file. */
export interface Llama2cModel {
  config: LlamaConfig;
  /** Tune names, fp32, ropeLayout "interleaved". */
  stateDict: StateDict;
  /** 0 for the legacy header, else the header's version. */
  version: number;
}

interface Dims {
  dim: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  seqLen: number;
  shared: boolean;
}

function configOf(d: Dims): LlamaConfig {
  return {
    vocabSize: d.vocab,
    dim: d.dim,
    nLayers: d.layers,
    nHeads: d.heads,
    nKvHeads: d.kvHeads,
    hiddenDim: d.hidden,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    ropeLayout: "interleaved",
    maxSeqLen: d.seqLen,
    tiedEmbeddings: d.shared,
    qkvBias: false,
  };
}

/** The per-layer matrices in file order with their (rows, cols). */
function layerMatrices(d: Dims): { name: string; rows: number; cols: number }[] {
  const hs = d.dim / d.heads;
  const q = d.heads * hs;
  const kv = d.kvHeads * hs;
  return [
    { name: "attn.q_proj", rows: q, cols: d.dim },
    { name: "attn.k_proj", rows: kv, cols: d.dim },
    { name: "attn.v_proj", rows: kv, cols: d.dim },
    { name: "attn.output_proj", rows: d.dim, cols: q },
    { name: "mlp.w1", rows: d.hidden, cols: d.dim },
    { name: "mlp.w2", rows: d.dim, cols: d.hidden },
    { name: "mlp.w3", rows: d.hidden, cols: d.dim },
  ];
}

function checkDims(d: Dims, source: string): void {
  const ok = [d.dim, d.hidden, d.layers, d.heads, d.kvHeads, d.vocab, d.seqLen].every((x) =>
    Number.isInteger(x) && x > 0 && x < 1 << 24
  );
  if (!ok || d.dim % d.heads !== 0 || d.heads % d.kvHeads !== 0 || (d.dim / d.heads) % 2 !== 0) {
    throw new TuneError(
      `${source} is not a llama2.c model file: implausible header (dim ${d.dim}, hidden_dim ${d.hidden}, n_layers ${d.layers}, n_heads ${d.heads}, n_kv_heads ${d.kvHeads}, vocab_size ${d.vocab}, seq_len ${d.seqLen})`,
    );
  }
}

/** Float reader over a byte array at a moving offset. */
class Cursor {
  pos: number;
  constructor(readonly bytes: Uint8Array, start: number, readonly source: string) {
    this.pos = start;
  }
  f32(n: number): Float32Array {
    return new Float32Array(this.#take(4 * n).buffer);
  }
  i8(n: number): Int8Array {
    return new Int8Array(this.#take(n).buffer);
  }
  /** A copy of the next `length` bytes (its own buffer, so any typed array can view it). */
  #take(length: number): Uint8Array {
    const need = this.pos + length;
    if (need > this.bytes.length) this.#short(need);
    const out = this.bytes.slice(this.pos, need);
    this.pos = need;
    return out;
  }
  skip(nFloats: number): void {
    this.pos += 4 * nFloats;
    if (this.pos > this.bytes.length) this.#short(this.pos);
  }
  #short(need: number): never {
    throw new TuneError(
      `${this.source} is truncated: the header implies at least ${need} bytes but the file has ${this.bytes.length}; re-export the model`,
    );
  }
}

/** Split an (L, rows, cols) block into per-layer tensors named layers.{i}.<name>.weight. */
function putLayers(sd: StateDict, all: Float32Array, d: Dims, name: string, shape: number[]) {
  const per = shape.reduce((a, b) => a * b, 1);
  for (let i = 0; i < d.layers; i++) {
    sd.set(`layers.${i}.${name}`, { shape, data: all.slice(i * per, (i + 1) * per) });
  }
}

/** Parse llama2.c file bytes (legacy, version 1 or version 2). `source` names it in errors. */
export function parseLlama2c(bytes: Uint8Array, source = "llama2.c file"): Llama2cModel {
  if (bytes.length < 28) {
    throw new TuneError(`${source} is too short (${bytes.length} bytes) to be a llama2.c model`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = dv.getUint32(0, true);
  const sd: StateDict = new Map();
  if (magic !== LLAMA2C_MAGIC) {
    const h = (i: number) => dv.getInt32(4 * i, true);
    const d: Dims = {
      dim: h(0),
      hidden: h(1),
      layers: h(2),
      heads: h(3),
      kvHeads: h(4),
      vocab: Math.abs(h(5)),
      seqLen: h(6),
      shared: h(5) > 0,
    };
    checkDims(d, source);
    const c = new Cursor(bytes, 28, source);
    const C = d.dim;
    sd.set("tok_embeddings.weight", { shape: [d.vocab, C], data: c.f32(d.vocab * C) });
    putLayers(sd, c.f32(d.layers * C), d, "sa_norm.scale", [C]);
    const mats = layerMatrices(d);
    for (const m of mats.slice(0, 4)) {
      putLayers(sd, c.f32(d.layers * m.rows * m.cols), d, `${m.name}.weight`, [m.rows, m.cols]);
    }
    putLayers(sd, c.f32(d.layers * C), d, "mlp_norm.scale", [C]);
    for (const m of mats.slice(4)) {
      putLayers(sd, c.f32(d.layers * m.rows * m.cols), d, `${m.name}.weight`, [m.rows, m.cols]);
    }
    sd.set("norm.scale", { shape: [C], data: c.f32(C) });
    c.skip(d.seqLen * (C / d.heads)); // freq_cis_real and freq_cis_imag, (seq_len, HS/2) each
    if (!d.shared) sd.set("output.weight", { shape: [d.vocab, C], data: c.f32(d.vocab * C) });
    expectEnd(c, source);
    return { config: configOf(d), stateDict: sd, version: 0 };
  }

  if (bytes.length < 256) {
    throw new TuneError(`${source} has a llama2.c magic but no 256-byte header`);
  }
  const version = dv.getInt32(4, true);
  if (version !== 1 && version !== 2) {
    throw new TuneError(
      `${source} is llama2.c format version ${version}; tune reads versions 0 (legacy), 1 (fp32) and 2 (int8), re-export with export.py --version 1`,
    );
  }
  const h = (i: number) => dv.getInt32(8 + 4 * i, true);
  const d: Dims = {
    dim: h(0),
    hidden: h(1),
    layers: h(2),
    heads: h(3),
    kvHeads: h(4),
    vocab: h(5),
    seqLen: h(6),
    shared: bytes[36] !== 0,
  };
  checkDims(d, source);
  const C = d.dim;
  const c = new Cursor(bytes, 256, source);
  putLayers(sd, c.f32(d.layers * C), d, "sa_norm.scale", [C]);
  putLayers(sd, c.f32(d.layers * C), d, "mlp_norm.scale", [C]);
  sd.set("norm.scale", { shape: [C], data: c.f32(C) });
  const mats = layerMatrices(d);
  if (version === 1) {
    sd.set("tok_embeddings.weight", { shape: [d.vocab, C], data: c.f32(d.vocab * C) });
    for (const m of mats) {
      putLayers(sd, c.f32(d.layers * m.rows * m.cols), d, `${m.name}.weight`, [m.rows, m.cols]);
    }
    if (!d.shared) sd.set("output.weight", { shape: [d.vocab, C], data: c.f32(d.vocab * C) });
  } else {
    const gs = dv.getInt32(37, true);
    if (!(gs > 0)) throw new TuneError(`${source}: version 2 header has group size ${gs}`);
    const q80 = (n: number) => {
      if (n % gs !== 0) {
        throw new TuneError(
          `${source}: a tensor of ${n} values is not a multiple of group size ${gs}`,
        );
      }
      const q = c.i8(n);
      const s = c.f32(n / gs);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = q[i] * s[Math.floor(i / gs)];
      return out;
    };
    sd.set("tok_embeddings.weight", { shape: [d.vocab, C], data: q80(d.vocab * C) });
    for (const m of mats) {
      for (let i = 0; i < d.layers; i++) {
        sd.set(`layers.${i}.${m.name}.weight`, {
          shape: [m.rows, m.cols],
          data: q80(m.rows * m.cols),
        });
      }
    }
    if (!d.shared) sd.set("output.weight", { shape: [d.vocab, C], data: q80(d.vocab * C) });
  }
  expectEnd(c, source);
  return { config: configOf(d), stateDict: sd, version };
}

function expectEnd(c: Cursor, source: string): void {
  if (c.pos !== c.bytes.length) {
    throw new TuneError(
      `${source} has ${
        c.bytes.length - c.pos
      } bytes after the last tensor its header describes; it is not a llama2.c model of that shape`,
    );
  }
}

/** Read and parse a llama2.c .bin file. */
export function readLlama2c(path: string): Llama2cModel {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (e) {
    throw new TuneError(`cannot read llama2.c model ${path}: ${(e as Error).message}`);
  }
  return parseLlama2c(bytes, path);
}

/** Check that `cfg` can be expressed in llama2.c's format (run.c's fixed constants). */
function checkWritable(cfg: LlamaConfig): void {
  const why = cfg.qkvBias
    ? "it has q/k/v biases"
    : cfg.qkNorm
    ? "it has per-head q/k norms (Qwen3)"
    : cfg.slidingWindow !== undefined
    ? "it has a sliding window"
    : headSize(cfg) !== cfg.dim / cfg.nHeads || cfg.embedScale || cfg.normOffset ||
        hiddenAct(cfg) !== "silu"
    ? "it is a Gemma-style model (head_dim, GeGLU, scaled embeddings or 1 + scale norms)"
    : cfg.ropeScaling
    ? "it uses Llama 3.1 rope scaling"
    : cfg.ropeTheta !== 10000
    ? `its rope theta is ${cfg.ropeTheta} (llama2.c uses 10000)`
    : Math.abs(cfg.normEps - 1e-5) > 1e-12
    ? `its norm epsilon is ${cfg.normEps} (llama2.c uses 1e-5)`
    : null;
  if (why) {
    throw new TuneError(
      `cannot write this model in llama2.c format: ${why}; save it as safetensors instead`,
    );
  }
}

/**
 * Encode a model as a llama2.c file: version 0 (legacy header, freq_cis tables included)
 * or version 1 (256-byte header, fp32). q/k rows are permuted to the interleaved layout
 * when `cfg.ropeLayout` is "half".
 */
export function encodeLlama2c(
  cfg: LlamaConfig,
  state: StateDict,
  opts: { version?: 0 | 1 } = {},
): Uint8Array {
  checkWritable(cfg);
  const version = opts.version ?? 1;
  const sd = convertRopeLayout(state, cfg, "interleaved");
  const get = (n: string) => {
    const t = sd.get(n);
    if (!t) throw new TuneError(`cannot write llama2.c file: the state dict has no ${n}`);
    return t.data;
  };
  const L = cfg.nLayers;
  const perLayer = (suffix: string) =>
    Array.from({ length: L }, (_, i) => get(`layers.${i}.${suffix}`));
  const mats = [
    "attn.q_proj",
    "attn.k_proj",
    "attn.v_proj",
    "attn.output_proj",
    "mlp.w1",
    "mlp.w2",
    "mlp.w3",
  ]
    .map((m) => perLayer(`${m}.weight`));
  const chunks: Uint8Array[] = [];
  const hdr = [cfg.dim, cfg.hiddenDim, L, cfg.nHeads, cfg.nKvHeads, cfg.vocabSize, cfg.maxSeqLen];
  if (version === 0) {
    if (!cfg.tiedEmbeddings) hdr[5] = -hdr[5];
    chunks.push(new Uint8Array(Int32Array.from(hdr).buffer));
    const parts = [
      [get("tok_embeddings.weight")],
      perLayer("sa_norm.scale"),
      ...mats.slice(0, 4),
      perLayer("mlp_norm.scale"),
      ...mats.slice(4),
      [get("norm.scale")],
    ].flat();
    for (const p of parts) chunks.push(bytesOf(p));
    const rope = ropeTables(cfg.dim / cfg.nHeads, cfg.maxSeqLen, 10000, null);
    chunks.push(bytesOf(rope.cos), bytesOf(rope.sin));
    if (!cfg.tiedEmbeddings) chunks.push(bytesOf(get("output.weight")));
  } else {
    const head = new Uint8Array(256);
    const dv = new DataView(head.buffer);
    dv.setUint32(0, LLAMA2C_MAGIC, true);
    dv.setInt32(4, 1, true);
    hdr.forEach((v, i) => dv.setInt32(8 + 4 * i, v, true));
    head[36] = cfg.tiedEmbeddings ? 1 : 0;
    chunks.push(head);
    const parts = [
      perLayer("sa_norm.scale"),
      perLayer("mlp_norm.scale"),
      [get("norm.scale"), get("tok_embeddings.weight")],
      ...mats,
    ].flat();
    for (const p of parts) chunks.push(bytesOf(p));
    if (!cfg.tiedEmbeddings) chunks.push(bytesOf(get("output.weight")));
  }
  const total = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Write a llama2.c file (temporary name, then rename). */
export function writeLlama2c(
  path: string,
  cfg: LlamaConfig,
  state: StateDict,
  opts: { version?: 0 | 1 } = {},
): void {
  atomicWrite(path, encodeLlama2c(cfg, state, opts));
}
