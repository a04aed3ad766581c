/**
 * Causal attention with GQA on the CUDA backend: the general kernels of
 * kernels/attention.cu (attn_fwd, attn_fwd_tiled, attn_bwd_dsum, attn_bwd_dq,
 * attn_bwd_dkdv) and the tensor-core kernels of kernels/flash_attention.cu where they apply
 * (flash_attention.ts), the window/soft-cap variants of kernels/attention_variant.cu
 * (attention_variant.ts), plus the KV-cache write (kv_cache_write of elementwise.cu). CPU
 * twin: src/backend/cpu/attention.ts (and kvCacheWrite of cpu/layers.ts).
 */
import { type DeviceBuffer, type OpArgs, plainAttention } from "../ops.ts";
import { ptrDt } from "./buffer.ts";
import { operand, segmentIds } from "./checks.ts";
import type { CudaContext } from "./context.ts";
import {
  FLASH_THREADS,
  flashBackwardLaunch,
  flashEligible,
  flashForwardLaunch,
} from "./flash_attention.ts";
import { variantBackward, variantForward } from "./attention_variant.ts";
import { copy, fill } from "./memory.ts";

/** Warps per block of the row-per-warp kernels. */
const WARPS = 4;
/** Largest head size the attention kernels hold in registers (32 lanes x MAXD 8). */
const MAX_HEAD_SIZE = 256;

export function attentionForward(ctx: CudaContext, ...a: OpArgs<"attentionForward">): void {
  const [out, lse, q, k, v, B, T, Tk, Tcap, NH, NKV, HS, segments = null, variant = null] = a;
  checkAttention(NH, NKV, HS, T, Tk, Tcap);
  const o = operand(out, B * T * NH * HS, "attention out"); // (B, T, NH, HS)
  const l = operand(lse, B * NH * T, "attention lse"); // (B, NH, T)
  const qb = operand(q, B * T * NH * HS, "attention q"); // (B, T, NH, HS)
  const kb = operand(k, B * Tcap * NKV * HS, "attention k"); // (B, Tcap, NKV, HS)
  const vb = operand(v, B * Tcap * NKV * HS, "attention v"); // (B, Tcap, NKV, HS)
  if (segments !== null && Tk !== T) {
    throw new Error(`attention: segments need Tk = T (got T ${T}, Tk ${Tk}): no KV cache`);
  }
  const sg = segments === null ? 0n : segmentIds(segments, B * T, "attention segments").ptr; // (B, T)
  const rows = B * NH * T;
  if (rows === 0) return;
  if (!plainAttention(variant)) {
    const bufs = { out: o, lse: l, q: qb, k: kb, v: vb };
    variantForward(ctx, bufs, { B, T, Tk, Tcap, NH, NKV, HS }, sg, variant!);
    return;
  }
  const scale = 1 / Math.sqrt(HS);
  if (ctx.attentionKernels === "flash" && flashEligible(HS, l, [o, qb, kb, vb])) {
    const { name, grid, smem } = flashForwardLaunch(B, T, NH, HS);
    const ptrs = [o, l, qb, kb, vb].map((x) => x.ptr);
    ctx.kernels.run(name, grid, FLASH_THREADS, smem, [...ptrs, B, T, Tk, Tcap, NH, NKV, scale, sg]);
    return;
  }
  const args = [...ptrDt(o, l, qb, kb, vb), B, T, Tk, Tcap, NH, NKV, HS, scale, sg];
  if (ctx.attentionKernels === "tiled" && HS <= 128 && B * NH <= 65535) {
    const smem = (WARPS * HS + 32 * (HS + 1) + 32 * HS) * 4;
    const grid: [number, number, number] = [Math.ceil(T / WARPS), B * NH, 1];
    ctx.kernels.run("attn_fwd_tiled", grid, 32 * WARPS, smem, args);
  } else {
    ctx.kernels.run("attn_fwd", Math.ceil(rows / WARPS), 32 * WARPS, WARPS * HS * 4, args);
  }
}

function checkAttention(
  NH: number,
  NKV: number,
  HS: number,
  T: number,
  Tk: number,
  Tcap: number,
) {
  if (NKV <= 0 || NH % NKV !== 0) {
    throw new Error(`attention: NH ${NH} is not a multiple of NKV ${NKV}`);
  }
  if (HS > MAX_HEAD_SIZE) {
    throw new Error(`attention: head size ${HS} > ${MAX_HEAD_SIZE} is not supported on CUDA`);
  }
  if (T > Tk || Tk > Tcap) throw new Error(`attention: needs T ${T} <= Tk ${Tk} <= Tcap ${Tcap}`);
}

