/**
 * Rotary position embedding on the CUDA backend (kernels/layers.cu: rope), interleaved or
 * rotate-half, optional per-token positions. CPU twin: rope of src/backend/cpu/layers.ts.
 */
import { TuneError } from "../../errors.ts";
import type { DeviceBuffer, RopeLayout } from "../ops.ts";
import { cudaBuf, dtCode } from "./buffer.ts";
import { need, segmentIds } from "./checks.ts";
import type { CudaContext } from "./context.ts";

export function rope(
  ctx: CudaContext,
  x: DeviceBuffer,
  cos: DeviceBuffer,
  sin: DeviceBuffer,
  B: number,
  T: number,
  NH: number,
  HS: number,
  pos: number,
  layout: RopeLayout,
  inverse: boolean,
  positions: DeviceBuffer | null = null,
  rotaryDims = HS,
): void {
  if (rotaryDims !== HS) {
    throw new TuneError(
      `partial rotary embeddings (partial_rotary_factor, ${rotaryDims} of ${HS} dims) are not implemented on device=cuda yet; use device=cpu`,
    );
  }
  const xb = cudaBuf(x, "rope x"), c = cudaBuf(cos, "rope cos"), s = cudaBuf(sin, "rope sin");
  if (HS % 2 !== 0) throw new Error(`rope: head size ${HS} is odd`);
  need(xb, B * T * NH * HS, "rope x"); // (B, T, NH, HS)
  // With positions the table length is the caller's to guarantee (the model checks its
  // packed positions against max_seq_len before upload; reading them back would sync).
  const rows = positions === null ? pos + T : 1;
  need(c, rows * (HS / 2), "rope cos"); // (Tmax, HS/2)
  need(s, rows * (HS / 2), "rope sin");
  const pb = positions === null ? null : segmentIds(positions, B * T, "rope positions"); // (B, T)
  if (c.dtype !== s.dtype) throw new Error("rope: cos and sin differ in dtype");
  ctx.runVec("rope", B * T * NH * HS, [
    xb.ptr,
    dtCode(xb.dtype),
    c.ptr,
    s.ptr,
    dtCode(c.dtype),
    B,
    T,
    NH,
    HS,
    pos,
    layout === "half" ? 1 : 0,
    inverse ? 1 : 0,
    pb === null ? 0n : pb.ptr,
  ]);
}
