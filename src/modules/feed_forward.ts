/**
 * Gated feed-forward (torchtune's FeedForward): w2(act(w1 x) * w3 x), forward and backward.
 * act is silu (SwiGLU, Llama) or gelu with the tanh approximation (GeGLU, Gemma).
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import { mixSeed } from "../params/random.ts";
import type { BackwardScratch, LayerActs } from "./activations.ts";
import type { Linear } from "./linear.ts";

/** The MLP activation on the gate: "silu" (SwiGLU) or "gelu_tanh" (Gemma's GeGLU). */
export type HiddenAct = "silu" | "gelu_tanh";

const SEED = { w1: 4, w2: 5, w3: 6 };

/** The gated MLP of a decoder layer. */
export class FeedForward {
  constructor(
    readonly hidden: number,
    readonly w1: Linear, // gate (H, C)
    readonly w2: Linear, // down (C, H)
    readonly w3: Linear, // up   (H, C)
    readonly act: HiddenAct = "silu",
  ) {}

  /** out(N, C) = w2(act(w1 x) * w3 x) for x(N, C); gate/up/act saved in `acts`. */
  forward(
    be: Backend,
    out: DeviceBuffer,
    x: DeviceBuffer,
    acts: LayerActs,
    N: number,
    seed: number | null,
  ): void {
    const s = (i: number) => (seed === null ? null : mixSeed(seed, i));
    this.w1.forward(be, acts.gate, x, N, acts.hs.w1 ?? null, s(SEED.w1)); // (N, H)
    this.w3.forward(be, acts.up, x, N, acts.hs.w3 ?? null, s(SEED.w3)); // (N, H)
    if (this.act === "gelu_tanh") be.gegluForward(acts.act, acts.gate, acts.up, N * this.hidden); // (N, H)
    else be.swigluForward(acts.act, acts.gate, acts.up, N * this.hidden); // (N, H)
    this.w2.forward(be, out, acts.act, N, acts.hs.w2 ?? null, s(SEED.w2)); // (N, C)
  }

  /**
   * dx(N, C) ACCUMULATES the gradient from dout(N, C). Overwrites acts.gate/up with their
   * gradients (the forward values are not needed afterwards).
   */
  backward(
    be: Backend,
    dx: DeviceBuffer,
    dout: DeviceBuffer,
    x: DeviceBuffer,
    acts: LayerActs,
    sc: BackwardScratch,
    N: number,
    seed: number | null,
  ): void {
    const s = (i: number) => (seed === null ? null : mixSeed(seed, i));
    be.fill(sc.dact, 0);
    this.w2.backward(be, sc.dact, dout, acts.act, N, acts.hs.w2 ?? null, s(SEED.w2));
    const dgate = acts.gate;
    const dup = acts.up;
    if (this.act === "gelu_tanh") {
      be.gegluBackward(dgate, dup, sc.dact, acts.gate, acts.up, N * this.hidden);
    } else be.swigluBackward(dgate, dup, sc.dact, acts.gate, acts.up, N * this.hidden);
    this.w1.backward(be, dx, dgate, x, N, acts.hs.w1 ?? null, s(SEED.w1));
    this.w3.backward(be, dx, dup, x, N, acts.hs.w3 ?? null, s(SEED.w3));
  }
}
