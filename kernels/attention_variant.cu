// Causal grouped-query attention with a sliding window and/or soft-capped scores (Mistral's
// sliding_window, Gemma 2), and Gemma 2's final logit soft-cap. CPU twins:
// src/backend/cpu/attention.ts (window, softcap in AttentionDims) and softcap/softcapBackward
// of src/backend/cpu/backend.ts.
//
// Layouts and the one-warp-per-row scheme are attention.cu's. The variant kernels add:
//   window > 0: the query at position p sees keys p - window + 1 .. p only;
//   cap > 0: a score is cap * tanh(scale * q.k / cap) (scale * q.k without it).
// In backward, d(score)/d(q.k) = scale * (1 - tanh^2) with a cap, scale without.
#include "common.cuh"

#define MAXD 8

// The score of a raw dot product and its derivative factor g = d(score)/d(dot).
__device__ __forceinline__ float var_score(float dot, float scale, float cap, float* g) {
  const float x = dot * scale;
  if (cap <= 0.0f) {
    *g = scale;
    return x;
  }
  const float th = tanhf(x / cap);
  *g = scale * (1.0f - th * th);
  return th * cap;
}

extern "C" __global__ void attn_fwd_var(void* out, int dto, void* lse, int dtl, const void* q,
                                        int dtq, const void* k, int dtk, const void* v,
                                        int dtv, int B, int T, int Tk, int Tcap, int NH,
                                        int NKV, int HS, float scale, const int* seg,
                                        int window, float cap) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;  // (b * NH + h) * T + t
  if (row >= B * NH * T) return;
  const int t = row % T, h = (row / T) % NH, b = row / (T * NH);
  const int kvh = h / (NH / NKV);
  const int last = Tk - T + t;
  const int first = window > 0 && last - window + 1 > 0 ? last - window + 1 : 0;
  const int* segb = seg ? seg + (size_t)b * T : nullptr;
  const int sq = segb ? segb[t] : 0;
  float* qs = smem + warp * HS;
  const size_t qo = (((size_t)b * T + t) * NH + h) * HS;
  for (int d = lane; d < HS; d += 32) qs[d] = ld(q, dtq, qo + d);
  __syncwarp();
  float acc[MAXD];
#pragma unroll
  for (int j = 0; j < MAXD; j++) acc[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int kb = first; kb <= last; kb += 32) {
    const int key = kb + lane;
    const bool vis = key <= last && (!segb || segb[key] == sq);
    float s = -INFINITY;
    if (vis) {
      const size_t ko = (((size_t)b * Tcap + key) * NKV + kvh) * HS;
      float dot = 0.0f, g;
      for (int d = 0; d < HS; d++) dot += qs[d] * ld(k, dtk, ko + d);
      s = var_score(dot, scale, cap, &g);
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

// dq(B, T, NH, HS) = sum over visible keys of p * (dp - dsum) * g * k, written. Tk = T.
extern "C" __global__ void attn_bwd_dq_var(void* dq, int dtdq, const void* dout, int dtdo,
                                           const void* q, int dtq, const void* k, int dtk,
                                           const void* v, int dtv, const void* lse, int dtl,
                                           const float* dsum, int B, int T, int NH, int NKV,
                                           int HS, float scale, const int* seg, int window,
                                           float cap) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;
  if (row >= B * NH * T) return;
  const int t = row % T, h = (row / T) % NH, b = row / (T * NH);
  const int kvh = h / (NH / NKV);
  const int first = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
  float* qs = smem + warp * 2 * HS;
  float* gs = qs + HS;
  const size_t qo = (((size_t)b * T + t) * NH + h) * HS;
  for (int d = lane; d < HS; d += 32) {
    qs[d] = ld(q, dtq, qo + d);
    gs[d] = ld(dout, dtdo, qo + d);
  }
  __syncwarp();
  const float L = ld(lse, dtl, row), D = dsum[row];
  const int* segb = seg ? seg + (size_t)b * T : nullptr;
  const int sq = segb ? segb[t] : 0;
  float acc[MAXD];
#pragma unroll
  for (int j = 0; j < MAXD; j++) acc[j] = 0.0f;
  for (int kb = first; kb <= t; kb += 32) {
    const int key = kb + lane;
    float ds = 0.0f;
    if (key <= t && (!segb || segb[key] == sq)) {
      const size_t ko = (((size_t)b * T + key) * NKV + kvh) * HS;
      float dot = 0.0f, dp = 0.0f, g;
      for (int d = 0; d < HS; d++) {
        dot += qs[d] * ld(k, dtk, ko + d);
        dp += gs[d] * ld(v, dtv, ko + d);
      }
      const float s = var_score(dot, scale, cap, &g);
      ds = expf(s - L) * (dp - D) * g;
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

// dk, dv(B, T, NKV, HS), written: one warp per key row s sums over the query heads of its
// group and the queries t = s .. s + window - 1 (all t >= s without a window) that see it.
extern "C" __global__ void attn_bwd_dkdv_var(void* dk, int dtdk, void* dv, int dtdv,
                                             const void* dout, int dtdo, const void* q,
                                             int dtq, const void* k, int dtk, const void* v,
                                             int dtv, const void* lse, int dtl,
                                             const float* dsum, int B, int T, int NH, int NKV,
                                             int HS, float scale, const int* seg, int window,
                                             float cap) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;  // (b * T + s) * NKV + kvh
  if (row >= B * T * NKV) return;
  const int kvh = row % NKV, s = (row / NKV) % T, b = row / (NKV * T);
  const int group = NH / NKV;
  const int end = window > 0 ? min(T, s + window) : T;  // queries s .. end - 1
  const int* segb = seg ? seg + (size_t)b * T : nullptr;
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
    for (int tb = s; tb < end; tb += 32) {
      const int t = tb + lane;
      float p = 0.0f, ds = 0.0f;
      if (t < end && (!segb || segb[t] == sk)) {
        const size_t qo = (((size_t)b * T + t) * NH + h) * HS;
        float dot = 0.0f, dp = 0.0f, g;
        for (int d = 0; d < HS; d++) {
          dot += ld(q, dtq, qo + d) * ks[d];
          dp += ld(dout, dtdo, qo + d) * vs[d];
        }
        const int r = (b * NH + h) * T + t;
        p = expf(var_score(dot, scale, cap, &g) - ld(lse, dtl, r));
        ds = p * (dp - dsum[r]) * g;
      }
      const int nq = min(32, end - tb);
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

// buf(n) = cap * tanh(buf / cap) in place (Gemma 2's final logit soft-cap).
extern "C" __global__ void logit_softcap(void* buf, int dt, int n, float cap) {
  GRID_STRIDE(i, (size_t)n) st(buf, dt, i, tanhf(ld(buf, dt, i) / cap) * cap);
}

// dbuf(n) *= 1 - (y / cap)^2, y(n) the soft-capped logits: the soft-cap's backward.
extern "C" __global__ void logit_softcap_bwd(void* dbuf, int dtd, const void* y, int dty, int n,
                                             float cap) {
  GRID_STRIDE(i, (size_t)n) {
    const float u = ld(y, dty, i) / cap;
    st(dbuf, dtd, i, ld(dbuf, dtd, i) * (1.0f - u * u));
  }
}
