/**
 * Multi-head attention with grouped-query heads (GQA), rotary embeddings and an optional
 * KV cache (torchtune's MultiHeadAttention), forward and hand-written backward.
 */
import type { AttentionVariant, Backend, DeviceBuffer, RopeLayout } from "../backend/ops.ts";
import { mixSeed } from "../params/random.ts";
import type { BackwardScratch, LayerActs, QkNormActs } from "./activations.ts";
import type { Linear } from "./linear.ts";
import type { RmsNorm } from "./rms_norm.ts";
import type { DeviceRope } from "./rope.ts";

/** A KV cache of one layer for generation. */
export interface KvCache {
  k: DeviceBuffer; // (B, Tcap, NKV*HS)
  v: DeviceBuffer; // (B, Tcap, NKV*HS)
  /** Capacity Tcap in positions. */
  capacity: number;
}

/** Head counts of an attention block. */
export interface AttentionDims {
  NH: number;
  NKV: number;
  HS: number;
}

/**
 * Packed samples of one training/eval batch (torchtune's block-causal mask and input_pos):
 * either may be null. Set on every layer's attention by the model before a batch.
 */
export interface Packing {
  /** (B, T) i32 segment ids: a query sees only earlier keys of its own segment. */
  segments: DeviceBuffer | null;
  /** (B, T) i32 rope position of each token (restarting at 0 per sample). */
  positions: DeviceBuffer | null;
}

/** Dropout-seed index of each projection (mixed with the layer's seed). */
const SEED = { q: 0, k: 1, v: 2, o: 3 };

/** Self-attention over the op interface. */
export class Attention {
  constructor(
    readonly d: AttentionDims,
    readonly q: Linear,
    readonly k: Linear,
    readonly v: Linear,
    readonly o: Linear,
    readonly rope: DeviceRope,
    readonly layout: RopeLayout,
    /** Per-head RMSNorms (HS) of q and k before rope (Qwen3), or null. */
    readonly qkNorm: { q: RmsNorm; k: RmsNorm } | null = null,
    /** Sliding window / soft-cap / scale of this layer's scores (Mistral, Gemma 2), or null. */
    readonly variant: AttentionVariant | null = null,
  ) {}

  /** Packing of the current batch; used by forwards without a KV cache and by backward. */
  packing: Packing | null = null;

  /**
   * out(N, C) = attention(x(N, C)) with N = B*T; q, k, v, att, lse and LoRA hiddens are
   * saved in `acts`. With `cache`, tokens sit at positions pos..pos+T-1 and see the cache.
   */
  forward(
    be: Backend,
    out: DeviceBuffer,
    x: DeviceBuffer,
    acts: LayerActs,
    B: number,
    T: number,
    seed: number | null,
    cache: KvCache | null = null,
    pos = 0,
  ): void {
    const { NH, NKV, HS } = this.d;
    const N = B * T;
    const s = (i: number) => (seed === null ? null : mixSeed(seed, i));
    const qk = this.qkNorm ? mustHave(acts.qk) : null;
    this.q.forward(be, qk?.q ?? acts.q, x, N, acts.hs.q_proj ?? null, s(SEED.q)); // (B, T, NH, HS)
    this.k.forward(be, qk?.k ?? acts.k, x, N, acts.hs.k_proj ?? null, s(SEED.k)); // (B, T, NKV, HS)
    this.v.forward(be, acts.v, x, N, acts.hs.v_proj ?? null, s(SEED.v)); // (B, T, NKV, HS)
    if (qk) {
      this.qkNorm!.q.forward(be, acts.q, qk.rstdQ, qk.q, N * NH); // (N*NH, HS) rows
      this.qkNorm!.k.forward(be, acts.k, qk.rstdK, qk.k, N * NKV); // (N*NKV, HS) rows
    }
    if (pos + T > this.rope.maxSeqLen) {
      throw new Error(`position ${pos + T} exceeds the rope table length ${this.rope.maxSeqLen}`);
    }
    const pk = cache ? null : this.packing;
    const at = pk?.positions ?? null; // (B, T) or null: pos + t
    this.#rope(be, acts.q, B, T, NH, pos, false, at);
    this.#rope(be, acts.k, B, T, NKV, pos, false, at);
    if (cache) {
      const width = NKV * HS;
      be.kvCacheWrite(cache.k, acts.k, B, T, cache.capacity, width, pos);
      be.kvCacheWrite(cache.v, acts.v, B, T, cache.capacity, width, pos);
      be.attentionForward(
        acts.att,
        acts.lse,
        acts.q,
        cache.k,
        cache.v,
        B,
        T,
        pos + T,
        cache.capacity,
        NH,
        NKV,
        HS,
        null,
        effective(this.variant, pos + T),
      );
    } else {
      const seg = pk?.segments ?? null; // (B, T) or null: plain causal
      const a = acts;
      const vt = effective(this.variant, T);
      const kept = this.#keptProbs(acts);
      be.attentionForward(a.att, a.lse, a.q, a.k, a.v, B, T, T, T, NH, NKV, HS, seg, vt, kept);
    }
    this.o.forward(be, out, acts.att, N, acts.hs.output_proj ?? null, s(SEED.o));
  }

