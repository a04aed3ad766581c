/**
 * Generation with a KV cache over a Llama decoder's modules: caches for (B, capacity)
 * positions, prefill of a prompt and one-token decode steps, each returning the logits of
 * the last position. Shares the model's weights (and LoRA adapters); owns its buffers.
 */
import type { Backend, DeviceBuffer, FusedDecoder } from "../../backend/ops.ts";
import type { ParamStore } from "../../params/store.ts";
import {
  type ActDims,
  Allocator,
  allocLayerActs,
  type LayerActs,
  type LayerLinear,
} from "../../modules/activations.ts";
import type { KvCache } from "../../modules/attention.ts";
import { ropeTables, uploadRope } from "../../modules/rope.ts";
import { TuneError } from "../../errors.ts";
import type { DecoderParts } from "./build.ts";
import { logitSoftcap } from "./softcap.ts";
import { headSize, type LlamaConfig, rotaryDims } from "./config.ts";
import { fusedDecoder } from "./fused_decode.ts";
import { layerLinears } from "./layout.ts";

interface InferenceState {
  B: number;
  capacity: number;
  pos: number;
  caches: KvCache[];
  acts: LayerActs; // sized (B, capacity)
  resid: [DeviceBuffer, DeviceBuffer]; // (B*capacity, C) each
  tokens: DeviceBuffer; // (B*capacity) i32
  last: DeviceBuffer; // (B, C)
  lnLast: DeviceBuffer; // (B, C)
  rstdLast: DeviceBuffer; // (B)
  logits: DeviceBuffer; // (B, V)
  headHs: DeviceBuffer | null; // (B, r)
  alloc: Allocator;
  /** The backend's fused decode step (fused_decode.ts), or null: decode runs op by op. */
  decoder: FusedDecoder | null;
}

/** KV-cache inference of one model. */
export class KvInference {
  #s: InferenceState | null = null;

  constructor(
    readonly be: Backend,
    readonly parts: DecoderParts,
    readonly cfg: LlamaConfig,
    readonly dims: ActDims,
    readonly act: "f32" | "bf16",
    /** Multiplies the token embeddings (Gemma's sqrt(dim)); 1 for none. */
    readonly embedScale: number,
    /**
     * The base weights when a backend's fused decode step may read them in place (a plain
     * fp32 model without adapters or sharded weights); null: always op by op.
     */
    readonly fusableBase: ParamStore | null = null,
  ) {}

  /** Current position of the KV cache (tokens processed since the last prefill). */
  get position(): number {
    return this.#s?.pos ?? 0;
  }

  /** Bytes of the caches and generation buffers. */
  get bytes(): number {
    return this.#s ? (this.#s.alloc.bytesBy.get("inference") ?? 0) : 0;
  }

