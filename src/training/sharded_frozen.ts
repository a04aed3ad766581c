/**
 * ZeRO-3 for a frozen store: a LoRA model's base weights, sharded like the trainable ones
 * (sharded.ts) but with nothing to reduce; with host state (fsdp_cpu_offload) the slices
 * live in host memory in their own width.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import type { ParamStore } from "../params/store.ts";
import type { Nf4Store } from "../quant/nf4_store.ts";
import { HostStaging, HostValues } from "./host_state.ts";
import { type Segment, shardSegments, takeSlices } from "./shard_segments.ts";

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
  /** (shardLength) this rank's slices of the values, in the store's dtype; null with host
   * state, where `#host` holds them. */
  readonly params: DeviceBuffer | null;
  /** Host state: (shardLength) the slices in host memory, in the store's width; else null. */
  readonly #host: HostValues | null;
  /** Host state: the device staging the slices pass through; else null. */
  readonly #hs: HostStaging | null;

  /**
   * @param store a frozen store built with group windows padded to the world size.
   * @param nf4 a QLoRA model's NF4 weights, sharded by their store (src/quant/nf4_store.ts):
   *   gathered with the rest of their group (they stay on the device with host state).
   * @param opts.hostState keep the slices in host memory (fsdp_cpu_offload).
   */
  constructor(
    readonly backend: Backend,
    readonly store: ParamStore,
    readonly nf4: Nf4Store | null = null,
    opts: { hostState?: boolean } = {},
  ) {
    if (!store.windows) throw new Error("ShardedFrozen needs a store with group windows");
    if (nf4 && !nf4.sharded) throw new Error("ShardedFrozen needs a sharded NF4 store");
    const c = backend.collectives;
    this.rank = c.rank;
    this.worldSize = c.worldSize;
    const { segments, shardLength } = shardSegments(store, this.rank, this.worldSize, false);
    this.segments = segments;
    this.shardLength = shardLength;
    const largest = Math.max(1, ...segments.map((s) => s.shard.shardLength));
    this.#hs = opts.hostState ? new HostStaging(backend, largest, store.dtype) : null;
    this.#host = opts.hostState ? new HostValues(shardLength, store.dtype) : null;
    this.params = opts.hostState ? null : backend.alloc(Math.max(1, shardLength), store.dtype);
  }

  /** Take this rank's slices of the store's (materialized) full values, after loading. */
  takeParams(): void {
    const be = this.backend, host = this.#host, shard = this.params;
    takeSlices(be, this.segments, this.store.params, (s, from) => {
      if (host) host.set(s.shardOffset, be.download(from) as Float32Array);
      else be.copy(be.view(shard!, s.shardOffset, s.shard.validLength), from);
    });
  }

  /** GroupHooks: all-gather group `name`'s slices (and its NF4 weights) into its compute slot. */
  async beforeGroup(name: string, _phase: "forward" | "backward"): Promise<void> {
    await this.nf4?.gatherGroup(name);
    if (!this.store.hasGroup(name)) return;
    await this.#gather(this.segments.find((x) => x.name === name)!);
  }

  /** All-gather segment `s`'s slices (this rank's from #deviceSlice) into its group's slot. */
  #gather(s: Segment): Promise<void> {
    return this.backend.collectives.allGather(this.store.groupParams(s.name), this.#deviceSlice(s));
  }

  /** GroupHooks: a frozen group has no gradients. */
  afterGroupBackward(_name: string): Promise<void> {
    return Promise.resolve();
  }

  /**
   * The full values in the store (allocated for the call) while `fn` runs, and the NF4
   * weights gathered on the host (they dequantize for a save); every rank calls it.
   */
  async withFullParams<R>(fn: () => R | Promise<R>): Promise<R> {
    const st = this.store;
    st.materialize();
    try {
      for (const s of this.segments) {
        if (!st.hasGroup(s.name)) continue;
        await this.#gather(s);
        st.copyGroup(s.name, "toFull");
      }
      return this.nf4 ? await this.nf4.withGathered(fn) : await fn();
    } finally {
      st.release();
    }
  }

  /**
   * Bytes of this rank's slices and of the store's group slots (with host state: the slices
   * in host memory, and the device's slots plus staging).
   */
  report(): {
    hostState: boolean;
    shardBytes: number;
    computeBytes: number;
    stagingBytes: number;
    largestGroupBytes: number;
    fullBytes: number;
  } {
    const per = this.store.dtype === "bf16" ? 2 : 4;
    const hs = this.#hs;
    return {
      hostState: hs !== null,
      largestGroupBytes: Math.max(...this.store.layout.groups.map((g) => g.length)) * per,
      shardBytes: this.#host?.bytes ?? this.shardLength * per,
      computeBytes: this.store.paramBytes() + (hs?.deviceBytes ?? 0),
      stagingBytes: hs?.deviceBytes ?? 0,
      fullBytes: this.store.layout.total * per,
    };
  }

  /** Release the slices. */
  free(): void {
    if (this.params) this.backend.free(this.params);
    this.#hs?.free();
  }

  /** Segment `s`'s slice of the values as a device buffer (host state: in the staging). */
  #deviceSlice(s: Segment): DeviceBuffer {
    const n = s.shard.shardLength;
    if (this.#hs) return this.#hs.upload(this.#host!.get(s.shardOffset, n));
    return this.backend.view(this.params!, s.shardOffset, n); // (shard)
  }
}
