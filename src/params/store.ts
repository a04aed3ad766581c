/**
 * A flat parameter store on a device: one buffer for the values, and for trainable stores
 * one each for gradients and the AdamW moments, all sharing one ParamLayout.
 */
import type { Backend, DeviceBuffer, DType } from "../backend/ops.ts";
import { CpuBuffer } from "../backend/cpu/buffer.ts";
import {
  fillTensor,
  type HostTensor,
  lazyTensor,
  reusableF32,
  type StateDict,
} from "./state_dict.ts";
import { checkShape, type ParamGroup, type ParamLayout } from "./layout.ts";

/**
 * Group windows (FSDP/ZeRO-3): a store built with them holds no full-size value or gradient
 * buffer. Each layout group computes in a reusable group-sized buffer, its slot (one for
 * values, one for gradients); a sharded optimizer all-gathers a group's values into its slot
 * before the group runs and reduce-scatters the slot's gradients after its backward. Groups
 * needed at the same time (a tied embedding and the head) must have different slots.
 */
export interface StoreWindows {
  /** Slot index (0, 1, ...) of group `name`. */
  slotOf(group: string): number;
  /**
   * Round each group's compute length up to a multiple of this (default 1): the world size,
   * so a group's slot holds its padded length and the collectives run in place in it.
   */
  multipleOf?: number;
}

/** Parameters, and for trainable stores their gradients and AdamW moments. */
export class ParamStore {
  /** Group windows, or null for an ordinary (full-size) store. */
  readonly windows: StoreWindows | null;
  /** (total) full values: always for an ordinary store, between materialize()/release() with windows. */
  #params: DeviceBuffer | null;
  /** (total) gradients; null for a frozen store and for a store with windows. */
  readonly grads: DeviceBuffer | null;
  readonly #slotParams: DeviceBuffer[] = []; // (largest group of the slot) each
  readonly #slotGrads: DeviceBuffer[] = []; // (largest group of the slot) each, if trainable
  readonly #groups = new Map<string, ParamGroup>();
  /** (total) AdamW first moment; null for a frozen store or one built without moments. */
  readonly m: DeviceBuffer | null;
  /** (total) AdamW second moment; null for a frozen store or one built without moments. */
  readonly v: DeviceBuffer | null;
  readonly #paramViews = new Map<string, DeviceBuffer>();
  readonly #gradViews = new Map<string, DeviceBuffer>();

