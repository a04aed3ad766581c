/**
 * One pre-norm decoder layer (torchtune's TransformerSelfAttentionLayer):
 *   h1 = x + attn(sa_norm(x));  y = h1 + mlp(mlp_norm(h1)).
 * Forward is a straight list of op calls; backward is the same list reversed.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import type { BackwardScratch, LayerActs } from "./activations.ts";
import type { Attention, KvCache } from "./attention.ts";
import type { FeedForward } from "./feed_forward.ts";
import type { RmsNorm } from "./rms_norm.ts";

/** A decoder layer: two norms, attention and feed-forward. */
export class DecoderLayer {
  constructor(
    readonly saNorm: RmsNorm,
    readonly attn: Attention,
    readonly mlpNorm: RmsNorm,
    readonly mlp: FeedForward,
  ) {}

  /** y(N, C) = layer(x(N, C)); everything backward needs is saved in `acts`. */
  forward(
    be: Backend,
    y: DeviceBuffer,
    x: DeviceBuffer,
    acts: LayerActs,
    B: number,
    T: number,
    seed: number | null,
    cache: KvCache | null = null,
    pos = 0,
  ): void {
    const N = B * T;
    this.saNorm.forward(be, acts.ln1, acts.rstd1, x, N); // (N, C)
    this.attn.forward(be, acts.h1, acts.ln1, acts, B, T, seed, cache, pos); // (N, C)
    be.add(acts.h1, acts.h1, x); // (N, C) residual
    this.mlpNorm.forward(be, acts.ln2, acts.rstd2, acts.h1, N); // (N, C)
    this.mlp.forward(be, y, acts.ln2, acts, N, seed); // (N, C)
    be.add(y, y, acts.h1); // (N, C) residual
  }

  /**
   * Backward: on entry dres(N, C) holds dL/dy, on exit dL/dx (updated in place).
   * Parameter gradients accumulate.
   */
  backward(
    be: Backend,
    dres: DeviceBuffer,
    x: DeviceBuffer,
    acts: LayerActs,
    sc: BackwardScratch,
    B: number,
    T: number,
    seed: number | null,
  ): void {
    const N = B * T;
    be.fill(sc.dln, 0);
    this.mlp.backward(be, sc.dln, dres, acts.ln2, acts, sc, N, seed);
    this.mlpNorm.backward(be, dres, sc.dln, acts.h1, acts.rstd2, N); // dres = dL/dh1
    be.fill(sc.dln, 0);
    this.attn.backward(be, sc.dln, dres, acts.ln1, acts, sc, B, T, seed);
    this.saNorm.backward(be, dres, sc.dln, x, acts.rstd1, N); // dres = dL/dx
  }
}
