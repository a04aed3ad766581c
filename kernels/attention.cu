// Causal grouped-query attention, flash style: online softmax, no (T, Tk) matrix in memory.
// CPU twin: src/backend/cpu/attention.ts.
//
// Layouts: q, out, dq, dout (B, T, NH, HS); k, v (B, Tcap, NKV, HS) of which the first Tk
// rows are valid; lse, dsum (B, NH, T). Query t sits at position Tk - T + t and sees keys
// 0 .. Tk - T + t. Query head h reads key/value head h / (NH / NKV).
// seg (B, T) int, or null: segment ids of packed samples (training only, Tk = Tcap = T);
// query t then sees key j only if also seg[b, j] == seg[b, t] (block-causal). A chunk of
// keys may then be wholly masked before any visible one, so the online-softmax rescale
// is guarded against m = -inf (exp(-inf - -inf) would be NaN).
//
// One warp per query row (forward, dq) or per key row (dk, dv). Lane l owns head dims
// l, l + 32, ... (HS <= 32 * MAXD). For each chunk of 32 keys (or queries) every lane
// scores one of them with a full dot product against the row kept in shared memory, then
// the warp folds the chunk into its accumulators, broadcasting weights by shuffles.
// blockDim.x = 32 * WARPS; dynamic shared memory = WARPS * (1 or 2) * HS floats.
#include "common.cuh"

#define MAXD 8

extern "C" __global__ void attn_fwd(void* out, int dto, void* lse, int dtl, const void* q,
                                    int dtq, const void* k, int dtk, const void* v, int dtv,
                                    int B, int T, int Tk, int Tcap, int NH, int NKV, int HS,
                                    float scale, const int* seg) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;  // (b * NH + h) * T + t
  if (row >= B * NH * T) return;
  const int t = row % T, h = (row / T) % NH, b = row / (T * NH);
  const int kvh = h / (NH / NKV);
  const int last = Tk - T + t;
  const int* segb = seg ? seg + (size_t)b * T : nullptr;  // (T) this row's segment ids
  const int sq = segb ? segb[t] : 0;
  float* qs = smem + warp * HS;
  const size_t qo = (((size_t)b * T + t) * NH + h) * HS;
  for (int d = lane; d < HS; d += 32) qs[d] = ld(q, dtq, qo + d);
  __syncwarp();
  float acc[MAXD];
#pragma unroll
  for (int j = 0; j < MAXD; j++) acc[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int kb = 0; kb <= last; kb += 32) {
    const int key = kb + lane;
    const bool vis = key <= last && (!segb || segb[key] == sq);
    float s = -INFINITY;
    if (vis) {
      const size_t ko = (((size_t)b * Tcap + key) * NKV + kvh) * HS;
      float dot = 0.0f;
      for (int d = 0; d < HS; d++) dot += qs[d] * ld(k, dtk, ko + d);
      s = dot * scale;
    }
    const float mn = fmaxf(m, warp_max(s));
    const float p = vis ? expf(s - mn) : 0.0f;
    const float corr = m == -INFINITY ? 0.0f : expf(m - mn);  // 0 while nothing is seen yet
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int j = 0; j < MAXD; j++) acc[j] *= corr;
    const int nk = min(32, last - kb + 1);
    for (int kk = 0; kk < nk; kk++) {
      const float pk = __shfl_sync(0xffffffffu, p, kk);
      const size_t vo = (((size_t)b * Tcap + kb + kk) * NKV + kvh) * HS;
#pragma unroll
      for (int j = 0; j < MAXD; j++) {
        const int d = lane + 32 * j;
        if (d < HS) acc[j] += pk * ld(v, dtv, vo + d);
      }
    }
    m = mn;
  }
  const float inv = 1.0f / l;
#pragma unroll
  for (int j = 0; j < MAXD; j++) {
    const int d = lane + 32 * j;
    if (d < HS) st(out, dto, qo + d, acc[j] * inv);
  }
  if (lane == 0) st(lse, dtl, row, m + logf(l));
}

