// Row-wise layer kernels: RMSNorm, rotary embedding, SwiGLU, cross-entropy.
// CPU twins: src/backend/cpu/layers.ts (same formulas, same argument order).
#include "common.cuh"

// One warp per row (blockDim.x = 32 * rows per block).
// out(N, C) = inp * rstd * weight(C); rstd(N) = 1 / sqrt(mean(inp^2) + eps) is saved.
extern "C" __global__ void rmsnorm_fwd(void* out, int dto, void* rstd, int dtr,
                                       const void* inp, int dti, const void* weight, int dtw,
                                       int N, int C, float eps) {
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const size_t o = (size_t)row * C;
  float ss = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float x = ld(inp, dti, o + c);
    ss += x * x;
  }
  ss = warp_sum(ss);
  const float r = rsqrtf(ss / C + eps);
  if (lane == 0) st(rstd, dtr, row, r);
  // Use the stored value, as the CPU twin does, so backward sees the same rstd.
  const float rr = dtr == DT_BF16 ? __bfloat162float(__float2bfloat16_rn(r)) : r;
  for (int c = lane; c < C; c += 32) {
    st(out, dto, o + c, ld(inp, dti, o + c) * rr * ld(weight, dtw, c));
  }
}

// dinp(N, C) += rstd * w * dout - rstd^3 / C * inp * sum(dout * w * inp). One warp per row.
extern "C" __global__ void rmsnorm_bwd_dx(void* dinp, int dtdi, const void* dout, int dtdo,
                                          const void* inp, int dti, const void* weight, int dtw,
                                          const void* rstd, int dtr, int N, int C) {
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const size_t o = (size_t)row * C;
  const float r = ld(rstd, dtr, row);
  float dot = 0.0f;
  for (int c = lane; c < C; c += 32) {
    dot += ld(dout, dtdo, o + c) * ld(weight, dtw, c) * ld(inp, dti, o + c);
  }
  dot = warp_sum(dot);
  const float k = r * r * r * dot / C;
  for (int c = lane; c < C; c += 32) {
    const float g = r * ld(weight, dtw, c) * ld(dout, dtdo, o + c) - k * ld(inp, dti, o + c);
    st(dinp, dtdi, o + c, ld(dinp, dtdi, o + c) + g);
  }
}

// ---- Block-per-row RMSNorm (C % 8 == 0, row buffers and weight 16-byte aligned) ----------
// Thread t of the block holds vectors t, t + blockDim, ... (VPT of them, 8 columns each) of
// its row in registers: every load of the row is issued before the block reduction, and
// nothing is read twice, for VPT = ceil(C / 8 / blockDim) up to 4 (forward) or 2 (backward);
// wider rows are read twice (the second time mostly from L1/L2).

template <int VPT>
__device__ __forceinline__ void rmsnorm_fwd_row(void* out, int dto, void* rstd, int dtr,
                                                const void* inp, int dti, const void* weight,
                                                int dtw, int row, int C, float eps) {
  const size_t o = (size_t)row * C;
  const int nv = C >> 3;
  float x[VPT][8];
  for (int j = 0; j < VPT; j++) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v < nv) {
      ld8(inp, dti, o + (size_t)v * 8, x[j]);
    } else {
      for (int k = 0; k < 8; k++) x[j][k] = 0.0f;
    }
  }
  float ss = 0.0f;
  for (int j = 0; j < VPT; j++) {
    for (int k = 0; k < 8; k++) ss += x[j][k] * x[j][k];
  }
  ss = block_sum(ss);
  const float r = rsqrtf(ss / C + eps);
  if (threadIdx.x == 0) st(rstd, dtr, row, r);
  // Use the stored value, as the CPU twin does, so backward sees the same rstd.
  const float rr = dtr == DT_BF16 ? __bfloat162float(__float2bfloat16_rn(r)) : r;
  for (int j = 0; j < VPT; j++) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v >= nv) break;
    float w[8];
    ld8(weight, dtw, (size_t)v * 8, w);
    for (int k = 0; k < 8; k++) x[j][k] = x[j][k] * rr * w[k];
    st8(out, dto, o + (size_t)v * 8, x[j]);
  }
}