  /** The buffer for the forward's kept probabilities: none with a soft-cap (see ops.ts). */
  #keptProbs(acts: LayerActs): DeviceBuffer | null {
    return (this.variant?.softcap ?? 0) > 0 ? null : acts.probs ?? null;
  }

  /**
   * Rope on x(B, T, heads, HS) in place at positions `at` (null: pos + t); `inverse` rotates
   * back (the gradient through rope).
   */
  #rope(
    be: Backend,
    x: DeviceBuffer,
    B: number,
    T: number,
    heads: number,
    pos: number,
    inverse: boolean,
    at: DeviceBuffer | null,
  ): void {
    const r = this.rope;
    be.rope(x, r.cos, r.sin, B, T, heads, this.d.HS, pos, this.layout, inverse, at, r.dims);
  }

  /**
   * Backward of a training forward: dx(N, C) ACCUMULATES the gradient through q/k/v from
   * dout(N, C); parameter gradients accumulate. q/k/v/att/lse in `acts` are the forward's.
   */
  backward(
    be: Backend,
    dx: DeviceBuffer,
    dout: DeviceBuffer,
    x: DeviceBuffer,
    acts: LayerActs,
    sc: BackwardScratch,
    B: number,
    T: number,
    seed: number | null,
  ): void {
    const { NH, NKV, HS } = this.d;
    const N = B * T;
    const s = (i: number) => (seed === null ? null : mixSeed(seed, i));
    be.fill(sc.datt, 0);
    this.o.backward(be, sc.datt, dout, acts.att, N, acts.hs.output_proj ?? null, s(SEED.o));
    be.attentionBackward(
      sc.dq,
      sc.dk,
      sc.dv,
      sc.datt,
      acts.q,
      acts.k,
      acts.v,
      acts.att,
      acts.lse,
      B,
      T,
      NH,
      NKV,
      HS,
      this.packing?.segments ?? null,
      effective(this.variant, T),
      this.#keptProbs(acts),
    );
    const at = this.packing?.positions ?? null;
    this.#rope(be, sc.dq, B, T, NH, 0, true, at);
    this.#rope(be, sc.dk, B, T, NKV, 0, true, at);
    if (this.qkNorm) {
      // through the per-head norms: datt (free since attentionBackward) holds the gradient
      // of q, then of k, before their norms
      const qk = mustHave(acts.qk);
      be.fill(sc.datt, 0);
      this.qkNorm.q.backward(be, sc.datt, sc.dq, qk.q, qk.rstdQ, N * NH);
      this.q.backward(be, dx, sc.datt, x, N, acts.hs.q_proj ?? null, s(SEED.q));
      const dkRaw = be.view(sc.datt, 0, N * NKV * HS); // (N, NKV*HS)
      be.fill(dkRaw, 0);
      this.qkNorm.k.backward(be, dkRaw, sc.dk, qk.k, qk.rstdK, N * NKV);
      this.k.backward(be, dx, dkRaw, x, N, acts.hs.k_proj ?? null, s(SEED.k));
    } else {
      this.q.backward(be, dx, sc.dq, x, N, acts.hs.q_proj ?? null, s(SEED.q));
      this.k.backward(be, dx, sc.dk, x, N, acts.hs.k_proj ?? null, s(SEED.k));
    }
    this.v.backward(be, dx, sc.dv, x, N, acts.hs.v_proj ?? null, s(SEED.v));
  }
}

/**
 * The variant an attention call over `keys` keys needs: a window no shorter than the keys
 * changes nothing, so it is dropped (the plain kernels run, on every backend).
 */
function effective(v: AttentionVariant | null, keys: number): AttentionVariant | null {
  if (v === null || v.window === undefined || v.window < keys) return v;
  const { window: _, ...rest } = v;
  return Object.keys(rest).length === 0 ? null : rest;
}

function mustHave(qk: QkNormActs | undefined): QkNormActs {
  if (!qk) {
    throw new Error("attention with q/k norms needs their saved activations (ActDims.qkNorm)");
  }
  return qk;
}
