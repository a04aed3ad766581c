/**
 * Causal grouped-query attention on the CPU (scale 1/sqrt(HS)), built from matrix
 * products per (batch, head, block of query rows) so OpenBLAS does the heavy lifting.
 * The forward saves each query row's log-sum-exp; the backward recomputes probabilities
 * from it (as FlashAttention does), so no (T, Tk) matrix is kept between passes, unless the
 * caller gives a `probs` buffer (AttentionDims.probs): the forward then keeps each block's
 * probabilities there and the backward skips the recompute (its scores product and its exps,
 * half the backward at a small head size).
 */
import { LN2_HI, LN2_LO, LOG2E, MAGIC, POW2 } from "./fast_math.ts";
import type { Gemm } from "./gemm.ts";
import { simdKernels } from "./simd.ts";

/** Query rows per block: the block's scores (ROWS, Tk) stay in cache. */
const ROWS = 64;
/** 1 / softmax denominator of each row of a forward block. */
const rowScale = new Float64Array(ROWS);

/** Sizes (and the optional segment ids) of one attention call. */
export interface AttentionDims {
  B: number;
  T: number;
  Tk: number;
  Tcap: number;
  NH: number;
  NKV: number;
  HS: number;
  /**
   * (B, T) segment ids of packed samples (training only: Tk = T); query t then sees key j
   * only when seg[b*T + j] == seg[b*T + t] (block-causal). Null or absent: plain causal.
   * It travels to the pool's worker inside the job's dims.
   */
  seg?: Int32Array | null;
  /**
   * Sliding window W (Mistral, Gemma 2 local layers): the query at position p sees only keys
   * p - W + 1..p. Absent or 0: no window.
   */
  window?: number;
  /** Gemma 2's logit soft-cap c: scores become c * tanh(score * scale / c). Absent or 0: none. */
  softcap?: number;
  /** Score scale (Gemma 2: 1/sqrt(query_pre_attn_scalar)). Absent: 1/sqrt(HS). */
  scale?: number;
  /**
   * The forward's probabilities, kept for the backward (training, Tk = T, no soft-cap):
   * probsFloats(B, T, NH) floats, head (b, h) at (b * NH + h) * probsPerHead(T), then its
   * blocks of ROWS query rows, each (R, t0 + R) row-major with zeros right of the diagonal.
   * Null or absent: the backward recomputes them from lse. Travels to the worker as `seg`.
   */
  probs?: Float32Array | null;
}

/** Floats of one head's kept probabilities: its blocks' (R, t0 + R) for T query rows. */
export function probsPerHead(T: number): number {
  let n = 0;
  for (let t0 = 0; t0 < T; t0 += ROWS) {
    const R = Math.min(ROWS, T - t0);
    n += R * (t0 + R);
  }
  return n;
}

/** Floats of the probabilities attentionForward keeps for B x NH heads of T rows. */
export function probsFloats(B: number, T: number, NH: number): number {
  return B * NH * probsPerHead(T);
}

/**
 * The attention softmax's exps on elements [from, to] of `p`, y = p[j] * scale - shift (at
 * most about 0 for every caller): e^y by fastExp's steps with the polynomial in Horner's
 * scheme (0 below -745.2, NaN for NaN). Without `dp` (the forward, decode.ts too): p[j] = e^y,
 * and `sum` plus the e^y in index order (float64) is returned. With `dp` (the backward, shift
 * the row's log-sum-exp): p[j] = P = e^y and dp[j] = P * (dp[j] - D) * scale.
 * The wasm kernels (attn_exp2 in kernels.ll) repeat it operation for operation.
 */
export function attnExpRange(
  p: Float32Array,
  from: number,
  to: number,
  scale: number,
  shift: number,
  sum = 0,
  dp: Float32Array | null = null,
  D = 0,
): number {
  for (let j = from; j <= to; j++) {
    const y = p[j] * scale - shift;
    let e = 0;
    if (y >= -745.2) {
      const kf = (y * LOG2E + MAGIC) - MAGIC;
      const r = (y - kf * LN2_HI) - kf * LN2_LO;
      e = (1 +
        r * (1 +
            r * (0.5 +
                r * (0.16666666666666666 +
                    r * (0.041666666666666664 +
                        r * (0.008333333333333333 +
                            r * (0.001388888888888889 + r * 0.0001984126984126984))))))) *
        POW2[(kf | 0) + 1075];
    } else if (y !== y) e = y;
    p[j] = e;
    if (dp === null) sum += e;
    else dp[j] = e * (dp[j] - D) * scale;
  }
  return sum;
}