// The same forward with K/V tiles shared by the block (opt-in; HS <= 128). Block
// (x, bh) holds WARPS query rows t = x * WARPS + warp of one (batch, head); per tile of 32
// keys the block loads K and V once, coalesced, into shared memory (K rows padded by one
// float so lanes reading different keys hit different banks), then every warp scores its
// row against the tile exactly as attn_fwd does.
// Dynamic shared memory: (WARPS * HS + 32 * (HS + 1) + 32 * HS) floats.
extern "C" __global__ void attn_fwd_tiled(void* out, int dto, void* lse, int dtl, const void* q,
                                          int dtq, const void* k, int dtk, const void* v,
                                          int dtv, int B, int T, int Tk, int Tcap, int NH,
                                          int NKV, int HS, float scale, const int* seg) {
  extern __shared__ float smem[];
  const int warps = blockDim.x >> 5;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int kvh = h / (NH / NKV);
  const int t = blockIdx.x * warps + warp;
  const bool valid = t < T;
  const int last = valid ? Tk - T + t : -1;
  const int* segb = seg ? seg + (size_t)b * T : nullptr;  // (T) this row's segment ids
  const int sq = segb && valid ? segb[t] : 0;
  const int block_last = Tk - T + min(T - 1, (int)(blockIdx.x + 1) * warps - 1);
  float* qs = smem + warp * HS;
  float* ks = smem + warps * HS;            // [32][HS + 1]
  float* vs = ks + 32 * (HS + 1);           // [32][HS]
  const size_t qo = (((size_t)b * T + (valid ? t : 0)) * NH + h) * HS;
  if (valid) {
    for (int d = lane; d < HS; d += 32) qs[d] = ld(q, dtq, qo + d);
  }
  float acc[MAXD];
#pragma unroll
  for (int j = 0; j < MAXD; j++) acc[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int kb = 0; kb <= block_last; kb += 32) {
    __syncthreads();  // the previous tile is consumed (and qs is written)
    for (int idx = threadIdx.x; idx < 32 * HS; idx += blockDim.x) {
      const int r = idx / HS, d = idx % HS, key = kb + r;
      float kv = 0.0f, vv = 0.0f;
      if (key < Tk) {
        const size_t ko = (((size_t)b * Tcap + key) * NKV + kvh) * HS + d;
        kv = ld(k, dtk, ko);
        vv = ld(v, dtv, ko);
      }
      ks[r * (HS + 1) + d] = kv;
      vs[r * HS + d] = vv;
    }
    __syncthreads();
    if (!valid || kb > last) continue;  // warp-uniform
    const int key = kb + lane;
    const bool vis = key <= last && (!segb || segb[key] == sq);
    float s = -INFINITY;
    if (vis) {
      const float* kr = ks + lane * (HS + 1);
      float dot = 0.0f;
      for (int d = 0; d < HS; d++) dot += qs[d] * kr[d];
      s = dot * scale;
    }
    const float mn = fmaxf(m, warp_max(s));
    const float p = vis ? expf(s - mn) : 0.0f;
    const float corr = m == -INFINITY ? 0.0f : expf(m - mn);
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int j = 0; j < MAXD; j++) acc[j] *= corr;
    const int nk = min(32, last - kb + 1);
    for (int kk = 0; kk < nk; kk++) {
      const float pk = __shfl_sync(0xffffffffu, p, kk);
#pragma unroll
      for (int j = 0; j < MAXD; j++) {
        const int d = lane + 32 * j;
        if (d < HS) acc[j] += pk * vs[kk * HS + d];
      }
    }
    m = mn;
  }
  if (!valid) return;
  const float inv = 1.0f / l;
#pragma unroll
  for (int j = 0; j < MAXD; j++) {
    const int d = lane + 32 * j;
    if (d < HS) st(out, dto, qo + d, acc[j] * inv);
  }
  if (lane == 0) st(lse, dtl, ((size_t)b * NH + h) * T + t, m + logf(l));
}

// dsum(B, NH, T) = sum over d of dout * out (one warp per row).
extern "C" __global__ void attn_bwd_dsum(float* dsum, const void* dout, int dtdo,
                                         const void* out, int dto, int B, int T, int NH,
                                         int HS) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;  // (b * NH + h) * T + t
  if (row >= B * NH * T) return;
  const int t = row % T, h = (row / T) % NH, b = row / (T * NH);
  const size_t qo = (((size_t)b * T + t) * NH + h) * HS;
  float s = 0.0f;
  for (int d = lane; d < HS; d += 32) s += ld(dout, dtdo, qo + d) * ld(out, dto, qo + d);
  s = warp_sum(s);
  if (lane == 0) dsum[row] = s;
}

// dq(B, T, NH, HS) = scale * sum over keys of p * (dp - dsum) * k, written. Tk = Tcap = T.
extern "C" __global__ void attn_bwd_dq(void* dq, int dtdq, const void* dout, int dtdo,
                                       const void* q, int dtq, const void* k, int dtk,
                                       const void* v, int dtv, const void* lse, int dtl,
                                       const float* dsum, int B, int T, int NH, int NKV,
                                       int HS, float scale, const int* seg) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;
  if (row >= B * NH * T) return;
  const int t = row % T, h = (row / T) % NH, b = row / (T * NH);
  const int kvh = h / (NH / NKV);
  float* qs = smem + warp * 2 * HS;
  float* gs = qs + HS;
  const size_t qo = (((size_t)b * T + t) * NH + h) * HS;
  for (int d = lane; d < HS; d += 32) {
    qs[d] = ld(q, dtq, qo + d);
    gs[d] = ld(dout, dtdo, qo + d);
  }
  __syncwarp();
  const float L = ld(lse, dtl, row), D = dsum[row];
  const int* segb = seg ? seg + (size_t)b * T : nullptr;  // (T) this row's segment ids
  const int sq = segb ? segb[t] : 0;
  float acc[MAXD];
