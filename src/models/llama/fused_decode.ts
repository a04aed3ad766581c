/**
 * The backend's fused decode step for a Llama model, when it has one and the model is plain
 * enough for it (SwiGLU, no norm offset or embedding scale, no window shorter than the
 * cache, no soft-cap or post-norms, fp32, no adapters): the spec
 * names the model's own parameter, cache, rope and logits buffers, so the decoder reads
 * the weights in place and nothing is copied.
 */
import type { Backend, DeviceBuffer, FusedDecoder } from "../../backend/ops.ts";
import type { KvCache } from "../../modules/attention.ts";
import type { DeviceRope } from "../../modules/rope.ts";
import type { ParamStore } from "../../params/store.ts";
import { headSize, hiddenAct, type LlamaConfig, rotaryDims } from "./config.ts";

/** What the decoder needs from a model (its buffers after setupCaches). */
export interface FusedDecodeInputs {
  cfg: LlamaConfig;
  base: ParamStore;
  /** True when the model has LoRA/DoRA adapters, bf16 activations or sharded weights. */
  special: boolean;
  caches: KvCache[];
  rope: DeviceRope;
  logits: DeviceBuffer; // (B, V)
  B: number;
  capacity: number;
}

/** The backend's fused decoder for this model, or null (then decode runs op by op). */
export function fusedDecoder(be: Backend, m: FusedDecodeInputs): FusedDecoder | null {
  const cfg = m.cfg;
  if (!be.createDecoder || m.special) return null;
  if (hiddenAct(cfg) !== "silu" || cfg.embedScale || (cfg.normOffset ?? 0) !== 0) return null;
  if (rotaryDims(cfg) !== headSize(cfg)) return null; // partial rotary: the layer-by-layer path
  // windows, soft-caps and custom scales run op by op (a window no shorter than the cache
  // changes nothing)
  const window = cfg.slidingWindow !== undefined && cfg.slidingWindow < m.capacity;
  if (window || cfg.attnSoftcap || cfg.queryPreAttnScalar !== undefined || cfg.postNorms) {
    return null;
  }
  const p = (name: string) => m.base.param(name);
  const bias = (name: string) => (cfg.qkvBias ? p(name) : null);
  const HS = headSize(cfg);
  return be.createDecoder({
    B: m.B,
    capacity: m.capacity,
    C: cfg.dim,
    NH: cfg.nHeads,
    NKV: cfg.nKvHeads,
    HS,
    H: cfg.hiddenDim,
    V: cfg.vocabSize,
    eps: cfg.normEps,
    layout: cfg.ropeLayout,
    tokEmb: p("tok_embeddings.weight"),
    layers: m.caches.map((c, i) => {
      const a = `layers.${i}.attn`;
      return {
        saNorm: p(`layers.${i}.sa_norm.scale`),
        wq: p(`${a}.q_proj.weight`),
        wk: p(`${a}.k_proj.weight`),
        wv: p(`${a}.v_proj.weight`),
        bq: bias(`${a}.q_proj.bias`),
        bk: bias(`${a}.k_proj.bias`),
        bv: bias(`${a}.v_proj.bias`),
        wo: p(`${a}.output_proj.weight`),
        mlpNorm: p(`layers.${i}.mlp_norm.scale`),
        w1: p(`layers.${i}.mlp.w1.weight`),
        w2: p(`layers.${i}.mlp.w2.weight`),
        w3: p(`layers.${i}.mlp.w3.weight`),
        k: c.k,
        v: c.v,
      };
    }),
    norm: p("norm.scale"),
    output: p(cfg.tiedEmbeddings ? "tok_embeddings.weight" : "output.weight"),
    cos: m.rope.cos,
    sin: m.rope.sin,
    logits: m.logits,
  });
}
