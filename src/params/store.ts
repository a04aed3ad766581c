/**
 * A flat parameter store on a device: one buffer for the values, and for trainable stores
 * one each for gradients and the AdamW moments, all sharing one ParamLayout.
 */
import type { Backend, DeviceBuffer, DType } from "../backend/ops.ts";
import type { HostTensor, StateDict } from "../checkpoint/state_dict.ts";
import { checkShape, type ParamLayout } from "./layout.ts";

/** Parameters, and for trainable stores their gradients and AdamW moments. */
export class ParamStore {
  /** (total) values. */
  readonly params: DeviceBuffer;
  /** (total) gradients; null for a frozen store. */
  readonly grads: DeviceBuffer | null;
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
  ) {
    if (trainable && dtype !== "f32") throw new Error("trainable parameters are kept in fp32");
    const n = layout.total;
    this.params = backend.alloc(n, dtype as DType);
    this.grads = trainable ? backend.alloc(n, "f32") : null;
    this.m = trainable && moments ? backend.alloc(n, "f32") : null;
    this.v = trainable && moments ? backend.alloc(n, "f32") : null;
  }

  /** The device view of tensor `name`. */
  param(name: string): DeviceBuffer {
    let v = this.#paramViews.get(name);
    if (!v) {
      const e = this.layout.get(name);
      v = this.backend.view(this.params, e.offset, e.length);
      this.#paramViews.set(name, v);
    }
    return v;
  }

  /** The gradient view of tensor `name`, or null for a frozen store. */
  grad(name: string): DeviceBuffer | null {
    if (!this.grads) return null;
    let v = this.#gradViews.get(name);
    if (!v) {
      const e = this.layout.get(name);
      v = this.backend.view(this.grads, e.offset, e.length);
      this.#gradViews.set(name, v);
    }
    return v;
  }

  /** Set every gradient to zero. */
  zeroGrad(): void {
    if (this.grads) this.backend.fill(this.grads, 0);
  }

  /** Upload one host tensor into `name`, checking its shape (TuneError on mismatch). */
  setTensor(name: string, t: HostTensor): void {
    const e = this.layout.get(name);
    checkShape(name, e.shape, t.shape);
    this.backend.upload(this.params, t.data, e.offset);
  }

  /** Download tensor `name` to the host. */
  getTensor(name: string): HostTensor {
    const e = this.layout.get(name);
    return { shape: [...e.shape], data: this.backend.download(this.param(name)) as Float32Array };
  }

  /** Download the gradient of `name` (throws for a frozen store). */
  getGrad(name: string): Float32Array {
    const g = this.grad(name);
    if (!g) throw new Error(`store is frozen: no gradient for ${name}`);
    return this.backend.download(g) as Float32Array;
  }

  /** Every tensor as a host StateDict, in layout order. */
  toStateDict(): StateDict {
    const all = this.backend.download(this.params) as Float32Array;
    const sd: StateDict = new Map();
    for (const e of this.layout.entries) {
      sd.set(e.name, { shape: [...e.shape], data: all.slice(e.offset, e.offset + e.length) });
    }
    return sd;
  }

  /** Bytes of the parameter values (2 or 4 per element). */
  paramBytes(): number {
    return this.layout.total * (this.dtype === "bf16" ? 2 : 4);
  }

  /** Bytes of all buffers this store holds (values, and gradients and moments if trainable). */
  bytes(): number {
    const n = this.layout.total;
    return this.paramBytes() + (this.grads ? n * 4 : 0) + (this.m ? n * 8 : 0);
  }

  /** Release all buffers. */
  free(): void {
    for (const b of [this.params, this.grads, this.m, this.v]) if (b) this.backend.free(b);
  }
}
