/**
 * FSDP/ZeRO-3 sharding of a model's weights over the ranks of a job.
 *
 * Every layout group of a store ("tok_embeddings", "layers.i", "head"; the adapters'
 * per-layer groups under LoRA) is split into `worldSize` equal slices (`flatShard`, padded
 * when the group length does not divide), and rank r owns slice r of every group: the fp32
 * values, the gradient and both AdamW moments of those elements live only on r.
 *
 * ZeRO-3 (the distributed recipes): the model is built with `groupWindows: worldSize`, so
 * its store holds no full-size value or gradient buffer, only one reusable group-sized slot
 * of each (two with tied embeddings), padded to a multiple of the world size. One step:
 *   1. `zeroGrads()`; per micro-batch `model.trainStep()` calls the hooks:
 *      `beforeGroup()` all-gathers the group's slices into its slot before its forward and
 *      again before its backward (and recomputation); `afterGroupBackward()` reduce-scatters
 *      the slot's gradients in place and adds this rank's part to its gradient slice;
 *   2. `gradNorm()` / `clip()`: the global L2 norm from every rank's slice;
 *   3. `step(lr)`: AdamW over this rank's slices only (the next forward gathers again).
 * Full values exist only while loading (the store is materialized, then `takeParams()`)
 * and saving (`withFullParams()`). A LoRA model's frozen base is sharded the same way by
 * `ShardedFrozen` (values only); `chainHooks` runs both holders' hooks.
 *
 * ZeRO-2 (a store without windows, still supported): forward/backward run on full `params`
 * and `grads`; `reduceScatterGrads()` after the whole backward and `gatherParams()` after
 * the step move between them and the slices, so only the optimizer state is divided.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import { type FlatShard, flatShard } from "../distributed/sharding.ts";
import type { GroupHooks } from "../models/llama/model.ts";
import type { AdamW } from "../optim/adamw.ts";
import type { ParamStore } from "../params/store.ts";
import type { HostMoments } from "./checkpointing.ts";

/** One layout group and where this rank's slice of it lies. */
interface Segment {
  name: string;
  /** First element of the group in the full flat buffer. */
  offset: number;
  /** Elements of the group (alignment padding included). */
  length: number;
  shard: FlatShard;
  /** First element of this rank's slice in the shard buffers. */
  shardOffset: number;
}

/** Sizes of a rank's share, for logs and tests. */
export interface ShardReport {
  /** Whether the store computes on group windows (ZeRO-3) rather than full buffers (ZeRO-2). */
  zero3: boolean;
  /** Bytes of this rank's trainable values and gradients resident during training: its
   * fp32 slices plus the compute buffers (full-size ones without windows, the group slots
   * and the collectives' staging with them). */
  residentParamGradBytes: number;
  /** Of those, the slices (values and gradients). */
  shardParamGradBytes: number;
  /** Of those, the compute buffers (group slots or full buffers) and staging. */
  computeParamGradBytes: number;
  /** Values and gradients of the largest group (fp32), for comparison. */
  largestGroupBytes: number;
  /** Values and gradients over the whole layout (fp32): one process's. */
  fullParamGradBytes: number;
  rank: number;
  worldSize: number;
  /** Elements of the full trainable flat buffer. */
  fullElements: number;
  /** Elements this rank owns (sum of its slices, padding of uneven groups included). */
  shardElements: number;
  /** Bytes of this rank's AdamW moments (m and v, fp32). */
  optimizerBytes: number;
  /** Bytes the moments take in one process (m and v over the full buffer). */
  fullOptimizerBytes: number;
}

/**
 * This rank's slices of a trainable store (master values, gradients, AdamW moments) and the
 * collectives that move between them and the full buffers. Every method that talks to the
 * other ranks must be called by all ranks in the same order.
 */
export class ShardedOptimizer {
  readonly rank: number;
  readonly worldSize: number;
  readonly segments: readonly Segment[];
  /** Elements of each shard buffer. */
  readonly shardLength: number;
  /** (shardLength) fp32 master values of this rank's slices. */
  readonly params: DeviceBuffer;
  /** (shardLength) reduced gradients of this rank's slices. */
  readonly grads: DeviceBuffer;
  /** (shardLength) AdamW first moment. */
  readonly m: DeviceBuffer;
  /** (shardLength) AdamW second moment. */
  readonly v: DeviceBuffer;
  /**
   * (max padded group length) for groups whose length is not a multiple of worldSize; with
   * group windows only while full buffers are gathered (saving), since the slots are padded.
   */
  #staging: DeviceBuffer | null;
  readonly #stagingLength: number;
  readonly #pair: DeviceBuffer; // (2) hi/lo of one f64 value
  readonly #pairs: DeviceBuffer; // (2 * worldSize)

