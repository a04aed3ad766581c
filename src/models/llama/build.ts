/**
 * The builder of a Llama decoder's modules over its parameter stores: every linear layer
 * as a view of the base store, with its LoRA (and DoRA) adapter wired in from the adapter
 * store where the spec's LoRA targets it, the norms, the rope tables and the scratch the
 * adapters share. The model owns the result; nothing here runs a forward.
 */
import type { Backend, DeviceBuffer } from "../../backend/ops.ts";
import type { Allocator } from "../../modules/activations.ts";
import { Attention } from "../../modules/attention.ts";
import { Dora, type DoraBase, type DoraScratch, QDORA_TILE_ROWS } from "../../modules/dora.ts";
import { FeedForward } from "../../modules/feed_forward.ts";
import { Linear } from "../../modules/linear.ts";
import { Lora, type LoraScratch } from "../../modules/lora.ts";
import { RmsNorm } from "../../modules/rms_norm.ts";
import { type DeviceRope, ropeTables, uploadRope } from "../../modules/rope.ts";
import { DecoderLayer } from "../../modules/transformer.ts";
import type { Nf4Store } from "../../quant/nf4_store.ts";
import type { ParamStore } from "../../params/store.ts";
import { TuneError } from "../../errors.ts";
import type { LoraConfig } from "../model_spec.ts";
import { headSize, hiddenAct, layerAttention, type LlamaConfig, rotaryDims } from "./config.ts";
import { layerLinears, loraSites } from "./layout.ts";

/** The modules of a decoder, over views of its stores. */
export interface DecoderParts {
  layers: DecoderLayer[];
  norm: RmsNorm;
  output: Linear;
  tokEmb: DeviceBuffer; // (V, C)
  dTokEmb: DeviceBuffer | null; // (V, C)
  /** Rope tables for T positions; grown in place for longer generation. */
  rope: DeviceRope;
  /** Every LoRA adapter (switched off together by `withAdaptersDisabled`). */
  loras: Lora[];
  /** Every DoRA layer with its frozen base weight and the names of both tensors. */
  doras: { dora: Dora; w: DoraBase; weight: string; magnitude: string }[];
  /** Prefixes of the adapted linear layers ("layers.0.attn.q_proj", "output", ...). */
  adapted: Set<string>;
  /** LoRA rank r (0 without LoRA). */
  rank: number;
}

/** What `buildDecoder` needs besides the stores. */
export interface BuildOptions {
  /** Rows N = B*T of training/eval calls, and Nc of the output projection at a time. */
  N: number;
  chunkRows: number;
  /** Positions of the rope tables. */
  T: number;
  training: boolean;
  act: "f32" | "bf16";
  /** The trainable stores keep group windows (sharded): DoRA is refused there. */
  windowed: boolean;
}