// rmsnorm_fwd (same arguments and results) with one block per row: grid N.
extern "C" __global__ void rmsnorm_fwd_vec(void* out, int dto, void* rstd, int dtr,
                                           const void* inp, int dti, const void* weight,
                                           int dtw, int N, int C, float eps) {
  const int row = blockIdx.x;
  if (row >= N) return;
  const int vpt = ((C >> 3) + blockDim.x - 1) / blockDim.x;
  if (vpt <= 1) {
    rmsnorm_fwd_row<1>(out, dto, rstd, dtr, inp, dti, weight, dtw, row, C, eps);
  } else if (vpt <= 2) {
    rmsnorm_fwd_row<2>(out, dto, rstd, dtr, inp, dti, weight, dtw, row, C, eps);
  } else if (vpt <= 4) {
    rmsnorm_fwd_row<4>(out, dto, rstd, dtr, inp, dti, weight, dtw, row, C, eps);
  } else {
    // Wider rows: re-read the row.
    const size_t o = (size_t)row * C;
    float ss = 0.0f;
    for (int c = threadIdx.x * 8; c < C; c += blockDim.x * 8) {
      float x[8];
      ld8(inp, dti, o + c, x);
      for (int k = 0; k < 8; k++) ss += x[k] * x[k];
    }
    ss = block_sum(ss);
    const float r = rsqrtf(ss / C + eps);
    if (threadIdx.x == 0) st(rstd, dtr, row, r);
    const float rr = dtr == DT_BF16 ? __bfloat162float(__float2bfloat16_rn(r)) : r;
    for (int c = threadIdx.x * 8; c < C; c += blockDim.x * 8) {
      float x[8], w[8];
      ld8(inp, dti, o + c, x);
      ld8(weight, dtw, c, w);
      for (int k = 0; k < 8; k++) x[k] = x[k] * rr * w[k];
      st8(out, dto, o + c, x);
    }
  }
}

template <int VPT>
__device__ __forceinline__ void rmsnorm_bwd_dx_row(void* dinp, int dtdi, const void* dout,
                                                   int dtdo, const void* inp, int dti,
                                                   const void* weight, int dtw,
                                                   const void* rstd, int dtr, int row, int C) {
  const size_t o = (size_t)row * C;
  const int nv = C >> 3;
  float dy[VPT][8], x[VPT][8], d[VPT][8];
  for (int j = 0; j < VPT; j++) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v < nv) {
      ld8(dout, dtdo, o + (size_t)v * 8, dy[j]);
      ld8(inp, dti, o + (size_t)v * 8, x[j]);
      ld8(dinp, dtdi, o + (size_t)v * 8, d[j]);
    }
  }
  const float r = ld(rstd, dtr, row);
  float dot = 0.0f;
  for (int j = 0; j < VPT; j++) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v >= nv) break;
    float w[8];
    ld8(weight, dtw, (size_t)v * 8, w);
    for (int k = 0; k < 8; k++) dot += dy[j][k] * w[k] * x[j][k];
  }
  dot = block_sum(dot);
  const float kk = r * r * r * dot / C;
  for (int j = 0; j < VPT; j++) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v >= nv) break;
    float w[8];
    ld8(weight, dtw, (size_t)v * 8, w);
    for (int k = 0; k < 8; k++) {
      const float g = r * w[k] * dy[j][k] - kk * x[j][k];
      d[j][k] = d[j][k] + g;
    }
    st8(dinp, dtdi, o + (size_t)v * 8, d[j]);
  }
}

// rmsnorm_bwd_dx (same arguments and results) with one block per row: grid N.
extern "C" __global__ void rmsnorm_bwd_dx_vec(void* dinp, int dtdi, const void* dout, int dtdo,
                                              const void* inp, int dti, const void* weight,
                                              int dtw, const void* rstd, int dtr, int N,
                                              int C) {
  const int row = blockIdx.x;
  if (row >= N) return;
  const int vpt = ((C >> 3) + blockDim.x - 1) / blockDim.x;
  if (vpt <= 1) {
    rmsnorm_bwd_dx_row<1>(dinp, dtdi, dout, dtdo, inp, dti, weight, dtw, rstd, dtr, row, C);
  } else if (vpt <= 2) {
    rmsnorm_bwd_dx_row<2>(dinp, dtdi, dout, dtdo, inp, dti, weight, dtw, rstd, dtr, row, C);
  } else {
    // Wider rows: re-read the row.
    const size_t o = (size_t)row * C;
    const float r = ld(rstd, dtr, row);
    float dot = 0.0f;
    for (int c = threadIdx.x * 8; c < C; c += blockDim.x * 8) {
      float dy[8], w[8], x[8];
      ld8(dout, dtdo, o + c, dy);
      ld8(weight, dtw, c, w);
      ld8(inp, dti, o + c, x);
      for (int k = 0; k < 8; k++) dot += dy[k] * w[k] * x[k];
    }
    dot = block_sum(dot);
    const float kk = r * r * r * dot / C;
    for (int c = threadIdx.x * 8; c < C; c += blockDim.x * 8) {
      float dy[8], w[8], x[8], d[8];
      ld8(dout, dtdo, o + c, dy);
      ld8(weight, dtw, c, w);
      ld8(inp, dti, o + c, x);
      ld8(dinp, dtdi, o + c, d);
      for (int k = 0; k < 8; k++) {
        const float g = r * w[k] * dy[k] - kk * x[k];
        d[k] = d[k] + g;
      }
      st8(dinp, dtdi, o + c, d);
    }
  }
}