  /**
   * @param store the model's trainable store (built with `optimizerMoments: false`).
   * @param adamw the optimizer that holds the hyper-parameters and the step count (it is
   *   bound to `store` but never steps it: this class applies the update to the slices).
   */
  constructor(
    readonly backend: Backend,
    readonly store: ParamStore,
    readonly adamw: AdamW,
  ) {
    if (!store.trainable) throw new Error("ShardedOptimizer needs a trainable store");
    const c = backend.collectives;
    this.rank = c.rank;
    this.worldSize = c.worldSize;
    const segs: Segment[] = [];
    let at = 0;
    let shardAt = 0;
    const add = (name: string, offset: number, length: number) => {
      if (length === 0) return;
      const shard = flatShard(length, { rank: this.rank, worldSize: this.worldSize });
      segs.push({ name, offset, length, shard, shardOffset: shardAt });
      shardAt += shard.shardLength;
    };
    for (const g of store.layout.groups) {
      if (g.offset !== at) throw new Error(`layout group ${g.name} is not contiguous`);
      add(g.name, g.offset, g.length);
      at = g.offset + g.length;
    }
    // the layout's total may round up past the last group (a tiny layout)
    add("tail", at, store.layout.total - at);
    this.segments = segs;
    this.shardLength = shardAt;
    this.params = backend.alloc(shardAt, "f32");
    this.grads = backend.alloc(shardAt, "f32");
    this.m = backend.alloc(shardAt, "f32");
    this.v = backend.alloc(shardAt, "f32");
    const staging = Math.max(
      0,
      ...segs.filter((s) => s.shard.paddedLength !== s.length).map((s) => s.shard.paddedLength),
    );
    this.#stagingLength = staging;
    this.#staging = staging > 0 && !store.windows ? backend.alloc(staging, "f32") : null;
    if (store.windows) {
      for (const s of segs) {
        if (s.name !== "tail" && store.groupParams(s.name).length !== s.shard.paddedLength) {
          throw new Error(
            `group ${s.name}: build the model with groupWindows = world size (${this.worldSize})`,
          );
        }
      }
    }
    this.#pair = backend.alloc(2, "f32");
    this.#pairs = backend.alloc(2 * this.worldSize, "f32");
  }

  /** Take this rank's slices of the store's current values as the master copy (after load). */
  takeParams(): void {
    takeSlices(this.backend, this.segments, this.params, this.store.params);
  }

  /** Per group: this rank's slice of grads = sum over ranks of the store's grads. */
  async reduceScatterGrads(): Promise<void> {
    if (this.store.windows) return; // ZeRO-3: done group by group in afterGroupBackward
    const be = this.backend;
    for (const s of this.segments) {
      const out = be.view(this.grads, s.shardOffset, s.shard.shardLength); // (shard)
      await this.#reduceSegment(s, out, be.view(this.store.grads!, s.offset, s.length));
    }
  }

  /** L2 norm of the whole reduced gradient (every rank gets the same value). */
  async gradNorm(): Promise<number> {
    const [sq] = await allSumF64(this.backend, [this.backend.sumSquares(this.grads)], {
      pair: this.#pair,
      pairs: this.#pairs,
    });
    return Math.sqrt(sq);
  }

  /**
   * Clip like torch.nn.utils.clip_grad_norm_ (and `clipGradNorm`): scale the gradients by
   * min(1, maxNorm / (norm + 1e-6)). Returns the norm before clipping.
   */
  async clip(maxNorm: number): Promise<number> {
    const norm = await this.gradNorm();
    if (Number.isFinite(maxNorm)) {
      const coef = Math.fround(maxNorm / (norm + 1e-6));
      if (coef < 1) this.backend.scale(this.grads, coef);
    }
    return norm;
  }

