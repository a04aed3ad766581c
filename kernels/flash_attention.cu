// Causal grouped-query attention on bf16 tensor cores, FlashAttention-2 style: tiles of
// 64 queries by 64 keys, the scores of a tile live only in registers, online softmax in
// base 2. CPU twin and specification: src/backend/cpu/attention.ts (the same masks and
// outputs as kernels/attention.cu, which serves every other dtype and head size).
//
// Layouts (all bf16 unless said): q, out, dout (B, T, NH, HS); k, v (B, Tcap, NKV, HS), the
// first Tk rows valid; lse (B, NH, T) f32, natural log; dsum (B, NH, T) f32; dq_acc
// (B, T, NH, HS) f32, zeroed by the caller, accumulated with atomics. Query t sits at
// position Tk - T + t and sees keys up to it; with seg (B, T) int (packed samples, Tk = T)
// only keys of its own segment. Query head h reads key/value head h / (NH / NKV).
// Every row pointer is 16-byte aligned (HS a multiple of 8, buffers checked by the caller).
//
// Precision: products in fp32 on bf16 inputs; the probabilities P and the score gradient
// dS are rounded to bf16 before their products (as FlashAttention does); softmax, lse and
// every accumulator stay fp32.
#include "mma.cuh"

#define FA_WARPS 4
#define FA_BK 64              // keys per tile
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

// Copy `rows` rows of HS bf16 from global (row r at src + r * stride elements, rows at or
// past `valid` read as zeros) into shared memory rows of `ld` elements.
template <int HS>
__device__ __forceinline__ void load_tile(uint16_t* dst, int ld, const uint16_t* src,
                                          size_t stride, int rows, int valid) {
  for (int idx = threadIdx.x; idx < rows * (HS / 8); idx += FA_WARPS * 32) {
    const int r = idx / (HS / 8), c = (idx % (HS / 8)) * 8;
    u128 v = {0u, 0u, 0u, 0u};
    if (r < valid) v = *reinterpret_cast<const u128*>(src + (size_t)r * stride + c);
    *reinterpret_cast<u128*>(dst + r * ld + c) = v;
  }
}

// The same copy with cp.async (not waited for here).
template <int HS>
__device__ __forceinline__ void load_tile_async(uint16_t* dst, int ld, const uint16_t* src,
                                                size_t stride, int rows, int valid) {
  for (int idx = threadIdx.x; idx < rows * (HS / 8); idx += FA_WARPS * 32) {
    const int r = idx / (HS / 8), c = (idx % (HS / 8)) * 8;
    const bool ok = r < valid;
    cp_async16(dst + r * ld + c, src + (ok ? (size_t)r * stride + c : 0), ok);
  }
}

// Forward. Grid (ceil(T / 64), B * NH), 128 threads; warp w owns query rows 16w..16w+15 of
// the block's 64. Dynamic shared memory: K and V tiles, double-buffered (the next pair
// loads while this one is used), 4 * 64 * (HS + 8) bf16.
template <int HS>
__device__ __forceinline__ void flash_fwd(uint16_t* out, float* lse, const uint16_t* q,
                                          const uint16_t* k, const uint16_t* v, int B, int T,
                                          int Tk, int Tcap, int NH, int NKV, float scale,
                                          const int* seg) {
  extern __shared__ float smem[];
  constexpr int LD = HS + 8;  // +8 bf16 per row: the 8 row groups of a fragment hit distinct banks
  constexpr int TILE = FA_BK * LD;
  uint16_t* kbuf = reinterpret_cast<uint16_t*>(smem);  // [2][FA_BK][LD]
  uint16_t* vbuf = kbuf + 2 * TILE;                      // [2][FA_BK][LD]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int lr = lane & 7, l8 = (lane >> 3) & 1, l16 = lane >> 4;  // ldmatrix row address parts
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH, kvh = h / (NH / NKV);
  // The longest query tiles first, so the short ones fill the tail of the grid.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * 64;
  const int off = Tk - T;
  const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  const int* segb = seg ? seg + (size_t)b * T : nullptr;  // (T)
  int srow[2] = {0, 0};
  uint32_t qf[HS / 16][4];  // this warp's 16 query rows as A fragments
  for (int i = 0; i < 2; i++) {
    const bool ok = row[i] < T;
    if (segb && ok) srow[i] = segb[row[i]];
    const uint16_t* qr = q + (((size_t)b * T + (ok ? row[i] : 0)) * NH + h) * HS;
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++) {
      qf[kk][i] = ok ? ld_pair(qr + 16 * kk + 2 * c) : 0u;
      qf[kk][i + 2] = ok ? ld_pair(qr + 16 * kk + 8 + 2 * c) : 0u;
    }
  }
  float o[HS / 8][4];