// dweight(C) += sum over rows of dout * inp * rstd. One thread per column (deterministic).
extern "C" __global__ void rmsnorm_bwd_dw(void* dweight, int dtw, const void* dout, int dtdo,
                                          const void* inp, int dti, const void* rstd, int dtr,
                                          int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.0f;
  for (int r = 0; r < N; r++) {
    const size_t j = (size_t)r * C + c;
    s += ld(dout, dtdo, j) * ld(inp, dti, j) * ld(rstd, dtr, r);
  }
  st(dweight, dtw, c, ld(dweight, dtw, c) + s);
}

// First pass of dweight(C) += sum over rows of dout * inp * rstd, vectorised (C % 8 == 0,
// dout and inp 16-byte aligned): block (x, y) covers columns x*256 .. x*256 + 256 of the
// rows y*chunk .. (y+1)*chunk; warp w (of 8) takes every 8th row from w, each lane 8
// columns; partial(R, C)[y] = the block's column sums, added over warps in a fixed order.
// The second pass (bias_grad) sums partial's R rows in order, so the result is
// deterministic for a given N and chunk.
extern "C" __global__ void rmsnorm_dw_partial(float* partial, const void* dout, int dtdo,
                                              const void* inp, int dti, const void* rstd,
                                              int dtr, int N, int C, int chunk) {
  __shared__ float red[8][257];  // (warp, column); padded row against bank conflicts
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = blockIdx.x * 256 + lane * 8;
  const int r0 = blockIdx.y * chunk, r1 = min(N, r0 + chunk);
  float acc[8];
  for (int k = 0; k < 8; k++) acc[k] = 0.0f;
  if (c < C) {
#pragma unroll 4
    for (int r = r0 + warp; r < r1; r += 8) {
      const size_t o = (size_t)r * C + c;
      float dy[8], x[8];
      ld8(dout, dtdo, o, dy);
      ld8(inp, dti, o, x);
      const float rr = ld(rstd, dtr, r);
      for (int k = 0; k < 8; k++) acc[k] += dy[k] * x[k] * rr;
    }
  }
  for (int k = 0; k < 8; k++) red[warp][lane * 8 + k] = acc[k];
  __syncthreads();
  const int col = blockIdx.x * 256 + threadIdx.x;
  if (threadIdx.x < 256 && col < C) {
    float s = 0.0f;
    for (int w = 0; w < 8; w++) s += red[w][threadIdx.x];
    partial[(size_t)blockIdx.y * C + col] = s;
  }
}