export function attentionBackward(ctx: CudaContext, ...a: OpArgs<"attentionBackward">): void {
  const [dq, dk, dv, dout, q, k, v, out, lse, ...dims] = a;
  const [B, T, NH, NKV, HS, segments = null, variant = null] = dims;
  checkAttention(NH, NKV, HS, T, T, T);
  const b = (x: DeviceBuffer, n: number, w: string) => operand(x, n, `attention ${w}`);
  const nq = B * T * NH * HS, nkv = B * T * NKV * HS; // (B, T, NH, HS), (B, T, NKV, HS)
  const dqb = b(dq, nq, "dq"), dkb = b(dk, nkv, "dk"), dvb = b(dv, nkv, "dv");
  const dy = b(dout, nq, "dout"), qb = b(q, nq, "q"), kb = b(k, nkv, "k"), vb = b(v, nkv, "v");
  const ob = b(out, nq, "out"), l = b(lse, B * NH * T, "lse"); // lse (B, NH, T)
  const sg = segments === null ? 0n : segmentIds(segments, B * T, "attention segments").ptr; // (B, T)
  const rows = B * NH * T;
  if (rows === 0) return;
  const dsum = ctx.scratch(rows, "f32"); // (B, NH, T)
  const scale = 1 / Math.sqrt(HS);
  const grid = Math.ceil(rows / WARPS);
  ctx.kernels.run("attn_bwd_dsum", grid, 32 * WARPS, 0, [dsum.ptr, ...ptrDt(dy, ob), B, T, NH, HS]);
  if (!plainAttention(variant)) {
    const bufs = { dq: dqb, dk: dkb, dv: dvb, dout: dy, q: qb, k: kb, v: vb, lse: l, dsum };
    variantBackward(ctx, bufs, { B, T, Tk: T, Tcap: T, NH, NKV, HS }, sg, variant!);
    ctx.dropScratch(dsum);
    return;
  }
  if (ctx.attentionKernels === "flash" && flashEligible(HS, l, [dy, qb, kb, vb])) {
    // dq accumulates in fp32 over the key blocks (atomics), then takes dq's dtype.
    const dqAcc = dqb.dtype === "f32" ? dqb : ctx.scratch(B * T * NH * HS, "f32"); // (B, T, NH, HS)
    fill(ctx, dqAcc, 0);
    const { name, grid: g, smem } = flashBackwardLaunch(B, T, NKV, HS);
    const ptrs = [dy, qb, kb, vb, l, dsum].map((x) => x.ptr);
    ctx.kernels.run(name, g, FLASH_THREADS, smem, [
      dqAcc.ptr,
      ...ptrDt(dkb, dvb),
      ...ptrs,
      B,
      T,
      NH,
      NKV,
      scale,
      sg,
    ]);
    if (dqAcc !== dqb) {
      copy(ctx, dqb, dqAcc);
      ctx.dropScratch(dqAcc);
    }
    ctx.dropScratch(dsum);
    return;
  }
  // attn_bwd_dq and attn_bwd_dkdv read the same operands after their outputs
  const common = [...ptrDt(dy, qb, kb, vb, l), dsum.ptr, B, T, NH, NKV, HS, scale, sg];
  ctx.kernels.run("attn_bwd_dq", grid, 32 * WARPS, WARPS * 2 * HS * 4, [
    ...ptrDt(dqb),
    ...common,
  ]);
  const dkdvGrid = Math.ceil((B * T * NKV) / WARPS);
  ctx.kernels.run("attn_bwd_dkdv", dkdvGrid, 32 * WARPS, WARPS * 2 * HS * 4, [
    ...ptrDt(dkb, dvb),
    ...common,
  ]);
  ctx.dropScratch(dsum);
}

export function kvCacheWrite(ctx: CudaContext, ...a: OpArgs<"kvCacheWrite">): void {
  const [cache, src, B, T, Tcap, width, pos] = a;
  if (pos < 0 || pos + T > Tcap) {
    throw new Error(`kvCacheWrite: rows ${pos}..${pos + T} exceed Tcap ${Tcap}`);
  }
  const c = operand(cache, B * Tcap * width, "kvCacheWrite cache"); // (B, Tcap, width)
  const s = operand(src, B * T * width, "kvCacheWrite src"); // (B, T, width)
  const args = [...ptrDt(c, s), B, T, Tcap, width, pos];
  ctx.kernels.run1d("kv_cache_write", B * T * width, args);
}
