/**
 * The CPU backend's fused decode step: one new token per sequence through every layer in
 * one call, with every buffer, view and product plan made once when the decoder is built.
 *
 * Per token and layer: RMSNorm, one product for q, k and v together (their weights lie
 * side by side in the parameter buffer, so W_qkv (Q+2KV, C) is a view, not a copy), rope,
 * the cache write, per-head scores and values as OpenBLAS GEMVs over the cache, the output
 * projection, RMSNorm, gate and up, SwiGLU, down; then the final norm and the classifier.
 * Nothing is allocated per token: the per-head operands are subarrays made here once (the
 * FFI passes a view's data pointer, so a fixed view costs nothing per call).
 *
 * Attention runs in the decoder's own wasm memory, which holds the activations and a copy of
 * the KV caches (the model's cache buffers are written too, and reread after an op-by-op
 * prefill): the per-head products over the cache are the ones `Gemm` runs in wasm
 * (small_gemv.ts), so all heads of a sequence go in one wasm call (`attnDecode`: scores,
 * softmax exps, values) instead of two OpenBLAS calls and TypeScript loops per head. With
 * more than one sequence and the CPU pool, the arena is a shared wasm memory and the pool's
 * worker runs the attention of half the sequences through its spinning hand-off (pool_spin.ts),
 * on the same kernel, so the bits do not depend on where a sequence ran.
 *
 * Every step repeats the operations of the op-by-op path (layers.ts, attention.ts, the
 * products in gemm.ts) in the same order, so its logits are bitwise those of
 * `prefill`/`decodeStep` through the generic ops (tests/cpu_decode_test.ts checks it).
 */
import type { DecoderSpec, DeviceBuffer, FusedDecoder } from "../ops.ts";
import { CpuBuffer } from "./buffer.ts";
import { attnExpRange } from "./attention.ts";
import type { Gemm } from "./gemm.ts";
import { rmsnormForward as rmsnorm, rope, swigluForwardScalar } from "./layers.ts";
import { ARENA_TABLE_BYTES, gemvArena, gemvInWasm, type WasmGemv } from "./small_gemv.ts";
import { CpuPool } from "./pool.ts";
import { CMD_ATTN, SPIN_ARGS } from "./pool_spin.ts";
import { TuneError } from "../../errors.ts";

function f32(b: DeviceBuffer, n: number, what: string): Float32Array {
  if (!(b instanceof CpuBuffer) || b.dtype !== "f32") {
    throw new Error(`decoder: ${what} is not an fp32 CPU buffer`);
  }
  if (b.data.length < n) throw new Error(`decoder: ${what} has ${b.length} elements, needs ${n}`);
  return (b.data as Float32Array).subarray(0, n);
}

/** True when b starts right where a ends (same memory). */
function follows(a: Float32Array, b: Float32Array): boolean {
  return a.buffer === b.buffer && a.byteOffset + a.byteLength === b.byteOffset;
}

interface Layer {
  saNorm: Float32Array; // (C)
  /** (Q+2KV, C) when q, k, v are adjacent and bias-free, else null (three products). */
  wqkv: Float32Array | null;
  wq: Float32Array; // (Q, C)
  wk: Float32Array; // (KV, C)
  wv: Float32Array; // (KV, C)
  bq: Float32Array | null; // (Q)
  bk: Float32Array | null; // (KV)
  bv: Float32Array | null; // (KV)
  wo: Float32Array; // (C, Q)
  mlpNorm: Float32Array; // (C)
  w1: Float32Array; // (H, C)
  w2: Float32Array; // (C, H)
  w3: Float32Array; // (H, C)
  kc: Float32Array; // (B, Tcap, KV) the model's cache buffers
  vc: Float32Array; // (B, Tcap, KV)
  rk: Float32Array; // (B, Tcap, KV) the caches the step reads (kc, vc or their wasm copies)
  rv: Float32Array; // (B, Tcap, KV)
  /** [b * NKV + kvh]: rk / rv from head kvh of sequence b on (row stride KV). */
  kHead: Float32Array[];
  vHead: Float32Array[];
}

