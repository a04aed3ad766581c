/**
 * Rotary position embedding on the CUDA backend (kernels/layers.cu: rope, and rope_partial for
 * partial rotary), interleaved or rotate-half, optional per-token positions. CPU twin: rope
 * of src/backend/cpu/layers.ts.
 */
import type { OpArgs } from "../ops.ts";
import { cudaBuf, dtCode, ptrDt } from "./buffer.ts";
import { need, segmentIds } from "./checks.ts";
import type { CudaContext } from "./context.ts";

export function rope(ctx: CudaContext, ...a: OpArgs<"rope">): void {
  const [x, cos, sin, B, T, NH, HS, pos, layout, inverse, positions = null, RD = HS] = a;
  const xb = cudaBuf(x, "rope x"), c = cudaBuf(cos, "rope cos"), s = cudaBuf(sin, "rope sin");
  if (RD % 2 !== 0 || RD < 2 || RD > HS) {
    throw new Error(`rope: rotary dims ${RD} must be even and within head size ${HS}`);
  }
  need(xb, B * T * NH * HS, "rope x"); // (B, T, NH, HS)
  // With positions the table length is the caller's to guarantee (the model checks its
  // packed positions against max_seq_len before upload; reading them back would sync).
  const rows = positions === null ? pos + T : 1;
  need(c, rows * (RD / 2), "rope cos"); // (Tmax, RD/2)
  need(s, rows * (RD / 2), "rope sin");
  const pb = positions === null ? null : segmentIds(positions, B * T, "rope positions"); // (B, T)
  if (c.dtype !== s.dtype) throw new Error("rope: cos and sin differ in dtype");
  const tables = [...ptrDt(xb), c.ptr, s.ptr, dtCode(c.dtype), B, T, NH, HS];
  const flags = [pos, layout === "half" ? 1 : 0, inverse ? 1 : 0, pb === null ? 0n : pb.ptr];
  if (RD !== HS) {
    // partial rotary: rope_partial, one pair a thread (runVec sizes the grid for n / 8
    // threads, so n is 8 per pair; the vector paths of rope assume RD = HS)
    ctx.runVec("rope_partial", 8 * B * T * NH * (RD / 2), [...tables, RD, ...flags]);
    return;
  }
  ctx.runVec("rope", B * T * NH * HS, [...tables, ...flags]);
}