// Rotary embedding in place on x(B, T, NH, HS); one thread per rotated pair.
// cos/sin(Tmax, HS/2); token t at position pos + t, or at positions[b * T + t] when the
// (B, T) int buffer `positions` is given (packed samples). half != 0: pairs (i, i + HS/2)
// (Hugging Face), else (2i, 2i + 1) (Meta). inverse != 0 rotates by the negative angle.
extern "C" __global__ void rope(void* x, int dtx, const void* cosT, const void* sinT, int dtc,
                                int B, int T, int NH, int HS, int pos, int half, int inverse,
                                const int* positions) {
  const int hh = HS >> 1;
  const size_t rows = (size_t)B * T * NH;  // (b * T + t) * NH + h
  // The vector paths index in 32 bits: x has at most 2^31 - 1 elements (the host checks),
  // so units, rows and the grid-stride step stay far below 2^32.
  if (aligned16(x) && aligned16(cosT) && aligned16(sinT)) {
    if (half && (hh & 7) == 0) {
      // Hugging Face pairs: a thread rotates 8 pairs (i .. i + 8, i + hh .. i + hh + 8) with
      // two 8-element loads of x and one of cos and sin each.
      const unsigned per = hh >> 3;
      const unsigned units = (unsigned)rows * per;
      for (unsigned u = blockIdx.x * blockDim.x + threadIdx.x; u < units;
           u += gridDim.x * blockDim.x) {
        const int i = (int)(u % per) * 8;
        const unsigned bth = u / per;
        const unsigned bt = bth / (unsigned)NH;  // b * T + t
        const int p = positions ? positions[bt] : pos + (int)(bt % (unsigned)T);
        const size_t tab = (size_t)p * hh + i;
        float c[8], s[8], x0[8], x1[8];
        ld8(cosT, dtc, tab, c);
        ld8(sinT, dtc, tab, s);
        const size_t j = (size_t)bth * HS + i;
        ld8(x, dtx, j, x0);
        ld8(x, dtx, j + hh, x1);
        float y0[8], y1[8];
        for (int k = 0; k < 8; k++) {
          const float sk = inverse ? -s[k] : s[k];
          y0[k] = x0[k] * c[k] - x1[k] * sk;
          y1[k] = x0[k] * sk + x1[k] * c[k];
        }
        st8(x, dtx, j, y0);
        st8(x, dtx, j + hh, y1);
      }
      return;
    }
    if (!half && (hh & 3) == 0) {
      // Meta pairs (2i, 2i + 1): a thread rotates 4 neighbouring pairs, one 8-element load.
      const unsigned per = hh >> 2;
      const unsigned units = (unsigned)rows * per;
      for (unsigned u = blockIdx.x * blockDim.x + threadIdx.x; u < units;
           u += gridDim.x * blockDim.x) {
        const int i = (int)(u % per) * 4;
        const unsigned bth = u / per;
        const unsigned bt = bth / (unsigned)NH;  // b * T + t
        const int p = positions ? positions[bt] : pos + (int)(bt % (unsigned)T);
        const size_t tab = (size_t)p * hh + i;
        float c[4], s[4], v[8];
        ld4(cosT, dtc, tab, c);
        ld4(sinT, dtc, tab, s);
        const size_t j = (size_t)bth * HS + 2 * i;
        ld8(x, dtx, j, v);
        for (int k = 0; k < 4; k++) {
          const float sk = inverse ? -s[k] : s[k];
          const float x0 = v[2 * k], x1 = v[2 * k + 1];
          v[2 * k] = x0 * c[k] - x1 * sk;
          v[2 * k + 1] = x0 * sk + x1 * c[k];
        }
        st8(x, dtx, j, v);
      }
      return;
    }
  }
  GRID_STRIDE(idx, rows * hh) {
    const int i = idx % hh;
    const size_t bth = idx / hh;  // (b * T + t) * NH + h
    const int t = (bth / NH) % T;
    const int p = positions ? positions[bth / NH] : pos + t;  // bth / NH = b * T + t
    const size_t tab = (size_t)p * hh + i;
    const float c = ld(cosT, dtc, tab);
    const float s = inverse ? -ld(sinT, dtc, tab) : ld(sinT, dtc, tab);
    const size_t j = bth * HS + (half ? i : 2 * i);
    const size_t j2 = j + (half ? hh : 1);
    const float x0 = ld(x, dtx, j), x1 = ld(x, dtx, j2);
    st(x, dtx, j, x0 * c - x1 * s);
    st(x, dtx, j2, x0 * s + x1 * c);
  }
}

// Partial rotary (Hugging Face partial_rotary_factor): rope on the first RD dims of each head
// of x(B, T, NH, HS), the other HS - RD dims untouched; cos/sin(Tmax, RD/2). One pair a thread.
extern "C" __global__ void rope_partial(void* x, int dtx, const void* cosT, const void* sinT,
                                        int dtc, int B, int T, int NH, int HS, int RD, int pos,
                                        int half, int inverse, const int* positions) {
  const int hh = RD >> 1;
  const size_t rows = (size_t)B * T * NH;  // (b * T + t) * NH + h
  GRID_STRIDE(idx, rows * hh) {
    const int i = idx % hh;
    const size_t bth = idx / hh;  // (b * T + t) * NH + h
    const int t = (bth / NH) % T;
    const int p = positions ? positions[bth / NH] : pos + t;  // bth / NH = b * T + t
    const size_t tab = (size_t)p * hh + i;
    const float c = ld(cosT, dtc, tab);
    const float s = inverse ? -ld(sinT, dtc, tab) : ld(sinT, dtc, tab);
    const size_t j = bth * HS + (half ? i : 2 * i);
    const size_t j2 = j + (half ? hh : 1);
    const float x0 = ld(x, dtx, j), x1 = ld(x, dtx, j2);
    st(x, dtx, j, x0 * c - x1 * s);
    st(x, dtx, j2, x0 * s + x1 * c);
  }
}

