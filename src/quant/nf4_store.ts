/**
 * The NF4 base weights of a QLoRA model on a device: every decoder layer's linear weights
 * (q/k/v/output_proj, w1/w2/w3), as torchtune's `quantize_base=True` builders quantize them
 * (embeddings, norms and the output projection stay in the ordinary base store). Each weight
 * is quantized once on the host as it is loaded (src/quant/nf4.ts) and kept in NF4 on the
 * device; saving dequantizes it again.
 */
import type { Backend, DeviceBuffer, Nf4Weight } from "../backend/ops.ts";
import type { HostTensor } from "../params/state_dict.ts";
import { type GroupDecl, ParamLayout } from "../params/layout.ts";
import { checkShape } from "../params/layout.ts";
import { type FlatShard, flatShard } from "../distributed/sharding.ts";
import {
  checkNf4Shape,
  NF4_BLOCK,
  NF4_MULTIPLE,
  nf4Bytes,
  nf4Dequantize,
  type Nf4Host,
  nf4Quantize,
} from "./nf4.ts";

/**
 * One NF4 weight's device buffers (the mean is set when the weight is loaded): its own
 * codes and scalers, or (sharded) views into the store's group slot.
 */
class DeviceNf4 implements Nf4Weight {
  readonly codes: DeviceBuffer; // (n/8) i32
  readonly scalers: DeviceBuffer; // (n/256) i32
  readonly factors: DeviceBuffer; // (n/16384) f32
  mean = 0;
  dtype: "f32" | "bf16" = "f32";

  constructor(
    be: Backend,
    readonly rows: number,
    readonly cols: number,
    inSlot: { slot: DeviceBuffer; at: number } | null,
  ) {
    const n = rows * cols;
    this.codes = inSlot ? be.view(inSlot.slot, inSlot.at, n / 8) : be.alloc(n / 8, "i32");
    this.scalers = inSlot
      ? be.view(inSlot.slot, inSlot.at + n / 8, n / 256)
      : be.alloc(n / 256, "i32");
    this.factors = be.alloc(n / NF4_MULTIPLE, "f32");
  }

  /** i32 words of codes then scalers (a weight's share of its group's packed words). */
  get words(): number {
    return (this.rows * this.cols) / 8 + (this.rows * this.cols) / 256;
  }
}

/**
 * FSDP/ZeRO-3 sharding of an NF4 base (the distributed recipes). The NF4 weights of one
 * layout group ("layers.i") are packed into one i32 word buffer, weight after weight, each as
 * its codes then its int8 block scalers; rank r keeps slice r of every group's words
 * (`flatShard`), and `gatherGroup` all-gathers a group's slices into one shared slot before
 * the group runs, where the weights' `codes`/`scalers` views lie. The per-group fp32 factors
 * (4 bytes per 16384 elements) and the means stay whole on every rank.
 *
 * The slices are equal runs of packed words, so a 64-element block's codes, or the scaler
 * word holding its scaler, may straddle two ranks. That is harmless, and no scale is
 * exchanged: nothing ever reads a slice; every NF4 kernel reads the gathered slot, where
 * each weight's codes and scalers are whole again, bit for bit. Equal slices keep the
 * collectives in place (NCCL's all-gather needs equal parts) and the memory even per rank.
 */
export interface Nf4Sharding {
  rank: number;
  worldSize: number;
  /** The layout group of NF4 weight `name`. */
  groupOf(name: string): string;
}

/** One group's packed words and this rank's slice of them. */
interface Nf4Group {
  shard: FlatShard;
  /** First word of this rank's slice in the shard buffer. */
  shardOffset: number;
  /** The group's weights: the first word of each in the packed group, and its words. */
  weights: { name: string; at: number; words: number }[];
}

/** The bytes of `a` as an Int32Array (a copy when `a` is not 4-byte aligned). */
function asInt32(a: Uint8Array | Int8Array): Int32Array {
  if (a.byteOffset % 4 === 0 && a.byteLength % 4 === 0) {
    return new Int32Array(a.buffer, a.byteOffset, a.byteLength / 4);
  }
  const c = new Uint8Array(Math.ceil(a.byteLength / 4) * 4);
  c.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return new Int32Array(c.buffer);
}

/** Names of the weights a `quantize_base` model keeps in NF4, from the full base layout. */
export function nf4WeightNames(layout: ParamLayout, linearPrefixes: readonly string[]): string[] {
  return linearPrefixes.map((p) => `${p}.weight`).filter((n) => layout.has(n));
}

/** `layout` without the tensors named in `without` (groups keep their order). */
export function layoutWithout(layout: ParamLayout, without: ReadonlySet<string>): ParamLayout {
  const groups: GroupDecl[] = layout.groups.map((g) => ({
    name: g.name,
    tensors: g.entries.filter((e) => !without.has(e.name)).map((e) => ({
      name: e.name,
      shape: [...e.shape],
    })),
  }));
  return new ParamLayout(groups);
}

