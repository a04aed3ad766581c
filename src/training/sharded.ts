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
 *
 * Host state (torchtune's `fsdp_cpu_offload: True`, src/training/host_state.ts): the slices
 * (values, gradients, both moments) are buffers of a host CpuBackend, where the clipping and
 * the AdamW step run, and a LoRA base's slices are host arrays in their own width; the device
 * keeps only the group slots and a staging buffer of the largest group slice. `beforeGroup` uploads the group's slice into
 * the staging and all-gathers from it; `afterGroupBackward` reduce-scatters on the device as
 * without host state, downloads this rank's part and adds it on the host. The ops and their
 * order are those of the device path, so two CpuBackends give its numbers bit for bit.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import type { GroupHooks } from "../models/llama/model.ts";
import { TuneError } from "../errors.ts";
import { AdamW } from "../optim/adamw.ts";
import { AdamW8bit } from "../optim/adamw8bit.ts";
import type { TrainingOptimizer } from "../optim/create.ts";
import type { ParamStore } from "../params/store.ts";
import type { HostMoments } from "./checkpointing.ts";
import { HostStaging } from "./host_state.ts";
import { type Segment, shardSegments, takeSlices } from "./shard_segments.ts";
export { ShardedFrozen } from "./sharded_frozen.ts";

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
  /** Of those, the staging for the collectives (and with host state the slices' way through). */
  stagingBytes: number;
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
  /** Bytes of this rank's optimizer state (AdamW: m and v, fp32; 8-bit AdamW: its state). */
  optimizerBytes: number;
  /** Bytes the moments take in one process (m and v over the full buffer). */
  fullOptimizerBytes: number;
  /** Host state (fsdp_cpu_offload): the slices and moments live in host memory, and the
   * resident and compute bytes above are the device's (the staging included). */
  hostState: boolean;
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
  /** Where the slices live and the optimizer runs: `backend`, or a CpuBackend with host state. */
  readonly host: Backend;
  /** (shardLength) fp32 master values of this rank's slices (a `host` buffer). */
  readonly params: DeviceBuffer;
  /** (shardLength) reduced gradients of this rank's slices (a `host` buffer). */
  readonly grads: DeviceBuffer;
  /** (shardLength) AdamW first moment; null for 8-bit AdamW (its state is on the host). */
  readonly m: DeviceBuffer | null;
  /** (shardLength) AdamW second moment; null for 8-bit AdamW. */
  readonly v: DeviceBuffer | null;
  /** Host state: the host backend and the device staging the slices pass through; else null. */
  readonly #hs: HostStaging | null;
  /** Host state: (largest group slice) host buffer a downloaded gradient part is added from. */
  readonly #hostPart: DeviceBuffer | null;
  /** optimizer_in_bwd: the step's learning rate and the groups stepped so far. */
  #inBwd: { lr: number; stepped: Set<string> } | null = null;
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
   * @param optimizer the optimizer that holds the hyper-parameters and the step count (it is
   *   bound to `store` but never steps it: this class applies AdamW to the slices; 8-bit
   *   AdamW keeps the state of this rank's slices and steps them, `AdamW8bit.shard`).
   * @param opts.hostState keep the slices and moments in host memory and step them on the
   *   host (fsdp_cpu_offload); with a CpuBackend `backend` too (the tests' two CpuBackends).
   */
  constructor(
    readonly backend: Backend,
    readonly store: ParamStore,
    readonly optimizer: TrainingOptimizer,
    opts: { hostState?: boolean } = {},
  ) {
    if (!store.trainable) throw new Error("ShardedOptimizer needs a trainable store");
    if (optimizer instanceof AdamW && optimizer.paged) {
      throw new TuneError(
        "bitsandbytes.optim.PagedAdamW runs in the single-device recipes on CUDA; in the sharded ones each rank already keeps only its slice of the moments: use torch.optim.AdamW, or bitsandbytes.optim.PagedAdamW8bit for 8-bit state in host memory",
      );
    }
    const eight = optimizer instanceof AdamW8bit;
    if (opts.hostState && eight) {
      // AdamW8bit steps its slices through the compute backend's buffers (src/optim)
      throw new TuneError(
        "fsdp_cpu_offload=True runs torch.optim.AdamW on the host; bitsandbytes.optim.AdamW8bit already keeps its state in host memory: set fsdp_cpu_offload=False, or use torch.optim.AdamW",
      );
    }
    const c = backend.collectives;
    this.rank = c.rank;
    this.worldSize = c.worldSize;
    const { segments: segs, shardLength: shardAt } = shardSegments(
      store,
      this.rank,
      this.worldSize,
    );
    this.segments = segs;
    this.shardLength = shardAt;
    const largest = Math.max(1, ...segs.map((s) => s.shard.shardLength));
    this.#hs = opts.hostState ? new HostStaging(backend, largest, "f32") : null;
    const host = this.host = this.#hs?.host ?? backend;
    this.params = host.alloc(shardAt, "f32");
    this.grads = host.alloc(shardAt, "f32");
    this.m = eight ? null : host.alloc(shardAt, "f32");
    this.v = eight ? null : host.alloc(shardAt, "f32");
    this.#hostPart = opts.hostState ? host.alloc(largest, "f32") : null;
    if (eight) {
      optimizer.shard(
        segs.map((s) => ({
          group: s.name,
          offset: s.offset,
          length: s.length,
          shardLength: s.shard.shardLength,
          start: s.shard.start,
          valid: s.shard.validLength,
          shardOffset: s.shardOffset,
        })),
        this.worldSize,
      );
    }
    const staging = Math.max(
      0,
      ...segs.filter((s) => s.shard.paddedLength !== s.length).map((s) => s.shard.paddedLength),
    );
    this.#stagingLength = staging;
    this.#staging = staging > 0 && !store.windows ? backend.alloc(staging, "f32") : null;
    this.#pair = backend.alloc(2, "f32");
    this.#pairs = backend.alloc(2 * this.worldSize, "f32");
  }

  /** Take this rank's slices of the store's current values as the master copy (after load). */
  takeParams(): void {
    const be = this.backend, hs = this.#hs, shard = this.params;
    takeSlices(be, this.segments, this.store.params, (s, from) => {
      if (hs) hs.fromDevice(shard, s.shardOffset, from);
      else be.copy(be.view(shard, s.shardOffset, s.shard.validLength), from);
    });
  }

  /** Per group: this rank's slice of grads = sum over ranks of the store's grads. */
  async reduceScatterGrads(): Promise<void> {
    if (this.store.windows) return; // ZeRO-3: done group by group in afterGroupBackward
    const be = this.backend;
    for (const s of this.segments) {
      const n = s.shard.shardLength, hs = this.#hs;
      // host state: reduced into the staging, then taken to the host slice
      const out = hs ? hs.deviceScratch(n) : be.view(this.grads, s.shardOffset, n); // (shard)
      await this.#reduceSegment(s, out, be.view(this.store.grads!, s.offset, s.length));
      hs?.fromDevice(this.grads, s.shardOffset, out);
    }
  }

  /** L2 norm of the whole reduced gradient (every rank gets the same value). */
  async gradNorm(): Promise<number> {
    const [sq] = await allSumF64(this.backend, [this.host.sumSquares(this.grads)], {
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
      if (coef < 1) this.host.scale(this.grads, coef);
    }
    return norm;
  }

  /**
   * One update of this rank's slices with learning rate `lr`: AdamW (no communication), or
   * 8-bit AdamW (its ranks exchange the maxima of the blocks their slices share).
   */
  async step(lr: number): Promise<void> {
    this.optimizer.stepCount++;
    await this.#stepSlices(lr, null);
  }

  /** Step `stepCount` of every slice, or of segment `s`'s only. */
  async #stepSlices(lr: number, s: Segment | null): Promise<void> {
    const opt = this.optimizer;
    if (opt instanceof AdamW8bit) {
      await opt.stepSlices(this.params, this.grads, lr, s?.name);
      return;
    }
    const be = this.host, o = opt.options;
    const at = (b: DeviceBuffer) => s ? be.view(b, s.shardOffset, s.shard.shardLength) : b; // (slice)
    be.adamw(at(this.params), at(this.grads), at(this.m!), at(this.v!), {
      lr,
      beta1: o.betas[0],
      beta2: o.betas[1],
      eps: o.eps,
      weightDecay: o.weightDecay,
      step: opt.stepCount,
    });
  }

  /**
   * optimizer_in_bwd: before the step's backward. Each group's slice then steps (learning
   * rate `lr`) as soon as its gradients are reduce-scattered, in `afterGroupBackward`.
   */
  beginInBackward(lr: number): void {
    if (this.#inBwd) throw new Error("optimizer_in_bwd: beginInBackward() twice");
    this.optimizer.stepCount++;
    this.#inBwd = { lr, stepped: new Set() };
  }

  /** optimizer_in_bwd: after the backward; every group must have stepped. */
  finishInBackward(): void {
    const st = this.#inBwd;
    const missing = this.segments.filter((s) => s.name !== "tail" && !st?.stepped.has(s.name));
    if (!st || missing.length) {
      throw new Error(
        `optimizer_in_bwd: no backward reached group(s) ${missing.map((s) => s.name).join(", ")}`,
      );
    }
    this.#inBwd = null;
  }

  /** Per group: all-gather every rank's updated slice into the store's values. */
  async gatherParams(): Promise<void> {
    if (this.store.windows) return; // ZeRO-3: each group is gathered just before it runs
    await this.#gather(this.params, this.store.params);
  }

  // ---- ZeRO-3 (a store with group windows) ------------------------------------------

  /** Zero this rank's gradient slices (start of an optimizer step). */
  zeroGrads(): void {
    this.host.fill(this.grads, 0);
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
    await be.collectives.allGather(this.store.groupParams(name), this.#deviceSlice(this.params, s));
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
    const h = this.host;
    const acc = h.view(this.grads, s.shardOffset, s.shard.shardLength); // (shard)
    if (this.#hs) {
      // host state: this rank's part to the host, added there
      this.#hs.fromDevice(this.#hostPart!, 0, out);
      h.add(acc, acc, h.view(this.#hostPart!, 0, s.shard.shardLength));
    } else {
      be.add(acc, acc, out);
    }
    const inBwd = this.#inBwd;
    if (!inBwd) return;
    // optimizer_in_bwd: this group's gradients are complete; step its slice now
    if (inBwd.stepped.has(name)) {
      throw new Error(`optimizer_in_bwd: group ${name} finished its backward twice in one step`);
    }
    await this.#stepSlices(inBwd.lr, s);
    inBwd.stepped.add(name);
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

  /**
   * The optimizer state over the whole layout on the host (for the recipe state): both
   * moments, or 8-bit AdamW's tensors in the one-process format.
   */
  async gatherMoments(): Promise<HostMoments> {
    const be = this.backend;
    const full = be.alloc(this.store.layout.total, "f32"); // (total)
    const gathered = async (shard: DeviceBuffer) => {
      await this.#gather(shard, full);
      return be.download(full) as Float32Array;
    };
    try {
      const opt = this.optimizer;
      if (!(opt instanceof AdamW8bit)) {
        return { m: await gathered(this.m!), v: await gathered(this.v!) };
      }
      const host = opt.sliceState(this.shardLength);
      const shard = be.alloc(Math.max(1, this.shardLength), "f32"); // (shardLength)
      try {
        const put = async (a: Float32Array) => {
          be.upload(shard, a);
          return await gathered(shard);
        };
        const m = await put(host.m), v = await put(host.v);
        const ma = await put(host.ma), va = await put(host.va);
        return { adamw8bit: opt.stateFromGathered({ m, v, ma, va }) };
      } finally {
        be.free(shard);
      }
    } finally {
      be.free(full);
    }
  }

  /** Take this rank's slices of saved whole-layout AdamW moments (resume). */
  loadMoments(h: { m: Float32Array; v: Float32Array }): void {
    if (!this.m || !this.v) throw new Error("8-bit AdamW restores its state with importState");
    const total = this.store.layout.total;
    if (h.m.length !== total || h.v.length !== total) {
      throw new Error(`moments of ${h.m.length} elements for a layout of ${total}`);
    }
    const be = this.host;
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
    const extra = (this.#staging?.length ?? 0) * 4 + (this.#hs?.deviceBytes ?? 0);
    const compute = st.paramBytes() + st.gradBytes() + extra;
    return {
      zero3: st.windows !== null,
      // host state: the slices are host memory, the device holds the compute buffers only
      residentParamGradBytes: (this.#hs ? 0 : shardBytes) + compute,
      shardParamGradBytes: shardBytes,
      computeParamGradBytes: compute,
      stagingBytes: extra,
      largestGroupBytes: Math.max(...st.layout.groups.map((g) => g.length)) * 8,
      fullParamGradBytes: st.layout.total * 8,
      rank: this.rank,
      worldSize: this.worldSize,
      fullElements: this.store.layout.total,
      shardElements: this.shardLength,
      ...this.#optimizerBytes(),
      hostState: this.#hs !== null,
    };
  }

  /** Release the shard buffers. */
  free(): void {
    for (const b of [this.params, this.grads, this.m, this.v, this.#hostPart]) {
      if (b) this.host.free(b);
    }
    for (const b of [this.#pair, this.#pairs, this.#staging]) {
      if (b) this.backend.free(b);
    }
    this.#hs?.free();
  }

  /** Bytes of this rank's optimizer state and of one process's. */
  #optimizerBytes(): { optimizerBytes: number; fullOptimizerBytes: number } {
    const opt = this.optimizer;
    if (opt instanceof AdamW8bit) {
      return { optimizerBytes: opt.stateBytes(), fullOptimizerBytes: opt.fullStateBytes() };
    }
    return {
      optimizerBytes: this.shardLength * 8,
      fullOptimizerBytes: this.store.layout.total * 8,
    };
  }

  #segment(name: string): Segment {
    const s = this.segments.find((x) => x.name === name);
    if (!s) throw new Error(`no layout group ${name} to shard`);
    return s;
  }

  /**
   * Segment `s`'s slice of `shard` (a slice buffer) as a device buffer, for a collective:
   * a view of it, or with host state its copy in the staging (valid until the next call).
   */
  #deviceSlice(shard: DeviceBuffer, s: Segment): DeviceBuffer {
    const n = s.shard.shardLength;
    if (this.#hs && this.#isHost(shard)) return this.#hs.toDevice(shard, s.shardOffset, n);
    return this.backend.view(shard, s.shardOffset, n); // (shard)
  }

  /** Whether `b` is one of the host slice buffers (8-bit AdamW's gathered state is not). */
  #isHost(b: DeviceBuffer): boolean {
    return b === this.params || b === this.grads || b === this.m || b === this.v;
  }

  /** All-gather one segment's slices of `shard` into `out` (group length). */
  async #gatherSegment(s: Segment, shard: DeviceBuffer, out: DeviceBuffer): Promise<void> {
    const be = this.backend;
    const c = be.collectives;
    const inp = this.#deviceSlice(shard, s); // (shard)
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