/** s[row + j] = -inf for keys j <= last outside query t's segment (seg row at segOff). */
function maskRow(
  s: Float32Array,
  row: number,
  seg: Int32Array,
  segOff: number,
  t: number,
  last: number,
): void {
  const id = seg[segOff + t];
  for (let j = 0; j <= last; j++) if (seg[segOff + j] !== id) s[row + j] = -Infinity;
}

/** s[row + j] = cap * tanh(s[row + j] * scale / cap) for keys j <= last (Gemma 2). */
function capRow(s: Float32Array, row: number, last: number, scale: number, cap: number): void {
  for (let j = 0; j <= last; j++) s[row + j] = Math.tanh((s[row + j] * scale) / cap) * cap;
}

/**
 * Work units of attention: (batch row b, key/value head kvh) pairs, unit = b * NKV + kvh,
 * each with its NH / NKV query heads. Units write disjoint parts of out, lse, dq, dk and
 * dv, so two threads can run disjoint unit ranges of one call.
 */
export function attentionUnits(d: AttentionDims): number {
  return d.B * d.NKV;
}

/**
 * out(B, T, NH, HS), lse(B, NH, T) from q(B, T, NH, HS) and k, v(B, Tcap, NKV, HS) whose
 * first Tk rows are valid; query t sits at position Tk - T + t.
 * `s` is scratch of at least min(T, ROWS) * Tk elements. Only units [u0, u1) are computed.
 */
export function attentionForward(
  gemm: Gemm,
  out: Float32Array,
  lse: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  d: AttentionDims,
  s: Float32Array,
  u0 = 0,
  u1 = attentionUnits(d),
): void {
  const { T, Tk, Tcap, NH, NKV, HS } = d;
  const scale = d.scale ?? 1 / Math.sqrt(HS);
  const group = NH / NKV;
  const ldq = NH * HS, ldk = NKV * HS;
  const shift = Tk - T; // query t sees keys 0..t + shift
  const seg = d.seg ?? null;
  const win = d.window ?? 0, cap = d.softcap ?? 0;
  // with a soft-cap the scores are capped (already scaled) before the softmax
  const es = cap > 0 ? 1 : scale;
  const probs = d.probs ?? null;
  if (probs !== null && (Tk !== T || cap > 0)) {
    throw new Error("attention probs are kept only for a training forward without soft-cap");
  }
  const perHead = probs === null ? 0 : probsPerHead(T);
  // With `s` in this thread's wasm memory (the backend's attnScratch), the even head of each
  // row's exps runs in wasm SIMD (bitwise the loop below); the loop does the rest.
  const simd = simdKernels();
  const wasm = simd !== null && simd.holds(s) ? simd : null;
  for (let u = u0; u < u1; u++) {
    const b = (u / NKV) | 0, kvh = u % NKV;
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      const kOff = b * Tcap * ldk + kvh * HS;
      let po = (b * NH + h) * perHead; // this block's place in probs
      for (let t0 = 0; t0 < T; t0 += ROWS) {
        const R = Math.min(ROWS, T - t0);
        const nk = t0 + R + shift; // keys visible to the block's last row
        const qOff = (b * T + t0) * ldq + h * HS;
        // s(R, nk) = q_blk(R, HS) @ k(nk, HS)^T
        gemm.nt(R, nk, HS, q.subarray(qOff), ldq, k.subarray(kOff), ldk, s, nk, 0);
        for (let r = 0; r < R; r++) {
          const row = r * nk;
          const last = t0 + r + shift; // inclusive
          if (cap > 0) capRow(s, row, last, scale, cap);
          // Block-causal: keys of other segments score -inf, so exp gives them 0.
          if (seg !== null) maskRow(s, row, seg, b * T, t0 + r, last);
          // Sliding window: keys at least W behind the query score -inf.
          if (win > 0) { for (let j = 0; j <= last - win; j++) s[row + j] = -Infinity; }
          const j0 = wasm === null ? 0 : (last + 1) & ~1; // the wasm kernels' even head
          let m = j0 === 0 ? -Infinity : wasm!.attnRowMax(row, j0);
          for (let j = j0; j <= last; j++) if (s[row + j] > m) m = s[row + j];
          const max = m * es; // = max of s * es: scaling by a positive number is monotonic
          const sum = j0 === 0 ? 0 : wasm!.attnExpRow(row, j0, es, max);
          // y <= 0 here; normalise the (R, HS) output rows, not the (R, nk) probabilities
          const total = attnExpRange(s, row + j0, row + last, es, max, sum);
          rowScale[r] = 1 / total;
          for (let j = last + 1; j < nk; j++) s[row + j] = 0;
          lse[(b * NH + h) * T + t0 + r] = max + Math.log(total);
        }
        // out_blk(R, HS) = exp(s)(R, nk) @ v(nk, HS), then each row / its sum
        gemm.nn(R, HS, nk, s, nk, v.subarray(kOff), ldk, out.subarray(qOff), ldq, 0);
        for (let r = 0; r < R; r++) {
          const o = qOff + r * ldq, inv = rowScale[r];
          for (let x = 0; x < HS; x++) out[o + x] *= inv;
        }
        if (probs !== null) {
          // P = exp(s) / sum in place, rounded to fp32 once (zeros right of the diagonal stay
          // zeros), then the block's copy
          for (let r = 0; r < R; r++) {
            const row = r * nk, inv = rowScale[r];
            let j0 = 0;
            if (wasm !== null) {
              j0 = nk & ~1;
              wasm.attnScaleRow(row, j0, inv);
            }
            for (let j = row + j0; j < row + nk; j++) s[j] *= inv;
          }
          probs.set(s.subarray(0, R * nk), po);
          po += R * nk;
        }
      }
    }
  }
}

