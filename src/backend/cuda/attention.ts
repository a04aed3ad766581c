/**
 * Causal attention with GQA on the CUDA backend: the general kernels of
 * kernels/attention.cu (attn_fwd, attn_fwd_tiled, attn_bwd_dsum, attn_bwd_dq,
 * attn_bwd_dkdv) and the tensor-core kernels of kernels/flash_attention.cu where they apply
 * (flash_attention.ts), the window/soft-cap variants of kernels/attention_variant.cu
 * (attention_variant.ts), plus the KV-cache write (kv_cache_write of elementwise.cu). CPU
 * twin: src/backend/cpu/attention.ts (and kvCacheWrite of cpu/layers.ts).
 */
import { type AttentionVariant, type DeviceBuffer, plainAttention } from "../ops.ts";
import { cudaBuf, dtCode } from "./buffer.ts";
import { need, segmentIds } from "./checks.ts";
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

export function attentionForward(
  ctx: CudaContext,
  out: DeviceBuffer,
  lse: DeviceBuffer,
  q: DeviceBuffer,
  k: DeviceBuffer,
  v: DeviceBuffer,
  B: number,
  T: number,
  Tk: number,
  Tcap: number,
  NH: number,
  NKV: number,
  HS: number,
  segments: DeviceBuffer | null = null,
  variant: AttentionVariant | null = null,
): void {
  const o = cudaBuf(out, "attention out"), l = cudaBuf(lse, "attention lse");
  const qb = cudaBuf(q, "attention q"), kb = cudaBuf(k, "attention k");
  const vb = cudaBuf(v, "attention v");
  checkAttention(NH, NKV, HS, T, Tk, Tcap);
  need(o, B * T * NH * HS, "attention out"); // (B, T, NH, HS)
  need(l, B * NH * T, "attention lse"); // (B, NH, T)
  need(qb, B * T * NH * HS, "attention q"); // (B, T, NH, HS)
  need(kb, B * Tcap * NKV * HS, "attention k"); // (B, Tcap, NKV, HS)
  need(vb, B * Tcap * NKV * HS, "attention v"); // (B, Tcap, NKV, HS)
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
  if (ctx.attentionKernels === "flash" && flashEligible(HS, l, [o, qb, kb, vb])) {
    const { name, grid, smem } = flashForwardLaunch(B, T, NH, HS);
    ctx.kernels.run(name, grid, FLASH_THREADS, smem, [
      o.ptr,
      l.ptr,
      qb.ptr,
      kb.ptr,
      vb.ptr,
      B,
      T,
      Tk,
      Tcap,
      NH,
      NKV,
      1 / Math.sqrt(HS),
      sg,
    ]);
    return;
  }
  const args = [
    o.ptr,
    dtCode(o.dtype),
    l.ptr,
    dtCode(l.dtype),
    qb.ptr,
    dtCode(qb.dtype),
    kb.ptr,
    dtCode(kb.dtype),
    vb.ptr,
    dtCode(vb.dtype),
    B,
    T,
    Tk,
    Tcap,
    NH,
    NKV,
    HS,
    1 / Math.sqrt(HS),
    sg,
  ];
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

export function attentionBackward(
  ctx: CudaContext,
  dq: DeviceBuffer,
  dk: DeviceBuffer,
  dv: DeviceBuffer,
  dout: DeviceBuffer,
  q: DeviceBuffer,
  k: DeviceBuffer,
  v: DeviceBuffer,
  out: DeviceBuffer,
  lse: DeviceBuffer,
  B: number,
  T: number,
  NH: number,
  NKV: number,
  HS: number,
  segments: DeviceBuffer | null = null,
  variant: AttentionVariant | null = null,
): void {
  const b = (x: DeviceBuffer, w: string) => cudaBuf(x, `attention ${w}`);
  const dqb = b(dq, "dq"), dkb = b(dk, "dk"), dvb = b(dv, "dv"), dy = b(dout, "dout");
  const qb = b(q, "q"), kb = b(k, "k"), vb = b(v, "v"), ob = b(out, "out"), l = b(lse, "lse");
  checkAttention(NH, NKV, HS, T, T, T);
  for (const [x, w] of [[dqb, "dq"], [dy, "dout"], [qb, "q"], [ob, "out"]] as const) {
    need(x, B * T * NH * HS, `attention ${w}`); // (B, T, NH, HS)
  }
  for (const [x, w] of [[dkb, "dk"], [dvb, "dv"], [kb, "k"], [vb, "v"]] as const) {
    need(x, B * T * NKV * HS, `attention ${w}`); // (B, T, NKV, HS)
  }
  need(l, B * NH * T, "attention lse"); // (B, NH, T)
  const sg = segments === null ? 0n : segmentIds(segments, B * T, "attention segments").ptr; // (B, T)
  const rows = B * NH * T;
  if (rows === 0) return;
  const dsum = ctx.scratch(rows, "f32"); // (B, NH, T)
  const scale = 1 / Math.sqrt(HS);
  const grid = Math.ceil(rows / WARPS);
  ctx.kernels.run("attn_bwd_dsum", grid, 32 * WARPS, 0, [
    dsum.ptr,
    dy.ptr,
    dtCode(dy.dtype),
    ob.ptr,
    dtCode(ob.dtype),
    B,
    T,
    NH,
    HS,
  ]);
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
    ctx.kernels.run(name, g, FLASH_THREADS, smem, [
      dqAcc.ptr,
      dkb.ptr,
      dtCode(dkb.dtype),
      dvb.ptr,
      dtCode(dvb.dtype),
      dy.ptr,
      qb.ptr,
      kb.ptr,
      vb.ptr,
      l.ptr,
      dsum.ptr,
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
  ctx.kernels.run("attn_bwd_dq", grid, 32 * WARPS, WARPS * 2 * HS * 4, [
    dqb.ptr,
    dtCode(dqb.dtype),
    dy.ptr,
    dtCode(dy.dtype),
    qb.ptr,
    dtCode(qb.dtype),
    kb.ptr,
    dtCode(kb.dtype),
    vb.ptr,
    dtCode(vb.dtype),
    l.ptr,
    dtCode(l.dtype),
    dsum.ptr,
    B,
    T,
    NH,
    NKV,
    HS,
    scale,
    sg,
  ]);
  ctx.kernels.run(
    "attn_bwd_dkdv",
    Math.ceil((B * T * NKV) / WARPS),
    32 * WARPS,
    WARPS * 2 * HS * 4,
    [
      dkb.ptr,
      dtCode(dkb.dtype),
      dvb.ptr,
      dtCode(dvb.dtype),
      dy.ptr,
      dtCode(dy.dtype),
      qb.ptr,
      dtCode(qb.dtype),
      kb.ptr,
      dtCode(kb.dtype),
      vb.ptr,
      dtCode(vb.dtype),
      l.ptr,
      dtCode(l.dtype),
      dsum.ptr,
      B,
      T,
      NH,
      NKV,
      HS,
      scale,
      sg,
    ],
  );
  ctx.dropScratch(dsum);
}

export function kvCacheWrite(
  ctx: CudaContext,
  cache: DeviceBuffer,
  src: DeviceBuffer,
  B: number,
  T: number,
  Tcap: number,
  width: number,
  pos: number,
): void {
  const c = cudaBuf(cache, "kvCacheWrite cache"), s = cudaBuf(src, "kvCacheWrite src");
  if (pos < 0 || pos + T > Tcap) {
    throw new Error(`kvCacheWrite: rows ${pos}..${pos + T} exceed Tcap ${Tcap}`);
  }
  need(c, B * Tcap * width, "kvCacheWrite cache"); // (B, Tcap, width)
  need(s, B * T * width, "kvCacheWrite src"); // (B, T, width)
  ctx.kernels.run1d("kv_cache_write", B * T * width, [
    c.ptr,
    dtCode(c.dtype),
    s.ptr,
    dtCode(s.dtype),
    B,
    T,
    Tcap,
    width,
    pos,
  ]);
}
