/**
 * 8-bit AdamW as bitsandbytes' AdamW8bit / PagedAdamW8bit update it (its blockwise optimizer
 * step): both moments live as 8-bit codes of blocks of 256 values (src/optim/blockwise8.ts;
 * signed map for m, unsigned for v) plus one fp32 absmax per block, about 2 bytes a parameter
 * against AdamW's 8. A step dequantizes a tensor's moments, takes the AdamW step in fp32
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   p = p (1 - lr wd) - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * and quantizes the moments again. Tensors under `minBlockwiseSize` elements (bitsandbytes'
 * min_8bit_size, 4096) keep fp32 moments, as bitsandbytes does. The state lives in host
 * memory and the step runs there, one tensor at a time (on CUDA: paged in per tensor).
 *
 * Sharded (ZeRO-3, `shard()`): each rank keeps the moments of its own slice of every layout
 * group only, and steps its slice of the values. A tensor's 256-value blocks stay where they
 * are on one process (counted from the tensor's element 0), so a block may straddle two
 * ranks' slices; each rank then holds the codes of its part and the block's absmax, which
 * is the max over every part: the ranks exchange the maxima of their straddling blocks
 * (one small all-gather per step, or per group under optimizer_in_bwd) before quantizing.
 * Every element is then quantized against the same absmax as on one process, so a sharded
 * step equals the one-process step on the same gradients, bit for bit, and the recipe state
 * (gathered into the one-process format) resumes on any number of ranks.
 */
import type { Backend } from "../backend/ops.ts";
import type { StateDict } from "../params/state_dict.ts";
import { TuneError } from "../errors.ts";
import type { DeviceBuffer } from "../backend/ops.ts";
import type { ParamEntry, ParamGroup } from "../params/layout.ts";
import type { ParamStore } from "../params/store.ts";
import { type AdamWOptions, validateAdamW } from "./adamw.ts";
import {
  absmaxOf,
  BLOCK8,
  blockMaxima,
  dequantizeBlockwise,
  encodeBlockwise,
  SIGNED_MAP,
  UNSIGNED_MAP,
} from "./blockwise8.ts";

/** Options of AdamW8bit: AdamW's plus bitsandbytes' min_8bit_size. */
export interface AdamW8bitOptions extends AdamWOptions {
  /** Tensors with fewer elements keep fp32 moments (bitsandbytes' min_8bit_size, 4096). */
  minBlockwiseSize?: number;
}

/** The moments of one piece of a tensor: 8-bit codes + block absmax, or fp32. */
type Moments =
  | { kind: "8bit"; m: Uint8Array; ma: Float32Array; v: Uint8Array; va: Float32Array }
  | { kind: "32bit"; m: Float32Array; v: Float32Array };

/** Elements [lo, hi) of a tensor, stepped at element `at` of the value/gradient buffers. */
interface Piece {
  entry: ParamEntry;
  lo: number;
  hi: number;
  at: number;
  /** The index of its slice (sharded; 0 on one process). */
  slice: number;
  st: Moments;
}

/**
 * One layout group's slice on this rank (a sharded optimizer's segment): the group's
 * elements [offset, offset + length) of the flat layout are split in `worldSize` slices of
 * `shardLength`; this rank's starts at `start` (relative to the group), has `valid` real
 * elements and lies at `shardOffset` of the shard buffers.
 */
export interface OptimizerSlice {
  group: string;
  offset: number;
  length: number;
  shardLength: number;
  start: number;
  valid: number;
  shardOffset: number;
}

/** A block cut by a rank boundary: its first flat element (its key), or -1 for none. */
interface Straddles {
  /** (worldSize) per rank: the block holding its slice's first element, if it starts earlier. */
  head: number[];
  /** (worldSize) per rank: the block holding its slice's last element, if it ends later. */
  tail: number[];
}