// out(n) = silu(gate) * up.
extern "C" __global__ void swiglu_fwd(void* out, int dto, const void* gate, int dtg,
                                      const void* up, int dtu, int n) {
  size_t start = 0;
  if (aligned16(out) && aligned16(gate) && aligned16(up)) {
    for (size_t i = GRID_TID * 8; i + 8 <= (size_t)n; i += GRID_THREADS * 8) {
      float g[8], u[8];
      ld8(gate, dtg, i, g);
      ld8(up, dtu, i, u);
      for (int k = 0; k < 8; k++) g[k] = g[k] / (1.0f + expf(-g[k])) * u[k];
      st8(out, dto, i, g);
    }
    start = (size_t)n & ~(size_t)7;
  }
  for (size_t i = start + GRID_TID; i < (size_t)n; i += GRID_THREADS) {
    const float g = ld(gate, dtg, i);
    st(out, dto, i, g / (1.0f + expf(-g)) * ld(up, dtu, i));
  }
}

// dgate = dout * up * sig * (1 + g (1 - sig)), dup = dout * g * sig; written. dgate/dup
// may alias gate/up: each thread reads its element before writing it.
extern "C" __global__ void swiglu_bwd(void* dgate, int dtdg, void* dup, int dtdu,
                                      const void* dout, int dtdo, const void* gate, int dtg,
                                      const void* up, int dtu, int n) {
  size_t start = 0;
  if (aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) &&
      aligned16(up)) {
    for (size_t i = GRID_TID * 8; i + 8 <= (size_t)n; i += GRID_THREADS * 8) {
      float g[8], u[8], d[8];
      ld8(gate, dtg, i, g);
      ld8(up, dtu, i, u);
      ld8(dout, dtdo, i, d);
      float dg[8], du[8];
      for (int k = 0; k < 8; k++) {
        const float sig = 1.0f / (1.0f + expf(-g[k]));
        dg[k] = d[k] * u[k] * sig * (1.0f + g[k] * (1.0f - sig));
        du[k] = d[k] * g[k] * sig;
      }
      st8(dgate, dtdg, i, dg);
      st8(dup, dtdu, i, du);
    }
    start = (size_t)n & ~(size_t)7;
  }
  for (size_t i = start + GRID_TID; i < (size_t)n; i += GRID_THREADS) {
    const float g = ld(gate, dtg, i), u = ld(up, dtu, i), d = ld(dout, dtdo, i);
    const float sig = 1.0f / (1.0f + expf(-g));
    st(dgate, dtdg, i, d * u * sig * (1.0f + g * (1.0f - sig)));
    st(dup, dtdu, i, d * g * sig);
  }
}

