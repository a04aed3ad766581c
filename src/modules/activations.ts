/**
 * Activation buffers of one decoder layer, and the backward scratch shared by all layers.
 * Without activation checkpointing every layer owns a LayerActs; with it, one LayerActs is
 * shared and each layer's forward is recomputed into it during backward.
 */
import type { Backend, DeviceBuffer, DType } from "../backend/ops.ts";

/** Sizes needed to allocate activations. */
export interface ActDims {
  B: number;
  T: number;
  C: number;
  NH: number;
  NKV: number;
  HS: number;
  H: number;
  /** Per-head q/k RMSNorm (Qwen3): the layer also saves q and k before their norms. */
  qkNorm?: boolean;
  /** Norms after attention and the MLP (Gemma 2): the layer saves what they normalise. */
  postNorms?: boolean;
}

/** LoRA module keys in a decoder layer (also the dropout-seed index of each). */
export const LAYER_LINEARS = [
  "q_proj",
  "k_proj",
  "v_proj",
  "output_proj",
  "w1",
  "w2",
  "w3",
] as const;
export type LayerLinear = typeof LAYER_LINEARS[number];

/** What a per-head q/k RMSNorm saves (Qwen3). */
export interface QkNormActs {
  q: DeviceBuffer; // (N, NH*HS) q projection before its norm
  k: DeviceBuffer; // (N, NKV*HS) k projection before its norm
  rstdQ: DeviceBuffer; // (N*NH)
  rstdK: DeviceBuffer; // (N*NKV)
}

/** What the norms after attention and the MLP save (Gemma 2). */
export interface PostNormActs {
  ao: DeviceBuffer; // (N, C) attention output before sa_scale
  rstdA: DeviceBuffer; // (N)
  mo: DeviceBuffer; // (N, C) MLP output before mlp_scale
  rstdM: DeviceBuffer; // (N)
}

/** Saved activations of one decoder layer (N = B*T). */
export interface LayerActs {
  ln1: DeviceBuffer; // (N, C)
  rstd1: DeviceBuffer; // (N)
  q: DeviceBuffer; // (N, NH*HS)  after rope
  k: DeviceBuffer; // (N, NKV*HS) after rope
  v: DeviceBuffer; // (N, NKV*HS)
  att: DeviceBuffer; // (N, NH*HS) attention output before output_proj
  lse: DeviceBuffer; // (B, NH, T)
  /** The attention's kept probabilities (Backend.attentionProbsSize floats), if kept. */
  probs?: DeviceBuffer;
  /** With per-head q/k norms: q and k before them, and their rstd. */
  qk?: QkNormActs;
  /** With post-norms (Gemma 2): the inputs of sa_scale and mlp_scale and their rstd. */
  post?: PostNormActs;
  h1: DeviceBuffer; // (N, C) residual after attention
  ln2: DeviceBuffer; // (N, C)
  rstd2: DeviceBuffer; // (N)
  gate: DeviceBuffer; // (N, H) w1 output (overwritten by its gradient in backward)
  up: DeviceBuffer; // (N, H)   w3 output (overwritten by its gradient in backward)
  act: DeviceBuffer; // (N, H)  silu(gate) * up
  /** LoRA hidden (N, r) of each adapted linear. */
  hs: Partial<Record<LayerLinear, DeviceBuffer>>;
}

/** Backward scratch shared by all layers. */
export interface BackwardScratch {
  dln: DeviceBuffer; // (N, C)
  datt: DeviceBuffer; // (N, NH*HS)
  dq: DeviceBuffer; // (N, NH*HS)
  dk: DeviceBuffer; // (N, NKV*HS)
  dv: DeviceBuffer; // (N, NKV*HS)
  dact: DeviceBuffer; // (N, H)
  /** (N, C) gradient of a post-norm's input (Gemma 2 only). */
  dpost?: DeviceBuffer;
}

/** Tracks what a model allocated, by category, for memory reports. */
export class Allocator {
  readonly buffers: DeviceBuffer[] = [];
  readonly bytesBy = new Map<string, number>();
  constructor(readonly backend: Backend) {}

  /** A zero-filled buffer (f32 by default) counted under `category`. */
  alloc(category: string, length: number, dtype: DType = "f32"): DeviceBuffer {
    const buf = this.backend.alloc(length, dtype);
    this.buffers.push(buf);
    const bytes = length * (dtype === "bf16" ? 2 : 4);
    this.bytesBy.set(category, (this.bytesBy.get(category) ?? 0) + bytes);
    return buf;
  }

  /** Free everything allocated here. */
  freeAll(): void {
    for (const b of this.buffers) this.backend.free(b);
    this.buffers.length = 0;
    this.bytesBy.clear();
  }
}

/**
 * Allocate one layer's activations; `loraRanks` gives r for each adapted linear. `dtype`
 * applies to the (N, ...) tensors; rstd, lse and the `probs` floats of kept attention
 * probabilities (0: none) stay fp32.
 */
export function allocLayerActs(
  al: Allocator,
  category: string,
  d: ActDims,
  loraRanks: Partial<Record<LayerLinear, number>>,
  dtype: DType = "f32",
  probs = 0,
): LayerActs {
  const N = d.B * d.T;
  const Q = d.NH * d.HS;
  const KV = d.NKV * d.HS;
  const hs: Partial<Record<LayerLinear, DeviceBuffer>> = {};
  for (const key of LAYER_LINEARS) {
    const r = loraRanks[key];
    if (r) hs[key] = al.alloc(category, N * r, dtype);
  }
  const a = (n: number) => al.alloc(category, n, dtype);
  return {
    ln1: a(N * d.C),
    rstd1: al.alloc(category, N),
    q: a(N * Q),
    k: a(N * KV),
    v: a(N * KV),
    att: a(N * Q),
    lse: al.alloc(category, d.B * d.NH * d.T),
    ...(probs > 0 ? { probs: al.alloc(category, probs) } : {}),
    ...(d.qkNorm
      ? {
        qk: {
          q: a(N * Q),
          k: a(N * KV),
          rstdQ: al.alloc(category, N * d.NH),
          rstdK: al.alloc(category, N * d.NKV),
        },
      }
      : {}),
    ...(d.postNorms
      ? {
        post: {
          ao: a(N * d.C),
          rstdA: al.alloc(category, N),
          mo: a(N * d.C),
          rstdM: al.alloc(category, N),
        },
      }
      : {}),
    h1: a(N * d.C),
    ln2: a(N * d.C),
    rstd2: al.alloc(category, N),
    gate: a(N * d.H),
    up: a(N * d.H),
    act: a(N * d.H),
    hs,
  };
}

/** Allocate the shared backward scratch (elements of `dtype`). */
export function allocBackwardScratch(
  al: Allocator,
  category: string,
  d: ActDims,
  dtype: DType = "f32",
): BackwardScratch {
  const N = d.B * d.T;
  const a = (n: number) => al.alloc(category, n, dtype);
  return {
    dln: a(N * d.C),
    datt: a(N * d.NH * d.HS),
    dq: a(N * d.NH * d.HS),
    dk: a(N * d.NKV * d.HS),
    dv: a(N * d.NKV * d.HS),
    dact: a(N * d.H),
    ...(d.postNorms ? { dpost: a(N * d.C) } : {}),
  };
}