/** NF4 weights by name, on one backend; sharded over the ranks with `sharding`. */
export class Nf4Store {
  readonly #weights = new Map<string, DeviceNf4>();
  readonly #shapes = new Map<string, number[]>();
  /** Sharded: the groups, the slot they are gathered into and this rank's slices. */
  readonly #sharded: {
    groups: Map<string, Nf4Group>;
    groupOf: Map<string, string>;
    /** First word of each weight in its packed group. */
    wordAt: Map<string, number>;
    slot: DeviceBuffer; // (largest padded group) i32
    shard: DeviceBuffer; // (sum of the slices) i32
  } | null = null;
  /** Sharded, inside `withGathered`: every weight's codes and scalers on the host. */
  #gathered: Map<string, { codes: Int32Array; scalers: Int32Array }> | null = null;

  /** Allocate NF4 buffers for `tensors` (TuneError, torchao's reason, for shapes it refuses). */
  constructor(
    readonly backend: Backend,
    tensors: readonly { name: string; shape: readonly number[] }[],
    sharding: Nf4Sharding | null = null,
  ) {
    const dims = (s: readonly number[]) => (s.length === 2 ? s : [1, s[0]]);
    for (const t of tensors) checkNf4Shape(t.name, t.shape);
    if (sharding) {
      // pack each group's weights (codes then scalers, i32 words), then place the slices
      const weights = new Map<string, Nf4Group["weights"]>();
      const groupOf = new Map<string, string>();
      const wordAt = new Map<string, number>();
      for (const t of tensors) {
        const g = sharding.groupOf(t.name);
        const [rows, cols] = dims(t.shape);
        const list = weights.get(g) ?? [];
        const last = list.at(-1);
        const at = last ? last.at + last.words : 0;
        list.push({ name: t.name, at, words: (rows * cols) / 8 + (rows * cols) / 256 });
        weights.set(g, list);
        groupOf.set(t.name, g);
        wordAt.set(t.name, at);
      }
      const groups = new Map<string, Nf4Group>();
      let shardAt = 0, slotLength = 0;
      for (const [name, list] of weights) {
        const last = list.at(-1)!;
        const shard = flatShard(last.at + last.words, sharding);
        groups.set(name, { shard, shardOffset: shardAt, weights: list });
        shardAt += shard.shardLength;
        slotLength = Math.max(slotLength, shard.paddedLength);
      }
      const slot = backend.alloc(Math.max(1, slotLength), "i32");
      const shard = backend.alloc(Math.max(1, shardAt), "i32");
      this.#sharded = { groups, groupOf, wordAt, slot, shard };
    }
    for (const t of tensors) {
      const [rows, cols] = dims(t.shape);
      const sh = this.#sharded;
      const inSlot = sh ? { slot: sh.slot, at: sh.wordAt.get(t.name)! } : null;
      this.#weights.set(t.name, new DeviceNf4(backend, rows, cols, inSlot));
      this.#shapes.set(t.name, [...t.shape]);
    }
  }

  /** Whether the weights are sharded over the ranks (gathered group by group). */
  get sharded(): boolean {
    return this.#sharded !== null;
  }

  /**
   * Sharded: all-gather group `name`'s NF4 words into the slot, so its weights can run
   * (every rank calls it, for the same groups in the same order). No-op for other groups.
   */
  async gatherGroup(name: string): Promise<void> {
    const sh = this.#sharded;
    const g = sh?.groups.get(name);
    if (!sh || !g) return;
    const be = this.backend;
    const inp = be.view(sh.shard, g.shardOffset, g.shard.shardLength); // (slice)
    await be.collectives.allGather(be.view(sh.slot, 0, g.shard.paddedLength), inp);
  }

  /**
   * Sharded: run `fn` while every weight's codes and scalers are gathered on the host (for
   * `getQuantized` / `getTensor`, e.g. to save a merged model); every rank calls it.
   */
  async withGathered<R>(fn: () => R | Promise<R>): Promise<R> {
    const sh = this.#sharded;
    if (!sh) return await fn();
    const be = this.backend;
    const host = new Map<string, { codes: Int32Array; scalers: Int32Array }>();
    for (const [name, g] of sh.groups) {
      await this.gatherGroup(name);
      for (const w of g.weights) {
        const d = this.#weights.get(w.name)!;
        host.set(w.name, {
          codes: be.download(d.codes) as Int32Array,
          scalers: be.download(d.scalers) as Int32Array,
        });
      }
    }
    this.#gathered = host;
    try {
      return await fn();
    } finally {
      this.#gathered = null;
    }
  }

  /** Names of the NF4 weights, in construction order. */
  get names(): string[] {
    return [...this.#weights.keys()];
  }

  /** Whether `name` is kept in NF4 here. */
  has(name: string): boolean {
    return this.#weights.has(name);
  }

  /** The device weight `name` (for the NF4 matrix products). */
  weight(name: string): Nf4Weight {
    const w = this.#weights.get(name);
    if (!w) throw new Error(`no NF4 weight ${name}`);
    return w;
  }

  /** Quantize a host tensor (in its checkpoint dtype's arithmetic) into `name`. */
  setTensor(name: string, t: HostTensor): void {
    const shape = this.#shapes.get(name);
    if (!shape) throw new Error(`no NF4 weight ${name}`);
    checkShape(name, shape, t.shape);
    this.setQuantized(
      name,
      nf4Quantize(t.data, t.shape, { dtype: t.sourceDtype === "bf16" ? "bf16" : "f32", name }),
    );
  }

  /** Upload an already quantized tensor into `name` (sharded: this rank's part of it). */
  setQuantized(name: string, q: Nf4Host): void {
    const w = this.#weights.get(name)!;
    const be = this.backend;
    be.upload(w.factors, q.factors);
    w.mean = q.mean;
    w.dtype = q.dtype;
    const sh = this.#sharded;
    if (!sh) {
      be.upload(w.codes, asInt32(q.codes));
      be.upload(w.scalers, asInt32(q.scalers));
      return;
    }
    // the weight's packed words [at, at + words) of its group, cut to this rank's slice
    const g = sh.groups.get(sh.groupOf.get(name)!)!;
    const at = sh.wordAt.get(name)!;
    const codes = asInt32(q.codes), scalers = asInt32(q.scalers);
    const lo = g.shard.start, hi = g.shard.start + g.shard.validLength;
    for (const [part, first] of [[codes, at], [scalers, at + codes.length]] as const) {
      const a = Math.max(lo, first), b = Math.min(hi, first + part.length);
      if (a < b) be.upload(sh.shard, part.subarray(a - first, b - first), g.shardOffset + a - lo);
    }
  }

  /** The NF4 pieces of `name`, downloaded (sharded: inside `withGathered`). */
  getQuantized(name: string): Nf4Host {
    const w = this.#weights.get(name)!;
    const be = this.backend;
    const n = w.rows * w.cols;
    if (this.#sharded && !this.#gathered) {
      throw new Error("a sharded NF4 store is read inside withGathered()");
    }
    const host = this.#gathered?.get(name);
    const codes = host?.codes ?? be.download(w.codes) as Int32Array;
    const scalers = host?.scalers ?? be.download(w.scalers) as Int32Array;
    return {
      shape: [...this.#shapes.get(name)!],
      dtype: w.dtype,
      codes: new Uint8Array(codes.buffer, codes.byteOffset, n / 2),
      scalers: new Int8Array(scalers.buffer, scalers.byteOffset, n / NF4_BLOCK),
      factors: be.download(w.factors) as Float32Array,
      mean: w.mean,
    };
  }

  /** Weight `name` dequantized on the host (torchtune saves a QLoRA model this way). */
  getTensor(name: string): HostTensor {
    const q = this.getQuantized(name);
    return {
      shape: q.shape,
      data: nf4Dequantize(q),
      ...(q.dtype === "bf16" ? { sourceDtype: "bf16" as const } : {}),
    };
  }

  /**
   * Bytes of the NF4 weights on the device (codes, scalers, factors; the means on the host);
   * sharded: this rank's slices, the group slot and the factors.
   */
  bytes(): number {
    const sh = this.#sharded;
    let b = 0;
    for (const w of this.#weights.values()) {
      b += sh ? w.factors.length * 4 : nf4Bytes(w.rows * w.cols) - 4;
    }
    return sh ? b + (sh.slot.length + sh.shard.length) * 4 : b;
  }

  /** Sharded: bytes of this rank's slices and of the slot (null when not sharded). */
  shardBytes(): { slices: number; slot: number; whole: number } | null {
    const sh = this.#sharded;
    if (!sh) return null;
    let whole = 0;
    for (const w of this.#weights.values()) whole += w.words * 4;
    return { slices: sh.shard.length * 4, slot: sh.slot.length * 4, whole };
  }

  /** Elements the NF4 weights stand for. */
  numel(): number {
    let n = 0;
    for (const w of this.#weights.values()) n += w.rows * w.cols;
    return n;
  }

  /** Release every buffer. */
  free(): void {
    const sh = this.#sharded;
    for (const w of this.#weights.values()) {
      if (!sh) {
        this.backend.free(w.codes);
        this.backend.free(w.scalers);
      }
      this.backend.free(w.factors);
    }
    if (sh) {
      this.backend.free(sh.slot);
      this.backend.free(sh.shard);
    }
    this.#weights.clear();
  }
}