#pragma unroll
  for (int j = 0; j < MAXD; j++) acc[j] = 0.0f;
  for (int kb = 0; kb <= t; kb += 32) {
    const int key = kb + lane;
    float ds = 0.0f;
    if (key <= t && (!segb || segb[key] == sq)) {
      const size_t ko = (((size_t)b * T + key) * NKV + kvh) * HS;
      float dot = 0.0f, dp = 0.0f;
      for (int d = 0; d < HS; d++) {
        dot += qs[d] * ld(k, dtk, ko + d);
        dp += gs[d] * ld(v, dtv, ko + d);
      }
      ds = expf(dot * scale - L) * (dp - D) * scale;
    }
    const int nk = min(32, t - kb + 1);
    for (int kk = 0; kk < nk; kk++) {
      const float w = __shfl_sync(0xffffffffu, ds, kk);
      const size_t ko = (((size_t)b * T + kb + kk) * NKV + kvh) * HS;
#pragma unroll
      for (int j = 0; j < MAXD; j++) {
        const int d = lane + 32 * j;
        if (d < HS) acc[j] += w * ld(k, dtk, ko + d);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < MAXD; j++) {
    const int d = lane + 32 * j;
    if (d < HS) st(dq, dtdq, qo + d, acc[j]);
  }
}

// dk, dv(B, T, NKV, HS), written: one warp per key row (b, s, kvh) sums over the query
// heads of its group and the queries t >= s that see it:
//   dv += p * dout,  dk += scale * p * (dp - dsum) * q.
extern "C" __global__ void attn_bwd_dkdv(void* dk, int dtdk, void* dv, int dtdv,
                                         const void* dout, int dtdo, const void* q, int dtq,
                                         const void* k, int dtk, const void* v, int dtv,
                                         const void* lse, int dtl, const float* dsum, int B,
                                         int T, int NH, int NKV, int HS, float scale,
                                         const int* seg) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;  // (b * T + s) * NKV + kvh
  if (row >= B * T * NKV) return;
  const int kvh = row % NKV, s = (row / NKV) % T, b = row / (NKV * T);
  const int group = NH / NKV;
  const int* segb = seg ? seg + (size_t)b * T : nullptr;  // (T) this row's segment ids
  const int sk = segb ? segb[s] : 0;
  float* ks = smem + warp * 2 * HS;
  float* vs = ks + HS;
  const size_t ko = (size_t)row * HS;
  for (int d = lane; d < HS; d += 32) {
    ks[d] = ld(k, dtk, ko + d);
    vs[d] = ld(v, dtv, ko + d);
  }
  __syncwarp();
  float accK[MAXD], accV[MAXD];
#pragma unroll
  for (int j = 0; j < MAXD; j++) accK[j] = accV[j] = 0.0f;
  for (int h = kvh * group; h < (kvh + 1) * group; h++) {
    for (int tb = s; tb < T; tb += 32) {
      const int t = tb + lane;
      float p = 0.0f, ds = 0.0f;
      if (t < T && (!segb || segb[t] == sk)) {
        const size_t qo = (((size_t)b * T + t) * NH + h) * HS;
        float dot = 0.0f, dp = 0.0f;
        for (int d = 0; d < HS; d++) {
          dot += ld(q, dtq, qo + d) * ks[d];
          dp += ld(dout, dtdo, qo + d) * vs[d];
        }
        const int r = (b * NH + h) * T + t;
        p = expf(dot * scale - ld(lse, dtl, r));
        ds = p * (dp - dsum[r]) * scale;
      }
      const int nq = min(32, T - tb);
      for (int qq = 0; qq < nq; qq++) {
        const float pw = __shfl_sync(0xffffffffu, p, qq);
        const float dw = __shfl_sync(0xffffffffu, ds, qq);
        const size_t qo = (((size_t)b * T + tb + qq) * NH + h) * HS;
#pragma unroll
        for (int j = 0; j < MAXD; j++) {
          const int d = lane + 32 * j;
          if (d < HS) {
            accV[j] += pw * ld(dout, dtdo, qo + d);
            accK[j] += dw * ld(q, dtq, qo + d);
          }
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < MAXD; j++) {
    const int d = lane + 32 * j;
    if (d < HS) {
      st(dk, dtdk, ko + d, accK[j]);
      st(dv, dtdv, ko + d, accV[j]);
    }
  }
}