/** Wire `cfg`'s decoder (with `lora`'s adapters) over `base` and `adapters`. */
export function buildDecoder(
  be: Backend,
  al: Allocator,
  cfg: LlamaConfig,
  lora: LoraConfig | null,
  stores: { base: ParamStore; adapters: ParamStore | null; nf4?: Nf4Store | null },
  o: BuildOptions,
): DecoderParts {
  const { base, adapters, nf4 } = stores;
  const sites = lora ? loraSites(cfg, lora) : [];
  const rank = lora?.rank ?? 0;
  const adapted = new Set(sites.map((s) => s.prefix));
  let loraScratch: LoraScratch | null = null;
  if (lora) {
    const maxIn = Math.max(...sites.map((s) => s.inDim));
    // dropout masks and dh exist only in training (eval/generation run without dropout)
    const drop = lora.dropout > 0 && o.training;
    loraScratch = {
      xd: al.alloc("scratch", drop ? o.N * maxIn : 1, o.act),
      dxd: al.alloc("scratch", drop ? o.N * maxIn : 1, o.act),
      dh: al.alloc("scratch", o.training ? o.N * rank : 1, o.act),
    };
  }
  let doraScratch: DoraScratch | null = null;
  if (lora?.useDora) {
    if (o.windowed && nf4) {
      throw new TuneError(
        "use_dora=True with an NF4 base (QDoRA) is not supported by the sharded (distributed) LoRA recipes yet; run lora_finetune_single_device",
      );
    }
    if (cfg.qkvBias && sites.some((s) => /\.(q|k|v)_proj$/.test(s.prefix))) {
      throw new TuneError(
        "use_dora=True does not support linear layers with a bias (torchtune's DoRALinear); drop q_proj, k_proj, v_proj from lora_attn_modules or set use_dora=False",
      );
    }
    // the output projection runs over row chunks of the logits (see logitChunks)
    const rows = (p: string) => (p === "output" ? o.chunkRows : o.N);
    const maxZ = Math.max(...sites.map((s) => rows(s.prefix) * s.outDim));
    const maxIO = Math.max(...sites.map((s) => s.outDim * s.inDim));
    doraScratch = {
      ba: al.alloc("scratch", maxIO), // (maxOut, maxIn) fp32
      z: al.alloc("scratch", o.training ? maxZ : 1, o.act), // (N, maxOut)
      // QDoRA: a tile of rows of an NF4 base, dequantized for the norms
      wTile: nf4
        ? al.alloc("scratch", QDORA_TILE_ROWS * Math.max(...sites.map((s) => s.inDim)))
        : null,
    };
  }

  const loras: Lora[] = [];
  const doras: DecoderParts["doras"] = [];
  const linear = (prefix: string, inDim: number, outDim: number, weightName?: string) => {
    const wName = weightName ?? `${prefix}.weight`;
    const hasBias = base.layout.has(`${prefix}.bias`);
    const l = adapted.has(prefix) && lora && adapters
      ? new Lora(inDim, outDim, lora.rank, lora.alpha, lora.dropout, {
        a: adapters.param(`${prefix}.lora_a.weight`),
        b: adapters.param(`${prefix}.lora_b.weight`),
        da: adapters.grad(`${prefix}.lora_a.weight`),
        db: adapters.grad(`${prefix}.lora_b.weight`),
      }, loraScratch!)
      : null;
    if (l) loras.push(l);
    const q = nf4?.has(wName) ? nf4.weight(wName) : null; // QLoRA: an NF4 base weight
    if (l && doraScratch && adapters) {
      const magnitude = `${prefix}.magnitude`;
      l.dora = new Dora(l, {
        magnitude: adapters.param(magnitude), // (out)
        dmagnitude: adapters.grad(magnitude),
        norm: al.alloc("scratch", outDim),
        scale: al.alloc("scratch", outDim),
      }, doraScratch);
      doras.push({ dora: l.dora, w: q ?? base.param(wName), weight: wName, magnitude });
    }
    return new Linear(inDim, outDim, {
      w: q ? null : base.param(wName),
      nf4: q,
      b: hasBias ? base.param(`${prefix}.bias`) : null,
      dw: q ? null : base.grad(wName),
      db: hasBias ? base.grad(`${prefix}.bias`) : null,
    }, l);
  };
  // Gemma's norms multiply by 1 + scale: one (C) fp32 scratch shared by every norm
  const effScale = cfg.normOffset ? al.alloc("scratch", cfg.dim) : null;
  const norm = (name: string) =>
    new RmsNorm(
      cfg.dim,
      cfg.normEps,
      base.param(name),
      base.grad(name),
      cfg.normOffset ?? 0,
      effScale,
    );
  const HS = headSize(cfg);
  const rope = uploadRope(be, ropeTables(rotaryDims(cfg), o.T, cfg.ropeTheta, cfg.ropeScaling));
  const layers: DecoderLayer[] = [];
  for (let i = 0; i < cfg.nLayers; i++) {
    const [q, k, v, out, w1, w2, w3] = layerLinears(cfg, i).map((s) =>
      linear(s.prefix, s.inDim, s.outDim)
    );
    const dims = { NH: cfg.nHeads, NKV: cfg.nKvHeads, HS };
    const headNorm = (name: string) =>
      new RmsNorm(HS, cfg.normEps, base.param(name), base.grad(name));
    const qkNorm = cfg.qkNorm
      ? {
        q: headNorm(`layers.${i}.attn.q_norm.scale`),
        k: headNorm(`layers.${i}.attn.k_norm.scale`),
      }
      : null;
    layers.push(
      new DecoderLayer(
        norm(`layers.${i}.sa_norm.scale`),
        new Attention(dims, q, k, v, out, rope, cfg.ropeLayout, qkNorm, layerAttention(cfg, i)),
        norm(`layers.${i}.mlp_norm.scale`),
        new FeedForward(cfg.hiddenDim, w1, w2, w3, hiddenAct(cfg)),
        cfg.postNorms
          ? { sa: norm(`layers.${i}.sa_scale.scale`), mlp: norm(`layers.${i}.mlp_scale.scale`) }
          : null,
      ),
    );
  }
  return {
    layers,
    norm: norm("norm.scale"),
    tokEmb: base.param("tok_embeddings.weight"),
    dTokEmb: base.grad("tok_embeddings.weight"),
    output: linear(
      "output",
      cfg.dim,
      cfg.vocabSize,
      cfg.tiedEmbeddings ? "tok_embeddings.weight" : "output.weight",
    ),
    rope,
    loras,
    doras,
    adapted,
    rank,
  };
}