/**
 * Backward for training (Tk = Tcap = T); dq, dk, dv are written.
 * With P recomputed from lse: dP = dout @ V^T, dS = P * (dP - rowsum(dout * out)) * scale,
 * dq = dS @ K, dk = dS^T @ Q, dv = P^T @ dout.
 * `p` and `dp` are scratch of at least min(T, ROWS) * T elements each. Only units
 * [u0, u1) are computed (their dk, dv rows are zeroed here).
 */
export function attentionBackward(
  gemm: Gemm,
  dq: Float32Array,
  dk: Float32Array,
  dv: Float32Array,
  dout: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array,
  lse: Float32Array,
  d: AttentionDims,
  p: Float32Array,
  dp: Float32Array,
  u0 = 0,
  u1 = attentionUnits(d),
): void {
  const { T, NH, NKV, HS } = d;
  const scale = d.scale ?? 1 / Math.sqrt(HS);
  const group = NH / NKV;
  const ldq = NH * HS, ldk = NKV * HS;
  const seg = d.seg ?? null;
  const variant = (d.window ?? 0) > 0 || (d.softcap ?? 0) > 0;
  const probs = d.probs ?? null;
  if (probs !== null && (d.softcap ?? 0) > 0) {
    throw new Error("attention probs are kept only for a forward without soft-cap");
  }
  const perHead = probs === null ? 0 : probsPerHead(T);
  // With p and dp in this thread's wasm memory (attnBackwardScratch), the even head of each
  // row's recompute runs in wasm SIMD (bitwise the loop below); the loop does the rest.
  const simd = simdKernels();
  const wasm = simd !== null && simd.holds(p) && simd.holds(dp) ? simd : null;
  for (let u = u0; u < u1; u++) {
    const b = (u / NKV) | 0, kvh = u % NKV;
    const kOff = b * T * ldk + kvh * HS;
    for (let t = 0; t < T; t++) {
      dk.fill(0, kOff + t * ldk, kOff + t * ldk + HS);
      dv.fill(0, kOff + t * ldk, kOff + t * ldk + HS);
    }
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      const kb = k.subarray(kOff), vb = v.subarray(kOff);
      const dkb = dk.subarray(kOff), dvb = dv.subarray(kOff);
      let po = (b * NH + h) * perHead; // this block's place in probs
      for (let t0 = 0; t0 < T; t0 += ROWS) {
        const R = Math.min(ROWS, T - t0);
        const nk = t0 + R;
        const qOff = (b * T + t0) * ldq + h * HS;
        const qb = q.subarray(qOff), dob = dout.subarray(qOff);
        if (probs !== null) {
          const P = probs.subarray(po, po + R * nk);
          po += R * nk;
          gemm.nt(R, nk, HS, dob, ldq, vb, ldk, dp, nk, 0); // dP (R, nk)
          keptProbsGrad(P, dp, R, nk, t0, dout, out, qOff, ldq, HS, scale);
          gemm.nn(R, HS, nk, dp, nk, kb, ldk, dq.subarray(qOff), ldq, 0); // dq_blk = dS @ K
          gemm.tn(nk, HS, R, dp, nk, qb, ldq, dkb, ldk, 1); // dk += dS^T @ q_blk
          gemm.tn(nk, HS, R, P, nk, dob, ldq, dvb, ldk, 1); // dv += P^T @ dout_blk
          continue;
        }
        gemm.nt(R, nk, HS, qb, ldq, kb, ldk, p, nk, 0); // scores (R, nk)
        gemm.nt(R, nk, HS, dob, ldq, vb, ldk, dp, nk, 0); // dP (R, nk)
        for (let r = 0; r < R; r++) {
          const row = r * nk;
          const last = t0 + r;
          const l = lse[(b * NH + h) * T + t0 + r];
          const o = qOff + r * ldq;
          const D = rowDot(dout, out, o, HS);
          if (variant) {
            variantRow(p, dp, row, nk, last, l, D, scale, d, seg, b * T);
            continue;
          }
          if (seg !== null) maskRow(p, row, seg, b * T, last, last); // P = 0 off the segment
          let j0 = 0;
          if (wasm !== null) {
            j0 = (last + 1) & ~1;
            wasm.attnBwdRow(p, dp, row, j0, scale, l, D);
          }
          // y <= ~0: l is the row's log-sum-exp
          attnExpRange(p, row + j0, row + last, scale, l, 0, dp, D);
          for (let j = last + 1; j < nk; j++) {
            p[row + j] = 0;
            dp[row + j] = 0;
          }
        }
        gemm.nn(R, HS, nk, dp, nk, kb, ldk, dq.subarray(qOff), ldq, 0); // dq_blk = dS @ K
        gemm.tn(nk, HS, R, dp, nk, qb, ldq, dkb, ldk, 1); // dk += dS^T @ q_blk
        gemm.tn(nk, HS, R, p, nk, dob, ldq, dvb, ldk, 1); // dv += P^T @ dout_blk
      }
    }
  }
}