/** A decode step for B sequences of one model on the CPU. */
/** Largest wasm memory a decoder takes for its resident operands (else Gemm copies them). */
const ARENA_MAX = 1 << 30;

export class CpuDecoder implements FusedDecoder {
  readonly #gemm: Gemm;
  /** The wasm memory of the resident operands, or null (no wasm, or too large). */
  readonly #arena: WasmGemv | null;
  readonly #d: DecoderSpec;
  readonly #layers: Layer[];
  readonly #emb: Float32Array; // (V, C)
  readonly #norm: Float32Array; // (C)
  readonly #out: Float32Array; // (V, C)
  readonly #cos: Float32Array; // (Tmax, HS/2)
  readonly #sin: Float32Array; // (Tmax, HS/2)
  readonly #logits: Float32Array; // (B, V)
  // activations of one step
  readonly #x: Float32Array; // (B, C) residual stream
  readonly #h: Float32Array; // (B, C) normed input of a block
  readonly #y: Float32Array; // (B, C) block output
  readonly #rstd: Float32Array; // (B)
  readonly #qkv: Float32Array; // (B, Q+2KV)
  readonly #q: Float32Array; // (B, Q) (a view of #qkv when fused)
  readonly #k: Float32Array; // (B, KV)
  readonly #v: Float32Array; // (B, KV)
  readonly #att: Float32Array; // (B, Q)
  readonly #gate: Float32Array; // (B, H)
  readonly #up: Float32Array; // (B, H)
  readonly #act: Float32Array; // (B, H)
  readonly #s: Float32Array; // (Tcap) scores of one head
  /** The pool's worker's share of the attention (B > 1, shared arena), else null. */
  readonly #far: { pool: CpuPool; arenaId: number; s: Float32Array } | null = null;
  /** [b * NH + h]: head h of sequence b in q and in att. */
  readonly #qHead: Float32Array[] = [];
  readonly #oHead: Float32Array[] = [];