  /** One AdamW update of this rank's slices with learning rate `lr` (no communication). */
  step(lr: number): void {
    const o = this.adamw.options;
    this.adamw.stepCount++;
    this.backend.adamw(this.params, this.grads, this.m, this.v, {
      lr,
      beta1: o.betas[0],
      beta2: o.betas[1],
      eps: o.eps,
      weightDecay: o.weightDecay,
      step: this.adamw.stepCount,
    });
  }

  /** Per group: all-gather every rank's updated slice into the store's values. */
  async gatherParams(): Promise<void> {
    if (this.store.windows) return; // ZeRO-3: each group is gathered just before it runs
    await this.#gather(this.params, this.store.params);
  }

  // ---- ZeRO-3 (a store with group windows) ------------------------------------------

  /** Zero this rank's gradient slices (start of an optimizer step). */
  zeroGrads(): void {
    this.backend.fill(this.grads, 0);
  }

  /**
   * GroupHooks of the model: all-gather group `name`'s slices into its compute slot.
   * Every rank runs the same groups in the same order, so the collectives pair up.
   */
  async beforeGroup(name: string, _phase: "forward" | "backward"): Promise<void> {
    if (!this.store.hasGroup(name)) return; // e.g. tok_embeddings of a LoRA adapter store
    const be = this.backend;
    const s = this.#segment(name);
    // the slot holds the padded group: gather straight into it
    const inp = be.view(this.params, s.shardOffset, s.shard.shardLength); // (shard)
    await be.collectives.allGather(this.store.groupParams(name), inp);
  }

  /**
   * GroupHooks of the model: reduce-scatter group `name`'s gradients (this micro-batch's) from
   * its compute slot and add them to this rank's gradient slice.
   */
  async afterGroupBackward(name: string): Promise<void> {
    if (!this.store.hasGroup(name)) return;
    const be = this.backend;
    const s = this.#segment(name);
    const full = this.store.groupGrads(name); // (padded group), zero padding
    // in place (NCCL's in-place form): this rank's sums land on its own part of the slot
    const out = be.view(full, s.shard.start, s.shard.shardLength); // (shard)
    await be.collectives.reduceScatterSum(out, full);
    const acc = be.view(this.grads, s.shardOffset, s.shard.shardLength); // (shard)
    be.add(acc, acc, out);
  }

  /**
   * ZeRO-3: the full values in the store (allocated for the call) while `fn` runs, e.g. to
   * write a checkpoint; every rank must call it. Released afterwards.
   */
  async withFullParams<R>(fn: () => R | Promise<R>): Promise<R> {
    const st = this.store;
    if (!st.windows) return await fn();
    st.materialize();
    try {
      await this.#gather(this.params, st.params);
      return await fn();
    } finally {
      st.release();
    }
  }

  /** Both moments over the whole layout on the host (for the recipe state). */
  async gatherMoments(): Promise<HostMoments> {
    const be = this.backend;
    const full = be.alloc(this.store.layout.total, "f32"); // (total)
    try {
      await this.#gather(this.m, full);
      const m = be.download(full) as Float32Array;
      await this.#gather(this.v, full);
      const v = be.download(full) as Float32Array;
      return { m, v };
    } finally {
      be.free(full);
    }
  }

  /** Take this rank's slices of saved whole-layout moments (resume). */
  loadMoments(h: HostMoments): void {
    const total = this.store.layout.total;
    if (h.m.length !== total || h.v.length !== total) {
      throw new Error(`moments of ${h.m.length} elements for a layout of ${total}`);
    }
    const be = this.backend;
    be.fill(this.m, 0);
    be.fill(this.v, 0);
    for (const s of this.segments) {
      const a = s.offset + s.shard.start;
      const n = s.shard.validLength;
      if (n === 0) continue;
      be.upload(this.m, h.m.subarray(a, a + n), s.shardOffset);
      be.upload(this.v, h.v.subarray(a, a + n), s.shardOffset);
    }
  }

