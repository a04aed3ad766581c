/**
 * RMSNorm (torchtune's RMSNorm: x * rsqrt(mean(x^2) + eps) * scale) over the op interface.
 * With an `offset` (Gemma's GemmaRMSNorm: offset 1) the stored scale is zero-centred and the
 * norm multiplies by fp32(offset + scale), computed into a (C) fp32 scratch right before each
 * forward and backward, exactly as torch's `output * (1.0 + self.scale.float())`. The
 * gradient of offset + scale is the gradient of scale, so dscale accumulates as usual, and the
 * parameter (and weight decay on it) stays torchtune's.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";

/** An RMSNorm over the last dimension C. */
export class RmsNorm {
  constructor(
    readonly dim: number,
    readonly eps: number,
    readonly scale: DeviceBuffer, // (C)
    readonly dscale: DeviceBuffer | null, // (C)
    readonly offset = 0,
    /** (C) fp32 scratch for offset + scale; required when offset is not 0. */
    readonly effScale: DeviceBuffer | null = null,
  ) {
    if (offset !== 0 && effScale === null) throw new Error("RmsNorm offset needs an effScale");
  }

  /** The weight the op multiplies by: scale, or offset + scale written into effScale. */
  #weight(be: Backend): DeviceBuffer {
    if (this.offset === 0) return this.scale;
    const eff = this.effScale!; // (C)
    be.fill(eff, this.offset);
    be.add(eff, eff, this.scale);
    return eff;
  }

  /** out(N, C) = norm(inp(N, C)); rstd(N) saved. */
  forward(be: Backend, out: DeviceBuffer, rstd: DeviceBuffer, inp: DeviceBuffer, N: number) {
    be.rmsnormForward(out, rstd, inp, this.#weight(be), N, this.dim, this.eps);
  }

  /** dinp(N, C) += ...; dscale accumulates when trainable. */
  backward(
    be: Backend,
    dinp: DeviceBuffer,
    dout: DeviceBuffer,
    inp: DeviceBuffer,
    rstd: DeviceBuffer,
    N: number,
  ) {
    be.rmsnormBackward(dinp, this.dscale, dout, inp, this.#weight(be), rstd, N, this.dim);
  }
}