// One row of cross_entropy (below) with 8-element loads (V % 8 == 0, buffers 16-byte
// aligned): a single online pass keeps each thread's running max m and sum of exp(x - m),
// rescaling the sum when the max grows; the block then combines (m, sum) pairs. The
// gradient pass re-reads the row (two vectors per step per thread, for loads in flight).
// Any blockDim (a multiple of 32, at most 1024) works.
__device__ __forceinline__ void cross_entropy_row_vec(void* losses, int dtl, void* dlogits,
                                                      int dtd, const void* logits, int dtlg,
                                                      int tgt, int row, int V,
                                                      float grad_scale) {
  const size_t o = (size_t)row * V;
  const int nv = V >> 3;
  const int bd = blockDim.x;
  if (tgt == -100 || tgt < 0 || tgt >= V) {
    if (threadIdx.x == 0) st(losses, dtl, row, tgt == -100 ? 0.0f : NAN);
    if (dlogits != nullptr) {
      float z[8];
      for (int k = 0; k < 8; k++) z[k] = 0.0f;
      for (int v = threadIdx.x; v < nv; v += bd) st8(dlogits, dtd, o + (size_t)v * 8, z);
    }
    return;
  }
  // Read before the reductions' barriers, so before any thread overwrites the row.
  const float xt = threadIdx.x == 0 ? ld(logits, dtlg, o + tgt) : 0.0f;
  float m = -INFINITY, s = 0.0f;
  for (int v = threadIdx.x; v < nv; v += 2 * bd) {
    const int v2 = v + bd;
    float a[8], b[8];
    ld8(logits, dtlg, o + (size_t)v * 8, a);
    if (v2 < nv) {
      ld8(logits, dtlg, o + (size_t)v2 * 8, b);
    } else {
      for (int k = 0; k < 8; k++) b[k] = -INFINITY;
    }
    float vm = a[0];
    for (int k = 1; k < 8; k++) vm = fmaxf(vm, a[k]);
    for (int k = 0; k < 8; k++) vm = fmaxf(vm, b[k]);
    if (vm > m) {
      s *= expf(m - vm);  // m = -inf: s is 0 and stays 0
      m = vm;
    }
    if (m == -INFINITY) continue;  // only -inf so far: each adds exp(-inf) = 0
    for (int k = 0; k < 8; k++) s += expf(a[k] - m);
    for (int k = 0; k < 8; k++) s += expf(b[k] - m);
  }
  const float mx = block_max(m);
  const float part = m == -INFINITY ? 0.0f : s * expf(m - mx);
  const float sum = block_sum(part);  // ends with a barrier
  const float lse = mx + logf(sum);
  if (threadIdx.x == 0) st(losses, dtl, row, lse - xt);
  if (dlogits == nullptr) return;
  // Backwards over the row: the end of the row, read last above, is the likeliest still in L2.
  for (int base = (nv - 1) / (2 * bd) * (2 * bd); base >= 0; base -= 2 * bd) {
    const int v = base + threadIdx.x, v2 = v + bd;
    if (v >= nv) continue;
    float a[8], b[8];
    ld8(logits, dtlg, o + (size_t)v * 8, a);
    if (v2 < nv) ld8(logits, dtlg, o + (size_t)v2 * 8, b);
    for (int k = 0; k < 8; k++) {
      float g = expf(a[k] - lse) * grad_scale;
      if (v * 8 + k == tgt) g -= grad_scale;
      a[k] = g;
    }
    st8(dlogits, dtd, o + (size_t)v * 8, a);
    if (v2 < nv) {
      for (int k = 0; k < 8; k++) {
        float g = expf(b[k] - lse) * grad_scale;
        if (v2 * 8 + k == tgt) g -= grad_scale;
        b[k] = g;
      }
      st8(dlogits, dtd, o + (size_t)v2 * 8, b);
    }
  }
}

// Cross-entropy, one block per row of logits(N, V). losses(N) = lse - logits[target]
// (0 where target = -100; NaN for any other out-of-range target, which the host checks).
// If dlogits is non-null it is written as (softmax - onehot) * gradScale, zero rows for
// ignored targets. dlogits may alias logits: all reads of a row finish (barrier) before
// the row is written.
extern "C" __global__ void cross_entropy(void* losses, int dtl, void* dlogits, int dtd,
                                         const void* logits, int dtlg, const int* targets,
                                         int N, int V, float grad_scale) {
  const int row = blockIdx.x;
  if (row >= N) return;
  const size_t o = (size_t)row * V;
  const int tgt = targets[row];
  if ((V & 7) == 0 && aligned16(logits) && (dlogits == nullptr || aligned16(dlogits))) {
    cross_entropy_row_vec(losses, dtl, dlogits, dtd, logits, dtlg, tgt, row, V, grad_scale);
    return;
  }
  if (tgt == -100 || tgt < 0 || tgt >= V) {
    if (threadIdx.x == 0) st(losses, dtl, row, tgt == -100 ? 0.0f : NAN);
    if (dlogits != nullptr) {
      for (int j = threadIdx.x; j < V; j += blockDim.x) st(dlogits, dtd, o + j, 0.0f);
    }
    return;
  }
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, ld(logits, dtlg, o + j));
  mx = block_max(mx);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) sum += expf(ld(logits, dtlg, o + j) - mx);
  sum = block_sum(sum);  // ends with a barrier
  const float lse = mx + logf(sum);
  const float xt = ld(logits, dtlg, o + tgt);
  if (threadIdx.x == 0) st(losses, dtl, row, lse - xt);
  if (dlogits == nullptr) return;
  __syncthreads();  // every thread has read logits[tgt] before anyone overwrites it
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    float g = expf(ld(logits, dtlg, o + j) - lse) * grad_scale;
    if (j == tgt) g -= grad_scale;
    st(dlogits, dtd, o + j, g);
  }
}
