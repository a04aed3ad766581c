/**
 * Windowed and soft-capped attention on the CUDA backend (Mistral's sliding window, Gemma 2)
 * with the kernels of kernels/attention_variant.cu, and Gemma 2's final logit soft-cap. The
 * plain kernels (attention.cu, flash_attention.cu) are untouched: a call with a variant
 * (AttentionVariant) runs these instead. CPU twins: src/backend/cpu/attention.ts and
 * softcap/softcapBackward of src/backend/cpu/backend.ts.
 */
import type { AttentionVariant, OpArgs } from "../ops.ts";
import type { AttentionDims } from "../cpu/attention.ts";
import { type CudaBuffer, ptrDt } from "./buffer.ts";
import { floatOperand } from "./checks.ts";
import type { CudaContext } from "./context.ts";

/** Warps per block of the row-per-warp kernels (as attention.ts). */
const WARPS = 4;

/** Sizes of one attention call (as its CPU twin's). */
export type VariantDims = Pick<AttentionDims, "B" | "T" | "Tk" | "Tcap" | "NH" | "NKV" | "HS">;

/** The kernels' trailing (scale, seg, window, cap) arguments of a variant. */
function tail(v: AttentionVariant, HS: number, seg: bigint): (number | bigint)[] {
  return [v.scale ?? 1 / Math.sqrt(HS), seg, v.window ?? 0, v.softcap ?? 0];
}

/** out(B, T, NH, HS), lse(B, NH, T) of a variant attention (buffers checked by the caller). */
export function variantForward(
  ctx: CudaContext,
  b: { out: CudaBuffer; lse: CudaBuffer; q: CudaBuffer; k: CudaBuffer; v: CudaBuffer },
  d: VariantDims,
  seg: bigint,
  variant: AttentionVariant,
): void {
  const { B, T, Tk, Tcap, NH, NKV, HS } = d;
  const rows = B * NH * T;
  ctx.kernels.run("attn_fwd_var", Math.ceil(rows / WARPS), 32 * WARPS, WARPS * HS * 4, [
    ...ptrDt(b.out, b.lse, b.q, b.k, b.v),
    B,
    T,
    Tk,
    Tcap,
    NH,
    NKV,
    HS,
    ...tail(variant, HS, seg),
  ]);
}

/** dq, dk, dv (written) of a variant attention, from dsum(B, NH, T) = rowsum(dout * out). */
export function variantBackward(
  ctx: CudaContext,
  b: {
    dq: CudaBuffer;
    dk: CudaBuffer;
    dv: CudaBuffer;
    dout: CudaBuffer;
    q: CudaBuffer;
    k: CudaBuffer;
    v: CudaBuffer;
    lse: CudaBuffer;
    dsum: CudaBuffer;
  },
  d: VariantDims,
  seg: bigint,
  variant: AttentionVariant,
): void {
  const { B, T, NH, NKV, HS } = d;
  const common = [...ptrDt(b.dout, b.q, b.k, b.v, b.lse), b.dsum.ptr];
  const sizes = [B, T, NH, NKV, HS, ...tail(variant, HS, seg)];
  const grid = Math.ceil((B * NH * T) / WARPS);
  ctx.kernels.run("attn_bwd_dq_var", grid, 32 * WARPS, WARPS * 2 * HS * 4, [
    ...ptrDt(b.dq),
    ...common,
    ...sizes,
  ]);
  ctx.kernels.run(
    "attn_bwd_dkdv_var",
    Math.ceil((B * T * NKV) / WARPS),
    32 * WARPS,
    WARPS * 2 * HS * 4,
    [...ptrDt(b.dk, b.dv), ...common, ...sizes],
  );
}

/** The logit_softcap kernel. */
export function softcap(ctx: CudaContext, ...[buf, cap]: OpArgs<"softcap">): void {
  const o = floatOperand(buf, buf.length, "softcap");
  ctx.kernels.run1d("logit_softcap", o.length, [...ptrDt(o), o.length, cap]);
}

/** The logit_softcap_bwd kernel. */
export function softcapBackward(ctx: CudaContext, ...a: OpArgs<"softcapBackward">): void {
  const [dbuf, y, cap] = a;
  const d = floatOperand(dbuf, 0, "softcap grad"), o = floatOperand(y, d.length, "softcap out");
  ctx.kernels.run1d("logit_softcap_bwd", d.length, [...ptrDt(d, o), d.length, cap]);
}