  /**
   * Allocate (zero-filled) buffers for `layout`; gradients and moments only if trainable.
   * A frozen store may keep its values in bf16 (`dtype`); trainable values are fp32 masters.
   * `moments: false` leaves out the AdamW moments of a trainable store (m and v null), for
   * a sharded optimizer that keeps only its rank's slice of them.
   */
  constructor(
    readonly backend: Backend,
    readonly layout: ParamLayout,
    readonly trainable: boolean,
    readonly dtype: "f32" | "bf16" = "f32",
    moments = true,
    windows: StoreWindows | null = null,
  ) {
    if (trainable && dtype !== "f32") throw new Error("trainable parameters are kept in fp32");
    const n = layout.total;
    this.windows = windows;
    for (const g of layout.groups) this.#groups.set(g.name, g);
    if (windows) {
      const sizes: number[] = [];
      for (const g of layout.groups) {
        const s = windows.slotOf(g.name);
        sizes[s] = Math.max(sizes[s] ?? 0, this.#computeLength(g));
      }
      for (let s = 0; s < sizes.length; s++) {
        this.#slotParams.push(backend.alloc(Math.max(1, sizes[s] ?? 0), dtype as DType));
        if (trainable) this.#slotGrads.push(backend.alloc(Math.max(1, sizes[s] ?? 0), "f32"));
      }
    }
    this.#params = windows ? null : backend.alloc(n, dtype as DType);
    this.grads = trainable && !windows ? backend.alloc(n, "f32") : null;
    this.m = trainable && moments ? backend.alloc(n, "f32") : null;
    this.v = trainable && moments ? backend.alloc(n, "f32") : null;
  }

  /**
   * (total) values. With windows they exist only between `materialize()` and `release()`
   * (loading, saving); the model computes on the group slots.
   */
  get params(): DeviceBuffer {
    if (!this.#params) {
      throw new Error("store with group windows: call materialize() before using the full values");
    }
    return this.#params;
  }

  /** With windows: allocate the full (total) value buffer, zero-filled (for load or save). */
  materialize(): void {
    if (this.windows && !this.#params) {
      this.#params = this.backend.alloc(this.layout.total, this.dtype as DType);
    }
  }

  /** With windows: free the full value buffer again. */
  release(): void {
    if (this.windows && this.#params) {
      this.backend.free(this.#params);
      this.#params = null;
    }
  }

  /**
   * With windows: the compute view of group `name`'s values in its slot: the group's
   * elements, then zero padding up to a multiple of `windows.multipleOf`.
   */
  groupParams(name: string): DeviceBuffer {
    const g = this.#groupOf(name);
    const slot = this.#slotParams[this.windows!.slotOf(name)];
    return this.backend.view(slot, 0, this.#computeLength(g));
  }

  /**
   * With windows and the full values materialized: copy group `name`'s values from the full
   * buffer into its slot (`"toSlot"`), or from the slot back into the full buffer.
   */
  copyGroup(name: string, direction: "toSlot" | "toFull"): void {
    const g = this.#groupOf(name), be = this.backend;
    const slot = be.view(this.groupParams(name), 0, g.length); // (group)
    const full = be.view(this.params, g.offset, g.length); // (group)
    if (direction === "toSlot") be.copy(slot, full);
    else be.copy(full, slot);
  }

  /** With windows: the compute view of group `name`'s gradients (padded like `groupParams`). */
  groupGrads(name: string): DeviceBuffer {
    const g = this.#groupOf(name);
    const slot = this.#slotGrads[this.windows!.slotOf(name)];
    return this.backend.view(slot, 0, this.#computeLength(g));
  }

  /** Whether the layout has a group called `name`. */
  hasGroup(name: string): boolean {
    return this.#groups.has(name);
  }

  /** The device view of tensor `name` (with windows: inside its group's slot). */
  param(name: string): DeviceBuffer {
    return this.#tensorView(name, this.#paramViews, () => this.params, this.#slotParams);
  }

  /** The gradient view of tensor `name`, or null for a frozen store. */
  grad(name: string): DeviceBuffer | null {
    if (!this.trainable) return null;
    return this.#tensorView(name, this.#gradViews, () => this.grads!, this.#slotGrads);
  }

  /**
   * The view of tensor `name` in `whole()` (the flat buffer) or, with windows, in its group's
   * slot among `slots`; made once and kept in `cache`.
   */
  #tensorView(
    name: string,
    cache: Map<string, DeviceBuffer>,
    whole: () => DeviceBuffer,
    slots: readonly DeviceBuffer[],
  ): DeviceBuffer {
    let v = cache.get(name);
    if (!v) {
      const e = this.layout.get(name);
      v = this.windows
        ? this.backend.view(
          slots[this.windows.slotOf(e.group)],
          e.offset - this.#groupOf(e.group).offset,
          e.length,
        )
        : this.backend.view(whole(), e.offset, e.length);
      cache.set(name, v);
    }
    return v;
  }

  /** Set every gradient to zero. */
  zeroGrad(): void {
    if (this.grads) this.backend.fill(this.grads, 0);
    for (const g of this.#slotGrads) this.backend.fill(g, 0);
  }

  /**
   * Upload one host tensor into `name`, checking its shape (TuneError on mismatch). A lazy
   * tensor on an fp32 CPU store writes its values straight into the store's memory.
   */
  setTensor(name: string, t: HostTensor): void {
    const e = this.layout.get(name);
    checkShape(name, e.shape, t.shape);
    const host = this.#hostValues(e.offset, e.length);
    if (host) fillTensor(t, host);
    else if (!t.lazy) this.backend.upload(this.params, t.data, e.offset);
    else {
      const data = reusableF32("upload", e.length);
      t.lazy.fill(data);
      this.backend.upload(this.params, data, e.offset);
    }
  }

  /**
   * Fill tensor `name` in place: `fill` gets its elements to write (the store's own memory
   * on an fp32 CPU store, else a host array that is uploaded after).
   */
  fillWith(name: string, fill: (dst: Float32Array) => void): void {
    const e = this.layout.get(name);
    const host = this.#hostValues(e.offset, e.length);
    if (host) fill(host);
    else {
      const data = new Float32Array(e.length);
      fill(data);
      this.backend.upload(this.params, data, e.offset);
    }
  }

  /**
   * Tensor `name` as a lazy host tensor (see state_dict.ts): its values are read when used
   * (copied from the store's memory on an fp32 CPU store; else one download).
   */
  lazyTensor(name: string): HostTensor {
    const e = this.layout.get(name);
    return lazyTensor([...e.shape], (dst) => {
      dst.set(this.#hostValues(e.offset, e.length) ?? this.getTensor(name).data);
    });
  }

  /** The live fp32 host memory of elements [offset, offset + length) of the full values, if any. */
  #hostValues(offset: number, length: number): Float32Array | null {
    const p = this.params;
    if (!(p instanceof CpuBuffer) || p.dtype !== "f32") return null;
    return (p.data as Float32Array).subarray(offset, offset + length);
  }

  /** Download tensor `name` to the host. */
  getTensor(name: string): HostTensor {
    const e = this.layout.get(name);
    const view = this.windows
      ? this.backend.view(this.params, e.offset, e.length)
      : this.param(name);
    return { shape: [...e.shape], data: this.backend.download(view) as Float32Array };
  }

  /** Download the gradient of `name` (throws for a frozen store). */
  getGrad(name: string): Float32Array {
    const g = this.grad(name);
    if (!g) throw new Error(`store is frozen: no gradient for ${name}`);
    return this.backend.download(g) as Float32Array;
  }

  /** Every tensor as a host StateDict (copies, downloaded one tensor at a time), in layout order. */
  toStateDict(): StateDict {
    const sd: StateDict = new Map();
    for (const e of this.layout.entries) sd.set(e.name, this.getTensor(e.name));
    return sd;
  }

  /** Bytes of the parameter values (2 or 4 per element). */
  paramBytes(): number {
    const per = this.dtype === "bf16" ? 2 : 4;
    if (this.windows) return this.#slotParams.reduce((n, b) => n + b.length, 0) * per;
    return this.layout.total * per;
  }

  /** Bytes of the gradient buffers (with windows: the group slots). */
  gradBytes(): number {
    if (this.windows) return this.#slotGrads.reduce((n, b) => n + b.length, 0) * 4;
    return this.grads ? this.layout.total * 4 : 0;
  }

  /** Bytes of all buffers this store holds (values, and gradients and moments if trainable). */
  bytes(): number {
    const n = this.layout.total;
    return this.paramBytes() + this.gradBytes() + (this.m ? n * 8 : 0);
  }

  /** Release all buffers. */
  free(): void {
    for (const b of [this.#params, this.grads, this.m, this.v]) if (b) this.backend.free(b);
    for (const b of [...this.#slotParams, ...this.#slotGrads]) this.backend.free(b);
    this.#params = null;
  }

  #computeLength(g: ParamGroup): number {
    const m = this.windows?.multipleOf ?? 1;
    return Math.ceil(g.length / m) * m;
  }

  #groupOf(name: string): ParamGroup {
    const g = this.#groups.get(name);
    if (!g) throw new Error(`layout has no group ${name}`);
    return g;
  }
}