  /** Sizes of this rank's share. */
  report(): ShardReport {
    const st = this.store;
    const shardBytes = this.shardLength * 8;
    const extra = (this.#staging?.length ?? 0) * 4;
    const compute = st.paramBytes() + st.gradBytes() + extra;
    return {
      zero3: st.windows !== null,
      residentParamGradBytes: shardBytes + compute,
      shardParamGradBytes: shardBytes,
      computeParamGradBytes: compute,
      largestGroupBytes: Math.max(...st.layout.groups.map((g) => g.length)) * 8,
      fullParamGradBytes: st.layout.total * 8,
      rank: this.rank,
      worldSize: this.worldSize,
      fullElements: this.store.layout.total,
      shardElements: this.shardLength,
      optimizerBytes: this.shardLength * 8,
      fullOptimizerBytes: this.store.layout.total * 8,
    };
  }

  /** Release the shard buffers. */
  free(): void {
    for (const b of [this.params, this.grads, this.m, this.v, this.#pair, this.#pairs]) {
      this.backend.free(b);
    }
    if (this.#staging) this.backend.free(this.#staging);
  }

  #segment(name: string): Segment {
    const s = this.segments.find((x) => x.name === name);
    if (!s) throw new Error(`no layout group ${name} to shard`);
    return s;
  }

  /** All-gather one segment's slices of `shard` into `out` (group length). */
  async #gatherSegment(s: Segment, shard: DeviceBuffer, out: DeviceBuffer): Promise<void> {
    const be = this.backend;
    const c = be.collectives;
    const inp = be.view(shard, s.shardOffset, s.shard.shardLength); // (shard)
    if (s.shard.paddedLength === s.length) {
      await c.allGather(out, inp);
      return;
    }
    const pad = be.view(this.#staging!, 0, s.shard.paddedLength); // (W * shard)
    await c.allGather(pad, inp);
    be.copy(out, be.view(pad, 0, s.length));
  }

  /** Reduce-scatter one segment's `full` (group length) into `out` (shard). */
  async #reduceSegment(s: Segment, out: DeviceBuffer, full: DeviceBuffer): Promise<void> {
    const be = this.backend;
    const c = be.collectives;
    if (s.shard.paddedLength === s.length) {
      await c.reduceScatterSum(out, full);
      return;
    }
    const pad = be.view(this.#staging!, 0, s.shard.paddedLength); // (W * shard)
    be.fill(pad, 0);
    be.copy(be.view(pad, 0, s.length), full);
    await c.reduceScatterSum(out, pad);
  }

  async #gather(shard: DeviceBuffer, full: DeviceBuffer): Promise<void> {
    const be = this.backend;
    const temp = !this.#staging && this.#stagingLength > 0;
    if (temp) this.#staging = be.alloc(this.#stagingLength, "f32");
    try {
      for (const s of this.segments) {
        await this.#gatherSegment(s, shard, be.view(full, s.offset, s.length));
      }
    } finally {
      if (temp) {
        be.free(this.#staging!);
        this.#staging = null;
      }
    }
  }
}

/**
 * Sum host numbers over all ranks in float64 (every rank gets the sums): each value goes
 * out as an fp32 (hi, lo) pair, the pairs are all-gathered and added in rank order, so
 * the result is the same on every rank and nearly as exact as a float64 sum.
 */
export async function allSumF64(
  backend: Backend,
  values: number[],
  scratch?: { pair: DeviceBuffer; pairs: DeviceBuffer },
): Promise<number[]> {
  const c = backend.collectives;
  const W = c.worldSize;
  const n = values.length;
  const own = scratch && n === 1 ? scratch.pair : backend.alloc(2 * n, "f32"); // (n, 2)
  const all = scratch && n === 1 ? scratch.pairs : backend.alloc(2 * n * W, "f32"); // (W, n, 2)
  try {
    const host = new Float32Array(2 * n);
    for (let i = 0; i < n; i++) {
      host[2 * i] = values[i];
      host[2 * i + 1] = values[i] - host[2 * i];
    }
    backend.upload(own, host);
    await c.allGather(all, own);
    const got = backend.download(all) as Float32Array;
    const out = new Array<number>(n).fill(0);
    for (let r = 0; r < W; r++) {
      for (let i = 0; i < n; i++) out[i] += got[(r * n + i) * 2] + got[(r * n + i) * 2 + 1];
    }
    return out;
  } finally {
    if (own !== scratch?.pair) backend.free(own);
    if (all !== scratch?.pairs) backend.free(all);
  }
}

/**
 * ZeRO-3 for a frozen store (a LoRA model's base weights built with `shardFrozenBase`): this
 * rank keeps only its slice of every group's values (in the store's dtype), and each group
 * is all-gathered into the store's group slot before it runs. There is nothing to reduce.
 */
export class ShardedFrozen {
  readonly rank: number;
  readonly worldSize: number;
  readonly segments: readonly Segment[];
  readonly shardLength: number;
  /** (shardLength) this rank's slices of the values, in the store's dtype. */
  readonly params: DeviceBuffer;

  /** @param store a frozen store built with group windows padded to the world size. */
  constructor(readonly backend: Backend, readonly store: ParamStore) {
    if (!store.windows) throw new Error("ShardedFrozen needs a store with group windows");
    const c = backend.collectives;
    this.rank = c.rank;
    this.worldSize = c.worldSize;
    const segs: Segment[] = [];
    let shardAt = 0;
    for (const g of store.layout.groups) {
      const shard = flatShard(g.length, { rank: this.rank, worldSize: this.worldSize });
      if (store.groupParams(g.name).length !== shard.paddedLength) {
        throw new Error(
          `group ${g.name}: build the model with groupWindows = world size (${this.worldSize})`,
        );
      }
      segs.push({ name: g.name, offset: g.offset, length: g.length, shard, shardOffset: shardAt });
      shardAt += shard.shardLength;
    }
    this.segments = segs;
    this.shardLength = shardAt;
    this.params = backend.alloc(Math.max(1, shardAt), store.dtype);
  }

  /** Take this rank's slices of the store's (materialized) full values, after loading. */
  takeParams(): void {
    takeSlices(this.backend, this.segments, this.params, this.store.params);
  }

  /** GroupHooks: all-gather group `name`'s slices into its compute slot. */
  async beforeGroup(name: string, _phase: "forward" | "backward"): Promise<void> {
    if (!this.store.hasGroup(name)) return;
    const be = this.backend;
    const s = this.segments.find((x) => x.name === name)!;
    const inp = be.view(this.params, s.shardOffset, s.shard.shardLength); // (shard)
    await be.collectives.allGather(this.store.groupParams(name), inp);
  }

  /** GroupHooks: a frozen group has no gradients. */
  afterGroupBackward(_name: string): Promise<void> {
    return Promise.resolve();
  }

  /** The full values in the store (allocated for the call) while `fn` runs; every rank calls it. */
  async withFullParams<R>(fn: () => R | Promise<R>): Promise<R> {
    const be = this.backend;
    const st = this.store;
    st.materialize();
    try {
      for (const s of this.segments) {
        await this.beforeGroup(s.name, "forward");
        be.copy(
          be.view(st.params, s.offset, s.length),
          be.view(st.groupParams(s.name), 0, s.length),
        );
      }
      return await fn();
    } finally {
      st.release();
    }
  }

  /** Bytes of this rank's slices and of the store's group slots. */
  report(): {
    shardBytes: number;
    computeBytes: number;
    largestGroupBytes: number;
    fullBytes: number;
  } {
    const per = this.store.dtype === "bf16" ? 2 : 4;
    return {
      largestGroupBytes: Math.max(...this.store.layout.groups.map((g) => g.length)) * per,
      shardBytes: this.shardLength * per,
      computeBytes: this.store.paramBytes(),
      fullBytes: this.store.layout.total * per,
    };
  }

  /** Release the slices. */
  free(): void {
    this.backend.free(this.params);
  }
}

/** Copy this rank's slice of every segment of `full` (whole layout) into `shard`. */
function takeSlices(
  be: Backend,
  segments: readonly Segment[],
  shard: DeviceBuffer,
  full: DeviceBuffer,
): void {
  for (const s of segments) {
    const n = s.shard.validLength;
    if (n === 0) continue;
    be.copy(be.view(shard, s.shardOffset, n), be.view(full, s.offset + s.shard.start, n));
  }
}

/** GroupHooks that run `hooks` one after the other (e.g. the adapters' and the base's). */
export function chainHooks(...hooks: GroupHooks[]): GroupHooks {
  return {
    async beforeGroup(name, phase) {
      for (const h of hooks) await h.beforeGroup(name, phase);
    },
    async afterGroupBackward(name) {
      for (const h of hooks) await h.afterGroupBackward(name);
    },
  };
}