#pragma unroll
  for (int n = 0; n < HS / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const float sl2 = scale * LOG2E;
  const int kend = min(off + min(q0 + 63, T - 1) + 1, Tk);  // keys [0, kend) can be seen
  const size_t kvstride = (size_t)NKV * HS;
  const uint16_t* kb = k + ((size_t)b * Tcap * NKV + kvh) * HS;
  const uint16_t* vb = v + ((size_t)b * Tcap * NKV + kvh) * HS;
  const int ntiles = (kend + FA_BK - 1) / FA_BK;
  load_tile_async<HS>(kbuf, LD, kb, kvstride, FA_BK, Tk);
  load_tile_async<HS>(vbuf, LD, vb, kvstride, FA_BK, Tk);
  cp_async_commit();
  for (int it = 0; it < ntiles; it++) {
    const int k0 = it * FA_BK;
    if (it + 1 < ntiles) {  // prefetch the next tiles into the other buffers
      const int k1 = k0 + FA_BK, nb = (it + 1) & 1;
      load_tile_async<HS>(kbuf + nb * TILE, LD, kb + (size_t)k1 * kvstride, kvstride, FA_BK,
                          Tk - k1);
      load_tile_async<HS>(vbuf + nb * TILE, LD, vb + (size_t)k1 * kvstride, kvstride, FA_BK,
                          Tk - k1);
    }
    cp_async_commit();
    cp_async_wait_1();  // this tile's copies have landed
    __syncthreads();    // ... everyone's
    const uint16_t* ks = kbuf + (it & 1) * TILE;
    const uint16_t* vs = vbuf + (it & 1) * TILE;
    float s[FA_BK / 8][4];
#pragma unroll
    for (int n = 0; n < FA_BK / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++) {
#pragma unroll
      for (int np = 0; np < FA_BK / 16; np++) {  // key tiles 2np, 2np + 1
        uint32_t kr[4];
        ldsm_x4(kr, ks + (16 * np + lr + 8 * l16) * LD + 16 * kk + 8 * l8);
        mma_16816(s[2 * np], qf[kk], kr);
        mma_16816(s[2 * np + 1], qf[kk], kr + 2);
      }
    }
    // Mask (causal, the end of the keys, segments) unless every key of the tile is visible
    // to every row of this warp. Scores stay unscaled; exp2 below scales them into base 2.
    const bool full = !segb && k0 + FA_BK - 1 <= off + q0 + warp * 16 && k0 + FA_BK <= Tk;
    if (!full) {
#pragma unroll
      for (int n = 0; n < FA_BK / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int i = e >> 1, key = k0 + n * 8 + 2 * c + (e & 1);
          const bool vis = key <= off + row[i] && key < Tk && (!segb || segb[key] == srow[i]);
          if (!vis) s[n][e] = -INFINITY;
        }
      }
    }
    // Online softmax per row (a row spans the 4 lanes of a quad).
#pragma unroll
    for (int i = 0; i < 2; i++) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < FA_BK / 8; n++) mx = fmaxf(mx, fmaxf(s[n][2 * i], s[n][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mn = fmaxf(m[i], mx * sl2);  // running max in base-2 units
      const float base = mn == -INFINITY ? 0.0f : mn;  // nothing seen yet: p stays 0
      const float corr = exp2f(m[i] - base);           // m = -inf gives 0
      float sum = 0.0f;
#pragma unroll
      for (int n = 0; n < FA_BK / 8; n++) {
        s[n][2 * i] = exp2f(fmaf(s[n][2 * i], sl2, -base));
        s[n][2 * i + 1] = exp2f(fmaf(s[n][2 * i + 1], sl2, -base));
        sum += s[n][2 * i] + s[n][2 * i + 1];
      }
      l[i] = l[i] * corr + sum;  // this lane's share; the quad sums at the end
#pragma unroll
      for (int n = 0; n < HS / 8; n++) {
        o[n][2 * i] *= corr;
        o[n][2 * i + 1] *= corr;
      }
      m[i] = mn;
    }
    // O += P V, P straight from the score registers as A fragments.
#pragma unroll
    for (int kk = 0; kk < FA_BK / 16; kk++) {
      uint32_t pf[4];
      acc_to_a(pf, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int np = 0; np < HS / 16; np++) {  // head-dim tiles 2np, 2np + 1
        uint32_t vr[4];
        ldsm_x4_trans(vr, vs + (16 * kk + lr + 8 * l8) * LD + 16 * np + 8 * l16);
        mma_16816(o[2 * np], pf, vr);
        mma_16816(o[2 * np + 1], pf, vr + 2);
      }
    }
    __syncthreads();  // this tile is consumed before the next iteration refills its buffers
  }
#pragma unroll
  for (int i = 0; i < 2; i++) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    if (row[i] >= T) continue;
    const float inv = 1.0f / l[i];
    uint16_t* orow = out + (((size_t)b * T + row[i]) * NH + h) * HS;
#pragma unroll
    for (int n = 0; n < HS / 8; n++) {
      *reinterpret_cast<uint32_t*>(orow + n * 8 + 2 * c) =
          pack_bf16(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
    if (c == 0) lse[((size_t)b * NH + h) * T + row[i]] = (m[i] + log2f(l[i])) * LN2;
  }
}

// Backward (Tk = Tcap = T). Grid (ceil(T / 64), B * NKV), 128 threads: a block owns 64 keys
// of one key/value head, warp w keys 16w..16w+15, and walks every query head of the group
// and every query tile of BQ rows that can see them. It writes dk, dv (dtype codes dtk,
// dtv) and adds dq into dq_acc with atomics.
// Dynamic shared memory (bf16): Q and dO tiles [2][BQ][HS + 8] (double-buffered: the next
// (head, query tile) loads while this one is used), the K tile [64][HS + 8], dS
// [BQ][64 + 8]; then lse and dsum of the tile's queries (f32, [2][BQ] each).
template <int HS, int BQ>
__device__ __forceinline__ void flash_bwd(float* dq_acc, void* dk, int dtk, void* dv, int dtv,
                                          const uint16_t* dout, const uint16_t* q,
                                          const uint16_t* k, const uint16_t* v,
                                          const float* lse, const float* dsum, int B, int T,
                                          int NH, int NKV, float scale, const int* seg) {
  extern __shared__ float smem[];
  constexpr int LD = HS + 8, LDS = FA_BK + 8;
  constexpr int QT = BQ * LD;
  uint16_t* qbuf = reinterpret_cast<uint16_t*>(smem);  // [2][BQ][LD]
  uint16_t* dobuf = qbuf + 2 * QT;                       // [2][BQ][LD]
  uint16_t* ks = dobuf + 2 * QT;                         // [FA_BK][LD]
  uint16_t* dss = ks + FA_BK * LD;                       // [BQ][LDS]  dS as (query, key)
  float* lsebuf = reinterpret_cast<float*>(dss + BQ * LDS);  // [2][BQ] lse (natural log)
  float* dsumbuf = lsebuf + 2 * BQ;                           // [2][BQ]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int lr = lane & 7, l8 = (lane >> 3) & 1, l16 = lane >> 4;  // ldmatrix row address parts
  const int bkv = blockIdx.y, b = bkv / NKV, kvh = bkv % NKV, group = NH / NKV;
  const int k0 = blockIdx.x * FA_BK;
  const int key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};  // this lane's two keys
  const int* segb = seg ? seg + (size_t)b * T : nullptr;           // (T)
  int skey[2] = {0, 0};
  const size_t kvstride = (size_t)NKV * HS, qstride = (size_t)NH * HS;
  uint32_t kf[HS / 16][4], vf[HS / 16][4];  // this warp's 16 keys of K and V as A fragments
  for (int i = 0; i < 2; i++) {
    const bool ok = key[i] < T;
    if (segb && ok) skey[i] = segb[key[i]];
    const size_t ko = (((size_t)b * T + (ok ? key[i] : 0)) * NKV + kvh) * HS;
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++) {
      kf[kk][i] = ok ? ld_pair(k + ko + 16 * kk + 2 * c) : 0u;
      kf[kk][i + 2] = ok ? ld_pair(k + ko + 16 * kk + 8 + 2 * c) : 0u;
      vf[kk][i] = ok ? ld_pair(v + ko + 16 * kk + 2 * c) : 0u;
      vf[kk][i + 2] = ok ? ld_pair(v + ko + 16 * kk + 8 + 2 * c) : 0u;
    }
  }
  load_tile<HS>(ks, LD, k + ((size_t)b * T * NKV + kvh) * HS + (size_t)k0 * kvstride, kvstride,
                FA_BK, T - k0);
  float dka[HS / 8][4], dva[HS / 8][4];