  constructor(gemm: Gemm, d: DecoderSpec) {
    this.#gemm = gemm;
    this.#d = d;
    const { B, C, NH, NKV, HS, H, V, capacity } = d;
    const Q = NH * HS, KV = NKV * HS;
    this.#emb = f32(d.tokEmb, V * C, "tok_embeddings");
    this.#norm = f32(d.norm, C, "norm");
    this.#out = f32(d.output, V * C, "output");
    this.#cos = f32(d.cos, d.cos.length, "rope cos");
    this.#sin = f32(d.sin, d.sin.length, "rope sin");
    this.#logits = f32(d.logits, B * V, "logits");
    // the caches, the activations and the scores, 16-byte aligned each
    const cache = 2 * d.layers.length * B * capacity * KV;
    const floats = cache + 3 * B * C + B * (Q + 2 * KV) + 3 * B * Q + 3 * B * H + capacity + 2;
    const bytes = (floats + 4 * (2 * d.layers.length + 12)) * 4 + ARENA_TABLE_BYTES;
    // B > 1: a shared arena, so the pool's worker can take half the sequences' attention
    const pool = B > 1 ? CpuPool.get() : null;
    const farBytes = (capacity + 6) * 4;
    let arena: WasmGemv | null = null;
    if (bytes + farBytes <= ARENA_MAX && gemvInWasm(1, 1, true)) {
      arena = pool === null ? null : gemvArena(bytes + farBytes, true);
      arena ??= gemvArena(bytes);
    }
    arena?.addExpTables();
    this.#arena = arena;
    if (pool !== null && arena !== null && arena.memory.buffer instanceof SharedArrayBuffer) {
      const s = arena.alloc(capacity + 2); // the worker's scores
      this.#far = { pool, arenaId: pool.attachArena(arena.memory, arena.attnTableAt), s };
    }
    const buf = (n: number) => arena === null ? new Float32Array(n) : arena.alloc(n);
    this.#layers = d.layers.map((l, i) => {
      const w = (b: DeviceBuffer, n: number, what: string) => f32(b, n, `layers.${i}.${what}`);
      const wq = w(l.wq, Q * C, "wq"), wk = w(l.wk, KV * C, "wk"), wv = w(l.wv, KV * C, "wv");
      const fused = B === 1 && l.bq === null && l.bk === null && l.bv === null &&
        follows(wq, wk) && follows(wk, wv);
      const kc = w(l.k, B * capacity * KV, "k cache"), vc = w(l.v, B * capacity * KV, "v cache");
      const rk = arena === null ? kc : arena.alloc(kc.length);
      const rv = arena === null ? vc : arena.alloc(vc.length);
      rk.set(kc);
      rv.set(vc);
      const kHead: Float32Array[] = [], vHead: Float32Array[] = [];
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < NKV; h++) {
          kHead.push(rk.subarray(b * capacity * KV + h * HS));
          vHead.push(rv.subarray(b * capacity * KV + h * HS));
        }
      }
      return {
        saNorm: w(l.saNorm, C, "sa_norm"),
        wqkv: fused ? new Float32Array(wq.buffer, wq.byteOffset, (Q + 2 * KV) * C) : null,
        wq,
        wk,
        wv,
        bq: l.bq === null ? null : w(l.bq, Q, "bq"),
        bk: l.bk === null ? null : w(l.bk, KV, "bk"),
        bv: l.bv === null ? null : w(l.bv, KV, "bv"),
        wo: w(l.wo, C * Q, "wo"),
        mlpNorm: w(l.mlpNorm, C, "mlp_norm"),
        w1: w(l.w1, H * C, "w1"),
        w2: w(l.w2, C * H, "w2"),
        w3: w(l.w3, H * C, "w3"),
        kc,
        vc,
        rk,
        rv,
        kHead,
        vHead,
      };
    });
    this.#x = buf(B * C);
    this.#h = buf(B * C);
    this.#y = buf(B * C);
    this.#rstd = new Float32Array(B);
    this.#qkv = buf(B * (Q + 2 * KV));
    // Fused (B = 1): q, k, v are the product's consecutive parts. Otherwise three buffers.
    if (B === 1) {
      this.#q = this.#qkv.subarray(0, Q);
      this.#k = this.#qkv.subarray(Q, Q + KV);
      this.#v = this.#qkv.subarray(Q + KV);
    } else {
      this.#q = buf(B * Q);
      this.#k = buf(B * KV);
      this.#v = buf(B * KV);
    }
    this.#att = buf(B * Q);
    this.#gate = buf(B * H);
    this.#up = buf(B * H);
    this.#act = buf(B * H);
    this.#s = buf(capacity + 2); // + attn_decode's pad
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < NH; h++) {
        this.#qHead.push(this.#q.subarray(b * Q + h * HS));
        this.#oHead.push(this.#att.subarray(b * Q + h * HS));
      }
    }
  }

  /** True when the pool's worker runs half the sequences' attention (B > 1, shared arena). */
  get splitsAttention(): boolean {
    return this.#far !== null;
  }

  /** Cache rows [0, rows) of every sequence came from the op-by-op path: copy them in. */
  cachesWritten(rows: number): void {
    const { B, capacity, NKV, HS } = this.#d;
    const n = Math.min(rows, capacity) * NKV * HS;
    for (const l of this.#layers) {
      if (l.rk === l.kc) continue;
      for (let b = 0; b < B; b++) {
        const o = b * capacity * NKV * HS;
        l.rk.set(l.kc.subarray(o, o + n), o);
        l.rv.set(l.vc.subarray(o, o + n), o);
      }
    }
  }

  /** C(M, N) = A(M, K) W(N, K)^T + beta C: resident in wasm when Gemm runs it there. */
  #nt(
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    lda: number,
    W: Float32Array,
    ldw: number,
    Cm: Float32Array,
    beta: number,
  ): void {
    const a = this.#arena;
    if (a !== null && M === 1 && gemvInWasm(N, K, ldw !== K)) a.rows(N, K, A, W, ldw, Cm, beta);
    else this.#gemm.nt(M, N, K, A, lda, W, ldw, Cm, N, beta);
  }

  step(tokens: Int32Array, pos: number, live?: Uint8Array): void {
    const d = this.#d;
    const { B, C, NH, NKV, HS, H, V, capacity } = d;
    const Q = NH * HS, KV = NKV * HS;
    if (tokens.length !== B) throw new Error(`decoder: ${tokens.length} tokens for batch ${B}`);
    if (pos < 0 || pos >= capacity) {
      throw new TuneError(
        `KV cache of ${capacity} positions cannot hold position ${pos}; raise max_seq_len`,
      );
    }
    if ((pos + 1) * (HS >> 1) > this.#cos.length) {
      throw new TuneError(`sequence position ${pos} is beyond the rotary table; raise max_seq_len`);
    }
    const x = this.#x, h = this.#h, y = this.#y;
    for (let b = 0; b < B; b++) {
      const t = tokens[b];
      if (!(t >= 0 && t < V)) {
        throw new TuneError(`token id ${t} is outside the vocabulary (size ${V})`);
      }
      x.set(this.#emb.subarray(t * C, t * C + C), b * C);
    }
    for (const l of this.#layers) {
      rmsnorm(h, this.#rstd, x, l.saNorm, B, C, d.eps);
      if (l.wqkv !== null && B === 1) {
        this.#nt(1, Q + 2 * KV, C, h, C, l.wqkv, C, this.#qkv, 0);
      } else {
        this.#linear(this.#q, h, l.wq, l.bq, C, Q);
        this.#linear(this.#k, h, l.wk, l.bk, C, KV);
        this.#linear(this.#v, h, l.wv, l.bv, C, KV);
      }
      rope(this.#q, this.#cos, this.#sin, B, 1, NH, HS, pos, d.layout, false);
      rope(this.#k, this.#cos, this.#sin, B, 1, NKV, HS, pos, d.layout, false);
      for (let b = 0; b < B; b++) {
        if (live !== undefined && live[b] === 0) continue;
        const kb = this.#k.subarray(b * KV, b * KV + KV), at = (b * capacity + pos) * KV;
        const vb = this.#v.subarray(b * KV, b * KV + KV);
        l.kc.set(kb, at);
        l.vc.set(vb, at);
        if (l.rk !== l.kc) {
          l.rk.set(kb, at);
          l.rv.set(vb, at);
        }
      }
      this.#attend(l, pos, live);
      this.#nt(B, C, Q, this.#att, Q, l.wo, Q, y, 0);
      for (let i = 0; i < B * C; i++) x[i] = y[i] + x[i];
      rmsnorm(h, this.#rstd, x, l.mlpNorm, B, C, d.eps);
      this.#nt(B, H, C, h, C, l.w1, C, this.#gate, 0);
      this.#nt(B, H, C, h, C, l.w3, C, this.#up, 0);
      // the bits of swigluForward (its even head in wasm too)
      const head = this.#arena === null ? 0 : (B * H) & ~1;
      if (head > 0) this.#arena!.swiglu(this.#act, this.#gate, this.#up, head);
      swigluForwardScalar(this.#act, this.#gate, this.#up, head, B * H);
      this.#nt(B, C, H, this.#act, H, l.w2, H, y, 0);
      for (let i = 0; i < B * C; i++) x[i] = y[i] + x[i];
    }
    rmsnorm(h, this.#rstd, x, this.#norm, B, C, d.eps);
    this.#nt(B, V, C, h, C, this.#out, C, this.#logits, 0);
  }

  /** out(B, N) = x(B, K) W(N, K)^T + b, as the backend's matmulForward. */
  #linear(
    out: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    K: number,
    N: number,
  ): void {
    const B = this.#d.B;
    if (bias !== null) { for (let i = 0; i < B; i++) out.set(bias, i * N); }
    this.#nt(B, N, K, x, K, w, K, out, bias === null ? 0 : 1);
  }

  /**
   * att(B, Q) = softmax(q k^T / sqrt(HS)) v over cache rows 0..pos, as attention.ts; rows
   * of finished sequences (live[b] = 0) keep their old values.
   */
  #attend(l: Layer, pos: number, live: Uint8Array | undefined): void {
    const { B, NH, NKV, HS } = this.#d;
    const g = this.#gemm, s = this.#s, a = this.#arena;
    const ldk = NKV * HS, nk = pos + 1, group = NH / NKV;
    const scale = 1 / Math.sqrt(HS);
    // all heads of a sequence in one wasm call when its products would run in wasm anyway
    const strided = ldk !== HS; // (one kv head: the products run on OpenBLAS, head by head)
    const whole = a !== null && (HS & 1) === 0 && gemvInWasm(nk, HS, strided) &&
      gemvInWasm(HS, nk, strided);
    if (whole && this.#far !== null && this.#splitAttend(l, nk, live)) return;
    for (let b = 0; b < B; b++) {
      if (live !== undefined && live[b] === 0) continue; // finished: its att row is not read
      if (whole) {
        const q = this.#qHead[b * NH], o = this.#oHead[b * NH];
        a.attnDecode(q, l.kHead[b * NKV], l.vHead[b * NKV], ldk, s, o, nk, NH, group, HS, scale);
        continue;
      }
      for (let hd = 0; hd < NH; hd++) {
        const kv = b * NKV + ((hd / group) | 0);
        const qh = this.#qHead[b * NH + hd], oh = this.#oHead[b * NH + hd];
        this.#nt(1, nk, HS, qh, HS, l.kHead[kv], ldk, s, 0); // s(nk) = K_h q_h
        let m = -Infinity;
        for (let j = 0; j < nk; j++) if (s[j] > m) m = s[j];
        const max = m * scale;
        let sum = 0;
        let j0 = 0;
        if (a !== null) { // the even head of the exps in wasm, bitwise the loop below
          j0 = nk & ~1;
          sum = a.expRow(s, j0, scale, max);
        }
        sum = attnExpRange(s, j0, nk - 1, scale, max, sum); // the rest (all: no wasm)
        // o_h(HS) = exp(s) V_h
        if (a !== null && gemvInWasm(HS, nk, strided)) a.cols(HS, nk, s, l.vHead[kv], ldk, oh, 0);
        else g.nn(1, HS, nk, s, nk, l.vHead[kv], ldk, oh, HS, 0);
        const inv = 1 / sum;
        for (let i = 0; i < HS; i++) oh[i] *= inv;
      }
    }
  }

  /**
   * `#attend`'s whole-sequence kernel with the live sequences split in two: the first half
   * here, the second on the pool's worker (CMD_ATTN: the operands' byte offsets in the shared
   * arena, scores in the worker's own buffer). False when fewer than two sequences are live.
   */
  #splitAttend(l: Layer, nk: number, live: Uint8Array | undefined): boolean {
    const { B, NH, NKV, HS } = this.#d;
    const a = this.#arena!, far = this.#far!, s = this.#s;
    const ldk = NKV * HS, group = NH / NKV, scale = 1 / Math.sqrt(HS);
    let n = 0;
    for (let b = 0; b < B; b++) if (live === undefined || live[b] !== 0) n++;
    if (n < 2) return false;
    const mine = n >> 1, theirs = Math.min(n - mine, (SPIN_ARGS - 10) >> 2);
    const seqs = (from: number, count: number, f: (b: number) => void) => {
      for (let b = 0, k = 0; b < B && k < from + count; b++) {
        if (live !== undefined && live[b] === 0) continue;
        if (k++ >= from) f(b);
      }
    };
    const here = (b: number) => {
      const q = this.#qHead[b * NH], o = this.#oHead[b * NH];
      a.attnDecode(q, l.kHead[b * NKV], l.vHead[b * NKV], ldk, s, o, nk, NH, group, HS, scale);
    };
    const ok = far.pool.spin((args) => {
      args.set([CMD_ATTN, far.arenaId, theirs, ldk, nk, NH, group, HS, scale, far.s.byteOffset]);
      let j = 10;
      seqs(mine, theirs, (b) => {
        args[j++] = this.#qHead[b * NH].byteOffset;
        args[j++] = l.kHead[b * NKV].byteOffset;
        args[j++] = l.vHead[b * NKV].byteOffset;
        args[j++] = this.#oHead[b * NH].byteOffset;
      });
    }, () => seqs(0, mine, here));
    if (!ok) seqs(mine, theirs, here); // the worker failed: its share here
    seqs(mine + theirs, n - mine - theirs, here); // beyond the command's slots (B > 2 * 72)
    return true;
  }
}