/** D of a query row: sum over x < HS of dout[o + x] * out[o + x], in float64, in order. */
function rowDot(dout: Float32Array, out: Float32Array, o: number, HS: number): number {
  let D = 0;
  for (let x = 0; x < HS; x++) D += dout[o + x] * out[o + x];
  return D;
}

/**
 * dS of a block from the forward's kept probabilities P (R, nk): dp = P * (dP - D) * scale
 * with D = rowsum(dout * out) per query row, zero right of the diagonal. Masked keys (window,
 * other segments) have P = 0, so their dS is 0 without a mask here.
 */
function keptProbsGrad(
  P: Float32Array,
  dp: Float32Array,
  R: number,
  nk: number,
  t0: number,
  dout: Float32Array,
  out: Float32Array,
  qOff: number,
  ldq: number,
  HS: number,
  scale: number,
): void {
  for (let r = 0; r < R; r++) {
    const row = r * nk, last = t0 + r, o = qOff + r * ldq;
    const D = rowDot(dout, out, o, HS);
    for (let j = row; j <= row + last; j++) dp[j] = P[j] * (dp[j] - D) * scale;
    dp.fill(0, row + last + 1, row + nk);
  }
}

/**
 * One backward row of windowed and/or soft-capped attention: p[row + j] = P (recomputed
 * from the row's lse l), dp[row + j] = dS = P * (dP - D) * d(score)/d(raw q.k) for the row's
 * keys; zero past `last`, before the window and off the segment.
 */
function variantRow(
  p: Float32Array,
  dp: Float32Array,
  row: number,
  nk: number,
  last: number,
  l: number,
  D: number,
  scale: number,
  d: AttentionDims,
  seg: Int32Array | null,
  segOff: number,
): void {
  const win = d.window ?? 0, cap = d.softcap ?? 0;
  const lo = win > 0 ? Math.max(0, last - win + 1) : 0;
  const id = seg === null ? 0 : seg[segOff + last];
  for (let j = 0; j < nk; j++) {
    if (j < lo || j > last || (seg !== null && seg[segOff + j] !== id)) {
      p[row + j] = 0;
      dp[row + j] = 0;
      continue;
    }
    let x = p[row + j] * scale, g = scale;
    if (cap > 0) {
      const th = Math.tanh(x / cap);
      x = th * cap;
      g = scale * (1 - th * th); // d(cap * tanh(s * scale / cap)) / ds
    }
    const pr = Math.exp(x - l);
    p[row + j] = pr;
    dp[row + j] = pr * (dp[row + j] - D) * g;
  }
}