#pragma unroll
  for (int n = 0; n < HS / 8; n++) {
    dka[n][0] = dka[n][1] = dka[n][2] = dka[n][3] = 0.0f;
    dva[n][0] = dva[n][1] = dva[n][2] = dva[n][3] = 0.0f;
  }
  const float sl2 = scale * LOG2E;
  // Work items: every query head h of the group and every query tile from k0 on (queries
  // before k0 see none of these keys).
  const int nq = (T - k0 + BQ - 1) / BQ, items = group * nq;
  // Start the copies of item `it` (Q, dO, lse, dsum; rows past T read as zeros, masked).
  auto issue = [&](int it) {
    const int h = kvh * group + it / nq, q0 = k0 + (it % nq) * BQ, nb = it & 1;
    const size_t qo = ((size_t)b * T * NH + h) * HS + (size_t)q0 * qstride;
    load_tile_async<HS>(qbuf + nb * QT, LD, q + qo, qstride, BQ, T - q0);
    load_tile_async<HS>(dobuf + nb * QT, LD, dout + qo, qstride, BQ, T - q0);
    const size_t li = ((size_t)b * NH + h) * T + q0;
    for (int r = threadIdx.x; r < BQ; r += FA_WARPS * 32) {
      const bool ok = q0 + r < T;
      cp_async4(lsebuf + nb * BQ + r, lse + li + (ok ? r : 0), ok);
      cp_async4(dsumbuf + nb * BQ + r, dsum + li + (ok ? r : 0), ok);
    }
  };
  issue(0);
  cp_async_commit();
  for (int it = 0; it < items; it++) {
    const int h = kvh * group + it / nq, q0 = k0 + (it % nq) * BQ;
    if (it + 1 < items) issue(it + 1);
    cp_async_commit();
    cp_async_wait_1();  // this item's copies have landed
    __syncthreads();    // ... everyone's; and the previous item's dS is consumed
    const uint16_t* qs = qbuf + (it & 1) * QT;
    const uint16_t* dos = dobuf + (it & 1) * QT;
    const float* lse_s = lsebuf + (it & 1) * BQ;
    const float* dsum_s = dsumbuf + (it & 1) * BQ;
    {
      // S^T (16 keys x BQ queries) and dP^T = V dO^T, both with Q/dO rows as B fragments.
      float st[BQ / 8][4], dpt[BQ / 8][4];
#pragma unroll
      for (int n = 0; n < BQ / 8; n++) {
        st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.0f;
        dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < HS / 16; kk++) {
#pragma unroll
        for (int np = 0; np < BQ / 16; np++) {  // query tiles 2np, 2np + 1
          const int at = (16 * np + lr + 8 * l16) * LD + 16 * kk + 8 * l8;
          uint32_t qr[4], dr[4];
          ldsm_x4(qr, qs + at);
          ldsm_x4(dr, dos + at);
          mma_16816(st[2 * np], kf[kk], qr);
          mma_16816(st[2 * np + 1], kf[kk], qr + 2);
          mma_16816(dpt[2 * np], vf[kk], dr);
          mma_16816(dpt[2 * np + 1], vf[kk], dr + 2);
        }
      }
      // P^T and dS^T = P^T (dP^T - dsum) * scale, in place (st <- P, dpt <- dS).
      // Masks only where some (key, query) pair of this warp's tile is hidden.
      const bool full = !segb && k0 + warp * 16 + 15 <= q0 && q0 + BQ <= T;
#pragma unroll
      for (int n = 0; n < BQ / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int i = e >> 1, col = n * 8 + 2 * c + (e & 1), t = q0 + col;
          const bool vis = full || (key[i] <= t && t < T && (!segb || segb[t] == skey[i]));
          const float p = vis ? exp2f(fmaf(st[n][e], sl2, -lse_s[col] * LOG2E)) : 0.0f;
          st[n][e] = p;
          dpt[n][e] = p * (dpt[n][e] - dsum_s[col]) * scale;
        }
      }
      // dV += P^T dO and dK += dS^T Q: A from the registers above, B = dO / Q rows by query.
#pragma unroll
      for (int kk = 0; kk < BQ / 16; kk++) {
        uint32_t pf[4], sf[4];
        acc_to_a(pf, st[2 * kk], st[2 * kk + 1]);
        acc_to_a(sf, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
        for (int np = 0; np < HS / 16; np++) {  // head-dim tiles 2np, 2np + 1
          const int at = (16 * kk + lr + 8 * l8) * LD + 16 * np + 8 * l16;
          uint32_t dr[4], qr[4];
          ldsm_x4_trans(dr, dos + at);
          ldsm_x4_trans(qr, qs + at);
          mma_16816(dva[2 * np], pf, dr);
          mma_16816(dva[2 * np + 1], pf, dr + 2);
          mma_16816(dka[2 * np], sf, qr);
          mma_16816(dka[2 * np + 1], sf, qr + 2);
        }
      }
      // dS (query, key) to shared memory for dQ = dS K.
#pragma unroll
      for (int n = 0; n < BQ / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int col = n * 8 + 2 * c + (e & 1), kl = warp * 16 + g + 8 * (e >> 1);
          dss[col * LDS + kl] = bf16_bits(dpt[n][e]);
        }
      }
      __syncthreads();
      // dQ rows of this tile: warp w takes query rows w*16.. (BQ / 16 row groups over the
      // warps), all 64 keys; B = K rows by key.
      for (int rg = warp; rg < BQ / 16; rg += FA_WARPS) {
        float dqa[HS / 8][4];
#pragma unroll
        for (int n = 0; n < HS / 8; n++) dqa[n][0] = dqa[n][1] = dqa[n][2] = dqa[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < FA_BK / 16; kk++) {
          uint32_t af[4];
          ldsm_x4(af, dss + (rg * 16 + lr + 8 * l8) * LDS + 16 * kk + 8 * l16);
#pragma unroll
          for (int np = 0; np < HS / 16; np++) {  // head-dim tiles 2np, 2np + 1
            uint32_t kr[4];
            ldsm_x4_trans(kr, ks + (16 * kk + lr + 8 * l8) * LD + 16 * np + 8 * l16);
            mma_16816(dqa[2 * np], af, kr);
            mma_16816(dqa[2 * np + 1], af, kr + 2);
          }
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
          const int t = q0 + rg * 16 + g + 8 * i;
          if (t >= T) continue;
          float* dqr = dq_acc + (((size_t)b * T + t) * NH + h) * HS;
#pragma unroll
          for (int n = 0; n < HS / 8; n++) {
            atomicAdd(dqr + n * 8 + 2 * c, dqa[n][2 * i]);
            atomicAdd(dqr + n * 8 + 2 * c + 1, dqa[n][2 * i + 1]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 2; i++) {
    if (key[i] >= T) continue;
    const size_t ko = (((size_t)b * T + key[i]) * NKV + kvh) * HS;
#pragma unroll
    for (int n = 0; n < HS / 8; n++) {
      const int d = n * 8 + 2 * c;
      st(dk, dtk, ko + d, dka[n][2 * i]);
      st(dk, dtk, ko + d + 1, dka[n][2 * i + 1]);
      st(dv, dtv, ko + d, dva[n][2 * i]);
      st(dv, dtv, ko + d + 1, dva[n][2 * i + 1]);
    }
  }
}

// Forward blocks per SM: 4 at head size 64 caps it at 128 registers a thread.
#define FLASH_FWD(HSV, BLOCKS)                                                                \
  extern "C" __global__ void LAUNCH_BOUNDS(128, BLOCKS)                                      \
      flash_fwd_##HSV(void* out, float* lse, const void* q, const void* k, const void* v,      \
                      int B, int T, int Tk, int Tcap, int NH, int NKV, float scale,            \
                      const int* seg) {                                                        \
    flash_fwd<HSV>((uint16_t*)out, lse, (const uint16_t*)q, (const uint16_t*)k,                \
                   (const uint16_t*)v, B, T, Tk, Tcap, NH, NKV, scale, seg);                   \
  }
FLASH_FWD(64, 4)
FLASH_FWD(128, 2)

#define FLASH_BWD(HSV, BQV)                                                                   \
  extern "C" __global__ void LAUNCH_BOUNDS(128) flash_bwd_##HSV(                              \
      float* dq_acc, void* dk, int dtk, void* dv, int dtv, const void* dout, const void* q,   \
      const void* k, const void* v, const float* lse, const float* dsum, int B, int T,        \
      int NH, int NKV, float scale, const int* seg) {                                         \
    flash_bwd<HSV, BQV>(dq_acc, dk, dtk, dv, dtv, (const uint16_t*)dout, (const uint16_t*)q,  \
                        (const uint16_t*)k, (const uint16_t*)v, lse, dsum, B, T, NH, NKV,     \
                        scale, seg);                                                          \
  }
FLASH_BWD(64, 64)
FLASH_BWD(128, 32)