/** A straddling block's part on this rank, quantized once the ranks' maxima are known. */
interface Deferred {
  piece: Piece;
  /** Block index in the piece's absmax. */
  block: number;
  /** Its elements in the piece. */
  i0: number;
  m: Float32Array;
  v: Float32Array;
  mMax: number;
  vMax: number;
  key: number;
}

/** 8-bit AdamW over one trainable store (or, sharded, this rank's slices of it). */
export class AdamW8bit {
  /** Number of steps taken (the next step is stepCount + 1). */
  stepCount = 0;
  #pieces: Piece[] = [];
  /** Sharded: the slices and every rank's straddling blocks of each. */
  #slices: { slice: OptimizerSlice; straddles: Straddles }[] | null = null;
  /** The dequantized moments of the tensor being updated (grown to the largest). */
  readonly #tmp: [Float32Array, Float32Array] = [new Float32Array(0), new Float32Array(0)];

  constructor(
    readonly backend: Backend,
    readonly store: ParamStore,
    readonly options: AdamW8bitOptions,
  ) {
    validateAdamW(options);
    if (!store.trainable) throw new Error("AdamW8bit needs a trainable store");
    // a store with group windows has no full values: the state comes with `shard()`
    if (store.windows) return;
    for (const e of store.layout.entries) {
      this.#pieces.push({
        entry: e,
        lo: 0,
        hi: e.length,
        at: e.offset,
        slice: 0,
        st: this.#moments(e, 0, e.length),
      });
    }
  }

  /** Fresh moments of elements [lo, hi) of `e` (bitsandbytes' initial state: codes 0, absmax 0). */
  #moments(e: ParamEntry, lo: number, hi: number): Moments {
    const n = hi - lo;
    if (e.length < (this.options.minBlockwiseSize ?? 4096)) {
      return { kind: "32bit", m: new Float32Array(n), v: new Float32Array(n) };
    }
    const blocks = Math.floor((hi - 1) / BLOCK8) - Math.floor(lo / BLOCK8) + 1;
    return {
      kind: "8bit",
      m: new Uint8Array(n),
      ma: new Float32Array(blocks),
      v: new Uint8Array(n),
      va: new Float32Array(blocks),
    };
  }

  /**
   * ZeRO-3: keep the state of this rank's slices only (a sharded optimizer's segments, in
   * the order of its shard buffers), and step them with `stepSlices`. Every rank calls it.
   */
  shard(slices: readonly OptimizerSlice[], worldSize: number): void {
    if (!this.store.windows) throw new Error("AdamW8bit.shard() is for a store with group windows");
    this.#pieces = [];
    this.#slices = [];
    const groups = new Map(this.store.layout.groups.map((g) => [g.name, g.entries]));
    const eight = (e: ParamEntry) => e.length >= (this.options.minBlockwiseSize ?? 4096);
    for (const [i, sl] of slices.entries()) {
      const entries = groups.get(sl.group) ?? []; // the layout's "tail" has none
      const head: number[] = [], tail: number[] = [];
      for (let r = 0; r < worldSize; r++) {
        const a = sl.offset + r * sl.shardLength;
        const b = a + Math.max(0, Math.min(sl.shardLength, sl.length - r * sl.shardLength));
        const at = (x: number) =>
          entries.find((e) => eight(e) && x >= e.offset && x < e.offset + e.length);
        const first = a < b ? at(a) : undefined, last = a < b ? at(b - 1) : undefined;
        const blockOf = (e: ParamEntry, x: number) =>
          e.offset + Math.floor((x - e.offset) / BLOCK8) * BLOCK8;
        head.push(first && (a - first.offset) % BLOCK8 !== 0 ? blockOf(first, a) : -1);
        tail.push(
          last && Math.min(blockOf(last, b - 1) + BLOCK8, last.offset + last.length) > b
            ? blockOf(last, b - 1)
            : -1,
        );
      }
      this.#slices.push({ slice: sl, straddles: { head, tail } });
      const a = sl.offset + sl.start, b = a + sl.valid;
      for (const e of entries) {
        const lo = Math.max(a, e.offset) - e.offset,
          hi = Math.min(b, e.offset + e.length) - e.offset;
        if (lo >= hi) continue;
        const at = sl.shardOffset + e.offset + lo - a;
        this.#pieces.push({ entry: e, lo, hi, at, slice: i, st: this.#moments(e, lo, hi) });
      }
    }
  }

  /** One update with learning rate `lr` (default: options.lr) from the store's gradients. */
  step(lr: number = this.options.lr): void {
    this.#unsharded();
    this.stepCount++;
    // one tensor at a time: only its values and gradient are copied to the host
    for (const p of this.#pieces) {
      this.#stepPiece(p, lr, this.store.params, this.store.grads!, null);
    }
  }

  /**
   * Group `g`'s share of step `stepCount` (the caller advanced it), for optimizer_in_bwd:
   * the update is per tensor, so the groups' updates together are `step()`'s, bit for bit.
   */
  stepGroup(g: ParamGroup, lr: number): void {
    this.#unsharded();
    for (const p of this.#pieces) {
      if (p.entry.group === g.name) {
        this.#stepPiece(p, lr, this.store.params, this.store.grads!, null);
      }
    }
  }

  /**
   * Sharded: step `stepCount` (the caller advanced it) of this rank's slices, of every group
   * or of group `group` only (optimizer_in_bwd), over the shard buffers `params` and `grads`.
   * Every rank calls it with the same groups: the straddling blocks' maxima are exchanged.
   */
  async stepSlices(
    params: DeviceBuffer,
    grads: DeviceBuffer,
    lr: number,
    group?: string,
  ): Promise<void> {
    const slices = this.#slices;
    if (!slices) throw new Error("AdamW8bit.stepSlices() needs shard() first");
    const idx = slices.map((_, i) => i).filter((i) => !group || slices[i].slice.group === group);
    const deferred: Deferred[] = [];
    for (const p of this.#pieces) {
      if (idx.includes(p.slice)) this.#stepPiece(p, lr, params, grads, deferred);
    }
    await this.#exchange(idx, deferred);
  }

  /**
   * Each rank's maxima of its straddling blocks in slices `idx`, all-gathered; then every
   * deferred block part quantized against its block's max over all ranks.
   */
  async #exchange(idx: number[], deferred: Deferred[]): Promise<void> {
    const slices = this.#slices!;
    const be = this.backend, c = be.collectives, W = c.worldSize, r = c.rank;
    const n = 4 * idx.length; // per slice: m and v maxima of the head block, then of the tail
    const own = new Float32Array(n);
    for (const d of deferred) {
      const k = idx.indexOf(d.piece.slice), sd = slices[d.piece.slice].straddles;
      // a slice inside one block: its part counts as head and tail alike
      if (sd.head[r] === d.key) own.set([d.mMax, d.vMax], 4 * k);
      if (sd.tail[r] === d.key) own.set([d.mMax, d.vMax], 4 * k + 2);
    }
    const send = be.alloc(Math.max(1, n), "f32"), all = be.alloc(Math.max(1, n) * W, "f32");
    let got: Float32Array;
    try {
      be.upload(send, own);
      await c.allGather(all, send);
      got = be.download(all) as Float32Array; // (W, n)
    } finally {
      be.free(send);
      be.free(all);
    }
    const stride = Math.max(1, n);
    for (const d of deferred) {
      const k = idx.indexOf(d.piece.slice), sd = slices[d.piece.slice].straddles;
      let mMax = 0, vMax = 0;
      for (let q = 0; q < W; q++) {
        for (const [keys, o] of [[sd.head, 0], [sd.tail, 2]] as const) {
          if (keys[q] !== d.key) continue;
          mMax = Math.max(mMax, got[q * stride + 4 * k + o]);
          vMax = Math.max(vMax, got[q * stride + 4 * k + o + 1]);
        }
      }
      const st = d.piece.st as Extract<Moments, { kind: "8bit" }>;
      const first = d.piece.lo + d.i0; // in the block's absmax `d.block`
      st.ma[d.block] = absmaxOf(mMax);
      st.va[d.block] = absmaxOf(vMax);
      encodeBlockwise(d.m, first, SIGNED_MAP, st.ma.subarray(d.block), st.m.subarray(d.i0));
      encodeBlockwise(d.v, first, UNSIGNED_MAP, st.va.subarray(d.block), st.v.subarray(d.i0));
    }
  }

  #unsharded(): void {
    if (this.#slices || this.store.windows) {
      throw new Error("a sharded AdamW8bit steps through stepSlices()");
    }
  }

  #stepPiece(
    piece: Piece,
    lr: number,
    params: DeviceBuffer,
    grads: DeviceBuffer,
    deferred: Deferred[] | null,
  ): void {
    const be = this.backend, n = piece.hi - piece.lo;
    const pv = be.view(params, piece.at, n);
    const p = be.download(pv) as Float32Array; // (n)
    const g = be.download(be.view(grads, piece.at, n)) as Float32Array; // (n)
    this.#update(piece, p, g, lr, deferred);
    be.upload(params, p, piece.at);
  }

  #update(
    piece: Piece,
    p: Float32Array,
    g: Float32Array,
    lr: number,
    deferred: Deferred[] | null,
  ): void {
    const st = piece.st;
    const { betas: [b1, b2], eps, weightDecay } = this.options;
    const n = p.length;
    const m = st.kind === "8bit" ? this.#scratch(0, n) : st.m;
    const v = st.kind === "8bit" ? this.#scratch(1, n) : st.v;
    if (st.kind === "8bit") {
      dequantizeBlockwise(st.m, st.ma, SIGNED_MAP, m, piece.lo);
      dequantizeBlockwise(st.v, st.va, UNSIGNED_MAP, v, piece.lo);
    }
    const f = Math.fround;
    const fb1 = f(b1), fb2 = f(b2), c1 = f(1 - b1), c2 = f(1 - b2);
    const t = this.stepCount;
    const bc1 = 1 - Math.pow(b1, t), bc2 = 1 - Math.pow(b2, t);
    const sqrtBc2 = f(Math.sqrt(bc2)), feps = f(eps);
    const decay = f(1 - lr * weightDecay), stepSize = f(-lr / bc1);
    for (let i = 0; i < n; i++) {
      const gi = g[i];
      m[i] = f(m[i] * fb1) + f(gi * c1);
      v[i] = f(v[i] * fb2) + f(f(c2 * gi) * gi);
      const denom = f(f(Math.sqrt(v[i])) / sqrtBc2) + feps;
      let pi = p[i];
      if (weightDecay > 0) pi = f(pi * decay);
      p[i] = pi + f(stepSize * f(m[i] / f(denom)));
    }
    if (st.kind === "8bit") this.#quantize(piece, st, m, v, deferred);
  }

  /**
   * Quantize a piece's updated moments; a block another rank's slice shares (only at a
   * slice's ends) is kept aside for `#exchange`.
   */
  #quantize(
    piece: Piece,
    st: Extract<Moments, { kind: "8bit" }>,
    m: Float32Array,
    v: Float32Array,
    deferred: Deferred[] | null,
  ): void {
    blockMaxima(m, piece.lo, st.ma);
    blockMaxima(v, piece.lo, st.va);
    const sd = this.#slices?.[piece.slice].straddles;
    const r = this.backend.collectives.rank;
    const b0 = Math.floor(piece.lo / BLOCK8), nb = st.ma.length;
    let from = 0, to = m.length; // the part quantized now
    for (const block of nb === 1 ? [0] : [0, nb - 1]) {
      const key = piece.entry.offset + (b0 + block) * BLOCK8;
      if (!sd || !deferred || (sd.head[r] !== key && sd.tail[r] !== key)) continue;
      const i0 = Math.max(0, key - piece.entry.offset - piece.lo);
      const i1 = Math.min(m.length, key - piece.entry.offset + BLOCK8 - piece.lo);
      deferred.push({
        piece,
        block,
        i0,
        m: m.slice(i0, i1),
        v: v.slice(i0, i1),
        mMax: st.ma[block],
        vMax: st.va[block],
        key,
      });
      if (i0 === 0) from = i1;
      else to = i0;
    }
    if (from >= to) return;
    for (let b = 0; b < nb; b++) {
      st.ma[b] = absmaxOf(st.ma[b]);
      st.va[b] = absmaxOf(st.va[b]);
    }
    const first = piece.lo + from;
    const skip = Math.floor(first / BLOCK8) - b0;
    const both = [[m, SIGNED_MAP, st.ma, st.m], [v, UNSIGNED_MAP, st.va, st.v]] as const;
    for (const [x, map, absmax, codes] of both) {
      encodeBlockwise(
        x.subarray(from, to),
        first,
        map,
        absmax.subarray(skip),
        codes.subarray(from, to),
      );
    }
  }

  /** Reusable fp32 scratch `k` (the dequantized m or v) of n elements. */
  #scratch(k: 0 | 1, n: number): Float32Array {
    if (this.#tmp[k].length < n) this.#tmp[k] = new Float32Array(n);
    return this.#tmp[k].subarray(0, n);
  }

  /** Bytes of optimizer state (codes, block absmaxes, fp32 moments of small tensors). */
  stateBytes(): number {
    let b = 0;
    for (const { st } of this.#pieces) {
      b += st.kind === "8bit"
        ? st.m.length * 2 + (st.ma.length + st.va.length) * 4
        : st.m.length * 8;
    }
    return b;
  }

  /** Bytes the state takes on one process (every tensor whole), for comparison. */
  fullStateBytes(): number {
    let b = 0;
    for (const e of this.store.layout.entries) {
      const n = e.length;
      b += n >= (this.options.minBlockwiseSize ?? 4096) ? n * 2 + Math.ceil(n / BLOCK8) * 8 : n * 8;
    }
    return b;
  }

  /** The moments of tensor `name`, dequantized (one process; for tests and inspection). */
  moments(name: string): { m: Float32Array; v: Float32Array } {
    const st = this.#piece(name).st;
    if (st.kind === "32bit") return { m: st.m.slice(), v: st.v.slice() };
    const m = new Float32Array(st.m.length), v = new Float32Array(st.v.length);
    dequantizeBlockwise(st.m, st.ma, SIGNED_MAP, m);
    dequantizeBlockwise(st.v, st.va, UNSIGNED_MAP, v);
    return { m, v };
  }

  #piece(name: string): Piece {
    this.#unsharded();
    return this.#pieces.find((p) => p.entry.name === name)!;
  }

  /** The whole state as fp32 tensors (codes as exact small integers), for recipe_state. */
  exportState(): StateDict {
    this.#unsharded();
    const sd: StateDict = new Map();
    const put = (k: string, a: Float32Array | Uint8Array) =>
      sd.set(k, { shape: [a.length], data: Float32Array.from(a) });
    for (const { entry: { name }, st } of this.#pieces) {
      if (st.kind === "8bit") {
        put(`adamw8bit.${name}.m_codes`, st.m);
        put(`adamw8bit.${name}.m_absmax`, st.ma);
        put(`adamw8bit.${name}.v_codes`, st.v);
        put(`adamw8bit.${name}.v_absmax`, st.va);
      } else {
        put(`adamw8bit.${name}.m`, st.m);
        put(`adamw8bit.${name}.v`, st.v);
      }
    }
    return sd;
  }

  /**
   * Sharded: this rank's state laid over its shard buffers (shardLength each), to be
   * all-gathered into the whole layout for `stateFromGathered`: `m`/`v` hold an element's
   * code (8-bit tensors) or moment (fp32 ones); `ma`/`va` a block's absmax at the block's
   * first element, written by the rank that holds that element.
   */
  sliceState(
    shardLength: number,
  ): { m: Float32Array; v: Float32Array; ma: Float32Array; va: Float32Array } {
    const out = {
      m: new Float32Array(shardLength),
      v: new Float32Array(shardLength),
      ma: new Float32Array(shardLength),
      va: new Float32Array(shardLength),
    };
    for (const { lo, at, st } of this.#pieces) {
      out.m.set(st.m, at);
      out.v.set(st.v, at);
      if (st.kind === "32bit") continue;
      const b0 = Math.floor(lo / BLOCK8);
      for (let b = 0; b < st.ma.length; b++) {
        const first = (b0 + b) * BLOCK8; // in the tensor
        if (first < lo) continue; // the rank before holds it
        out.ma[at + first - lo] = st.ma[b];
        out.va[at + first - lo] = st.va[b];
      }
    }
    return out;
  }

  /** `exportState()`'s tensors from `sliceState` arrays gathered over the whole layout. */
  stateFromGathered(
    full: { m: Float32Array; v: Float32Array; ma: Float32Array; va: Float32Array },
  ): StateDict {
    const sd: StateDict = new Map();
    const put = (k: string, a: Float32Array) => sd.set(k, { shape: [a.length], data: a });
    const min = this.options.minBlockwiseSize ?? 4096;
    for (const e of this.store.layout.entries) {
      const at = (a: Float32Array) => a.slice(e.offset, e.offset + e.length);
      const blocks = (a: Float32Array) =>
        Float32Array.from(
          { length: Math.ceil(e.length / BLOCK8) },
          (_, b) => a[e.offset + b * BLOCK8],
        );
      if (e.length >= min) {
        put(`adamw8bit.${e.name}.m_codes`, at(full.m));
        put(`adamw8bit.${e.name}.m_absmax`, blocks(full.ma));
        put(`adamw8bit.${e.name}.v_codes`, at(full.v));
        put(`adamw8bit.${e.name}.v_absmax`, blocks(full.va));
      } else {
        put(`adamw8bit.${e.name}.m`, at(full.m));
        put(`adamw8bit.${e.name}.v`, at(full.v));
      }
    }
    return sd;
  }

  /**
   * Restore `exportState()`'s tensors (TuneError when they belong to another model); sharded,
   * this rank takes its slices of them.
   */
  importState(sd: StateDict, step: number): void {
    const get = (k: string, n: number) => {
      const t = sd.get(k);
      if (!t || t.data.length !== n) {
        throw new TuneError(
          `optimizer state has no ${k} of ${n} values; resume with the same model, LoRA settings and optimizer`,
        );
      }
      return t.data;
    };
    for (const { entry: e, lo, hi, st } of this.#pieces) {
      const name = e.name;
      if (st.kind === "8bit") {
        const nb = Math.ceil(e.length / BLOCK8), b0 = Math.floor(lo / BLOCK8);
        st.m.set(get(`adamw8bit.${name}.m_codes`, e.length).subarray(lo, hi));
        st.ma.set(get(`adamw8bit.${name}.m_absmax`, nb).subarray(b0, b0 + st.ma.length));
        st.v.set(get(`adamw8bit.${name}.v_codes`, e.length).subarray(lo, hi));
        st.va.set(get(`adamw8bit.${name}.v_absmax`, nb).subarray(b0, b0 + st.va.length));
      } else {
        st.m.set(get(`adamw8bit.${name}.m`, e.length).subarray(lo, hi));
        st.v.set(get(`adamw8bit.${name}.v`, e.length).subarray(lo, hi));
      }
    }
    this.stepCount = step;
  }
}