  /** Allocate KV caches for `batch` sequences of up to `capacity` positions (replaces old ones). */
  setup(batch: number, capacity: number): void {
    const cfg = this.cfg;
    if (capacity > cfg.maxSeqLen) {
      throw new TuneError(
        `generation length ${capacity} exceeds the model's max_seq_len ${cfg.maxSeqLen}; lower max_new_tokens or the prompt length`,
      );
    }
    this.#s?.alloc.freeAll();
    const be = this.be;
    if (capacity > this.parts.rope.maxSeqLen) this.#growRope(capacity);
    const al = new Allocator(be);
    const KV = cfg.nKvHeads * headSize(cfg);
    const caches: KvCache[] = [];
    for (let i = 0; i < cfg.nLayers; i++) {
      caches.push({
        k: al.alloc("inference", batch * capacity * KV, this.act),
        v: al.alloc("inference", batch * capacity * KV, this.act),
        capacity,
      });
    }
    const { rank: r, adapted } = this.parts;
    const ranks: Partial<Record<LayerLinear, number>> = {};
    for (const s of layerLinears(cfg, 0)) {
      if (adapted.has(s.prefix)) ranks[s.key as LayerLinear] = r;
    }
    const dims = { ...this.dims, B: batch, T: capacity };
    this.#s = {
      B: batch,
      capacity,
      pos: 0,
      caches,
      acts: allocLayerActs(al, "inference", dims, ranks, this.act),
      resid: [
        al.alloc("inference", batch * capacity * cfg.dim, this.act),
        al.alloc("inference", batch * capacity * cfg.dim, this.act),
      ],
      tokens: al.alloc("inference", batch * capacity, "i32"),
      last: al.alloc("inference", batch * cfg.dim, this.act),
      lnLast: al.alloc("inference", batch * cfg.dim, this.act),
      rstdLast: al.alloc("inference", batch),
      logits: al.alloc("inference", batch * cfg.vocabSize),
      headHs: adapted.has("output") ? al.alloc("inference", batch * r, this.act) : null,
      alloc: al,
      decoder: null,
    };
    const s = this.#s;
    s.decoder = this.fusableBase === null || this.cfg.qkNorm ? null : fusedDecoder(be, {
      cfg,
      base: this.fusableBase,
      special: false,
      caches,
      rope: this.parts.rope,
      logits: s.logits,
      B: batch,
      capacity,
    });
  }

  /** Run `tokens` (B, T) from position 0; logits (B, V) of the last position. */
  prefill(tokens: Int32Array): DeviceBuffer {
    const s = this.#need();
    s.pos = 0;
    if (s.decoder !== null && tokens.length === s.B) return this.#fusedStep(s, tokens);
    const logits = this.#step(tokens);
    s.decoder?.cachesWritten?.(s.pos);
    return logits;
  }

  /**
   * Run one new token per sequence (B) at the cache position; logits (B, V) of it. With
   * `live` (B), rows whose entry is 0 are finished sequences: the fused decoder skips their
   * attention (their logits are then unspecified); the op-by-op path computes them anyway.
   */
  decode(tokens: Int32Array, live?: Uint8Array): DeviceBuffer {
    const s = this.#need();
    if (tokens.length !== s.B) {
      throw new Error(`decodeStep takes ${s.B} tokens, got ${tokens.length}`);
    }
    if (live !== undefined && live.length !== s.B) {
      throw new Error(`decodeStep takes ${s.B} live flags, got ${live.length}`);
    }
    if (s.decoder !== null) return this.#fusedStep(s, tokens, live);
    return this.#step(tokens);
  }

  /** One token per sequence through the backend's fused decoder (logits as #step's). */
  #fusedStep(s: InferenceState, tokens: Int32Array, live?: Uint8Array): DeviceBuffer {
    if (s.pos + 1 > s.capacity) {
      throw new TuneError(
        `generation reached position ${s.pos + 1}, beyond the cache capacity ${s.capacity}; ` +
          "lower max_new_tokens",
      );
    }
    s.decoder!.step(tokens, s.pos, live);
    s.pos += 1;
    return s.logits;
  }

  /** Release the caches. */
  free(): void {
    this.#s?.alloc.freeAll();
    this.#s = null;
  }

  #need(): InferenceState {
    if (!this.#s) throw new Error("call setupCaches(batch, capacity) before prefill/decodeStep");
    return this.#s;
  }

  #growRope(len: number): void {
    const be = this.be;
    const t = ropeTables(rotaryDims(this.cfg), len, this.cfg.ropeTheta, this.cfg.ropeScaling);
    const old = this.parts.rope;
    const fresh = uploadRope(be, t);
    // the attention modules hold the rope object: update it in place
    be.free(old.cos);
    be.free(old.sin);
    old.cos = fresh.cos;
    old.sin = fresh.sin;
    old.maxSeqLen = fresh.maxSeqLen;
    old.dims = fresh.dims;
  }

  #step(tokens: Int32Array): DeviceBuffer {
    const be = this.be;
    const s = this.#s!;
    const B = s.B;
    const T = tokens.length / B;
    if (!Number.isInteger(T) || T < 1) {
      throw new Error(`got ${tokens.length} tokens for batch ${B}`);
    }
    if (s.pos + T > s.capacity) {
      throw new TuneError(
        `generation reached position ${
          s.pos + T
        }, beyond the cache capacity ${s.capacity}; lower max_new_tokens`,
      );
    }
    const V = this.cfg.vocabSize;
    const C = this.cfg.dim;
    for (const t of tokens) {
      if (!(t >= 0 && t < V)) {
        throw new TuneError(`token id ${t} is outside the vocabulary (size ${V})`);
      }
    }
    const N = B * T;
    const tok = be.view(s.tokens, 0, N);
    be.upload(tok, tokens);
    const acts = viewActs(be, s.acts, { ...this.dims, B, T }, this.parts.rank);
    const x0 = be.view(s.resid[0], 0, N * C);
    const x1 = be.view(s.resid[1], 0, N * C);
    be.embeddingForward(x0, tok, this.parts.tokEmb, N, C, tokens);
    if (this.embedScale !== 1) be.scale(x0, this.embedScale);
    let x = x0;
    let y = x1;
    for (let l = 0; l < this.cfg.nLayers; l++) {
      this.parts.layers[l].forward(be, y, x, acts, B, T, null, s.caches[l], s.pos);
      [x, y] = [y, x];
    }
    for (let b = 0; b < B; b++) {
      be.copy(be.view(s.last, b * C, C), be.view(x, (b * T + T - 1) * C, C));
    }
    this.parts.norm.forward(be, s.lnLast, s.rstdLast, s.last, B); // (B, C)
    this.parts.output.forward(be, s.logits, s.lnLast, B, s.headHs, null); // (B, V)
    if (this.cfg.finalSoftcap) {
      logitSoftcap(be, s.logits, B * this.cfg.vocabSize, this.cfg.finalSoftcap);
    }
    s.pos += T;
    return s.logits;
  }
}

/** Views of exact length into (larger) activation buffers, for a smaller (B, T). */
function viewActs(be: Backend, a: LayerActs, d: ActDims, rank: number): LayerActs {
  const N = d.B * d.T;
  const Q = d.NH * d.HS;
  const KV = d.NKV * d.HS;
  const v = (buf: DeviceBuffer, n: number) => be.view(buf, 0, n);
  const hs: LayerActs["hs"] = {};
  for (const [k, buf] of Object.entries(a.hs)) hs[k as LayerLinear] = v(buf, N * rank);
  return {
    ln1: v(a.ln1, N * d.C),
    rstd1: v(a.rstd1, N),
    q: v(a.q, N * Q),
    k: v(a.k, N * KV),
    v: v(a.v, N * KV),
    att: v(a.att, N * Q),
    lse: v(a.lse, d.B * d.NH * d.T),
    ...(a.qk
      ? {
        qk: {
          q: v(a.qk.q, N * Q),
          k: v(a.qk.k, N * KV),
          rstdQ: v(a.qk.rstdQ, N * d.NH),
          rstdK: v(a.qk.rstdK, N * d.NKV),
        },
      }
      : {}),
    ...(a.post
      ? {
        post: {
          ao: v(a.post.ao, N * d.C),
          rstdA: v(a.post.rstdA, N),
          mo: v(a.post.mo, N * d.C),
          rstdM: v(a.post.rstdM, N),
        },
      }
      : {}),
    h1: v(a.h1, N * d.C),
    ln2: v(a.ln2, N * d.C),
    rstd2: v(a.rstd2, N),
    gate: v(a.gate, N * d.H),
    up: v(a.up, N * d.H),
    act: v(a.act, N * d.H),
    hs,
  };
}
