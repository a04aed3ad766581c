/**
 * One pre-norm decoder layer (torchtune's TransformerSelfAttentionLayer):
 *   h1 = x + attn(sa_norm(x));  y = h1 + mlp(mlp_norm(h1)),
 * or with post-norms (Gemma 2's sa_scale and mlp_scale):
 *   h1 = x + sa_scale(attn(sa_norm(x)));  y = h1 + mlp_scale(mlp(mlp_norm(h1))).
 * Forward is a straight list of op calls; backward is the same list reversed.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import type { BackwardScratch, LayerActs, PostNormActs } from "./activations.ts";
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
    /** Norms of the attention and MLP outputs (Gemma 2), or null. */
    readonly post: { sa: RmsNorm; mlp: RmsNorm } | null = null,
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
    const pa = this.post ? postActs(acts) : null;
    this.saNorm.forward(be, acts.ln1, acts.rstd1, x, N); // (N, C)
    this.attn.forward(be, pa?.ao ?? acts.h1, acts.ln1, acts, B, T, seed, cache, pos); // (N, C)
    if (pa) this.post!.sa.forward(be, acts.h1, pa.rstdA, pa.ao, N); // (N, C)
    be.add(acts.h1, acts.h1, x); // (N, C) residual
    this.mlpNorm.forward(be, acts.ln2, acts.rstd2, acts.h1, N); // (N, C)
    this.mlp.forward(be, pa?.mo ?? y, acts.ln2, acts, N, seed); // (N, C)
    if (pa) this.post!.mlp.forward(be, y, pa.rstdM, pa.mo, N); // (N, C)
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
    const pa = this.post ? postActs(acts) : null;
    const dpost = pa ? sc.dpost! : null; // (N, C) gradient of a post-norm's input
    if (pa) {
      be.fill(dpost!, 0);
      this.post!.mlp.backward(be, dpost!, dres, pa.mo, pa.rstdM, N); // dL/dmo
    }
    be.fill(sc.dln, 0);
    this.mlp.backward(be, sc.dln, dpost ?? dres, acts.ln2, acts, sc, N, seed);
    this.mlpNorm.backward(be, dres, sc.dln, acts.h1, acts.rstd2, N); // dres = dL/dh1
    if (pa) {
      be.fill(dpost!, 0);
      this.post!.sa.backward(be, dpost!, dres, pa.ao, pa.rstdA, N); // dL/dao
    }
    be.fill(sc.dln, 0);
    this.attn.backward(be, sc.dln, dpost ?? dres, acts.ln1, acts, sc, B, T, seed);
    this.saNorm.backward(be, dres, sc.dln, x, acts.rstd1, N); // dres = dL/dx
  }
}

function postActs(acts: LayerActs): PostNormActs {
  if (!acts.post) {
    throw new Error("a layer with post-norms needs their activations (ActDims.postNorms)");
  }
  return acts.post;
}
