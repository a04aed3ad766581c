/** RMSNorm (torchtune's RMSNorm: x * rsqrt(mean(x^2) + eps) * scale) over the op interface. */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";

/** An RMSNorm over the last dimension C. */
export class RmsNorm {
  constructor(
    readonly dim: number,
    readonly eps: number,
    readonly scale: DeviceBuffer, // (C)
    readonly dscale: DeviceBuffer | null, // (C)
  ) {}

  /** out(N, C) = norm(inp(N, C)); rstd(N) saved. */
  forward(be: Backend, out: DeviceBuffer, rstd: DeviceBuffer, inp: DeviceBuffer, N: number) {
    be.rmsnormForward(out, rstd, inp, this.scale, N, this.dim, this.eps);
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
    be.rmsnormBackward(dinp, this.dscale, dout, inp, this.scale, rstd, N, this.dim);
  }
}
