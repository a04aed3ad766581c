/**
 * A linear layer out = inp @ W^T + b over the op interface, with an optional LoRA (or DoRA)
 * adapter. W is a dense buffer, or a frozen NF4 weight (QLoRA, src/quant/nf4_store.ts).
 * Frozen weights pass null gradients, so their products are skipped in backward.
 */
import type { Backend, DeviceBuffer, Nf4Weight } from "../backend/ops.ts";
import type { DoraBase } from "./dora.ts";
import type { Lora } from "./lora.ts";

/** Weights and gradients of a linear layer (gradients null when frozen). */
export interface LinearWeights {
  w: DeviceBuffer | null; // (out, in); null when the weight is NF4
  /** The frozen NF4 weight (out, in) of a QLoRA base, instead of `w`. */
  nf4?: Nf4Weight | null;
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
    if (this.p.nf4) be.nf4MatmulForward(out, inp, this.p.nf4, this.p.b, N);
    else be.matmulForward(out, inp, this.dense, this.p.b, N, this.inDim, this.outDim);
    if (this.lora?.enabled) {
      this.lora.forward(be, out, mustHave(hs), inp, N, seed);
      this.lora.dora?.forward(be, out, this.base, N);
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
      dout = this.lora.dora.backward(be, dout, inp, mustHave(hs), this.base, this.p.b, N);
    }
    if (this.p.nf4) {
      if (this.p.dw || this.p.db) throw new Error("an NF4 weight is frozen: no dW or db");
      if (dinp) be.nf4MatmulBackward(dinp, dout, this.p.nf4, N);
    } else if (dinp || this.p.dw || this.p.db) {
      be.matmulBackward(
        dinp,
        this.p.dw,
        this.p.db,
        dout,
        inp,
        this.dense,
        N,
        this.inDim,
        this.outDim,
      );
    }
    if (this.lora) this.lora.backward(be, dinp, dout, mustHave(hs), inp, N, seed);
  }

  /** The frozen weight as DoRA reads it: NF4 (QDoRA) or dense. */
  get base(): DoraBase {
    return this.p.nf4 ?? this.dense;
  }

  /** The dense weight (throws for an NF4 one). */
  get dense(): DeviceBuffer {
    if (!this.p.w) throw new Error("this Linear's weight is NF4, not dense");
    return this.p.w;
  }
}

function mustHave(hs: DeviceBuffer | null): DeviceBuffer {
  if (!hs) throw new Error("an adapted Linear needs its LoRA hidden buffer");
  return hs;
}
