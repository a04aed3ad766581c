/**
 * A linear layer out = inp @ W^T + b over the op interface, with an optional LoRA (or DoRA)
 * adapter.
 * Frozen weights pass null gradients, so their products are skipped in backward.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import type { Lora } from "./lora.ts";

/** Weights and gradients of a linear layer (gradients null when frozen). */
export interface LinearWeights {
  w: DeviceBuffer; // (out, in)
  b: DeviceBuffer | null; // (out)
  dw: DeviceBuffer | null; // (out, in)
  db: DeviceBuffer | null; // (out)
}

/** One linear projection, optionally adapted by LoRA. */
export class Linear {
  constructor(
    readonly inDim: number,
    readonly outDim: number,
    readonly p: LinearWeights,
    readonly lora: Lora | null = null,
  ) {}

  /**
   * out(N, out) = inp(N, in) @ W^T + b (+ LoRA). `hs` (N, r) saves the adapter's hidden
   * (required when adapted). `seed` is the dropout seed (null: no dropout).
   */
  forward(
    be: Backend,
    out: DeviceBuffer,
    inp: DeviceBuffer,
    N: number,
    hs: DeviceBuffer | null = null,
    seed: number | null = null,
  ): void {
    be.matmulForward(out, inp, this.p.w, this.p.b, N, this.inDim, this.outDim);
    if (this.lora?.enabled) {
      this.lora.forward(be, out, mustHave(hs), inp, N, seed);
      this.lora.dora?.forward(be, out, this.p.w, N);
    }
  }

  /** dinp(N, in) += dout @ W (+ LoRA path); dW, db, dA, dB accumulate when present. */
  backward(
    be: Backend,
    dinp: DeviceBuffer | null,
    dout: DeviceBuffer,
    inp: DeviceBuffer,
    N: number,
    hs: DeviceBuffer | null = null,
    seed: number | null = null,
  ): void {
    // DoRA: dmagnitude accumulates here; the rest of backward sees (magnitude / norm) * dout
    if (this.lora?.dora) {
      dout = this.lora.dora.backward(be, dout, inp, mustHave(hs), this.p.w, this.p.b, N);
    }
    if (dinp || this.p.dw || this.p.db) {
      be.matmulBackward(
        dinp,
        this.p.dw,
        this.p.db,
        dout,
        inp,
        this.p.w,
        N,
        this.inDim,
        this.outDim,
      );
    }
    if (this.lora) this.lora.backward(be, dinp, dout, mustHave(hs), inp, N, seed);
  }
}

function mustHave(hs: DeviceBuffer | null): DeviceBuffer {
  if (!hs) throw new Error("an adapted Linear needs its LoRA hidden buffer");
  return hs;
}
