// Memory, elementwise, reduction, embedding, dropout, KV-cache and AdamW kernels.
// CPU twins: src/backend/cpu/backend.ts, layers.ts, dropout.ts, adamw.ts.
#include "common.cuh"

// Grid-stride loops of the vectorised elementwise paths: VEC8_LOOP visits i = 0, 8, 16, ...
// while i + 8 <= n (8 elements per thread per step), TAIL_LOOP the elements from `start`
// one at a time (the rest after the vectors, or all of them when a buffer is unaligned).
#define VEC8_LOOP(i, n) \
  for (size_t i = GRID_TID * 8; i + 8 <= (size_t)(n); i += GRID_THREADS * 8)
#define TAIL_LOOP(i, start, n) \
  for (size_t i = (start) + GRID_TID; i < (size_t)(n); i += GRID_THREADS)

// dst(n) = src(n), converting between dtypes (bf16 stores round to nearest even).
extern "C" __global__ void cast_copy(void* dst, int dtd, const void* src, int dts, int n) {
  size_t start = 0;
  if (aligned16(dst) && aligned16(src)) {
    VEC8_LOOP(i, n) {
      float v[8];
      ld8(src, dts, i, v);
      st8(dst, dtd, i, v);
    }
    start = (size_t)n & ~(size_t)7;
  }
  TAIL_LOOP(i, start, n) st(dst, dtd, i, ld(src, dts, i));
}

// buf(n) = value.
extern "C" __global__ void fill(void* buf, int dt, float value, int n) {
  size_t start = 0;
  if (aligned16(buf)) {
    float v[8];
    for (int k = 0; k < 8; k++) v[k] = value;
    VEC8_LOOP(i, n) st8(buf, dt, i, v);
    start = (size_t)n & ~(size_t)7;
  }
  TAIL_LOOP(i, start, n) st(buf, dt, i, value);
}

// out(n) = a(n) + b(n); out may alias a or b (each thread reads before it writes).
extern "C" __global__ void ew_add(void* out, int dto, const void* a, int dta, const void* b,
                                  int dtb, int n) {
  size_t start = 0;
  if (aligned16(out) && aligned16(a) && aligned16(b)) {
    VEC8_LOOP(i, n) {
      float x[8], y[8];
      ld8(a, dta, i, x);
      ld8(b, dtb, i, y);
      for (int k = 0; k < 8; k++) x[k] = x[k] + y[k];
      st8(out, dto, i, x);
    }
    start = (size_t)n & ~(size_t)7;
  }
  TAIL_LOOP(i, start, n) st(out, dto, i, ld(a, dta, i) + ld(b, dtb, i));
}

// out(n) = a(n) * b(n).
extern "C" __global__ void ew_mul(void* out, int dto, const void* a, int dta, const void* b,
                                  int dtb, int n) {
  size_t start = 0;
  if (aligned16(out) && aligned16(a) && aligned16(b)) {
    VEC8_LOOP(i, n) {
      float x[8], y[8];
      ld8(a, dta, i, x);
      ld8(b, dtb, i, y);
      for (int k = 0; k < 8; k++) x[k] = x[k] * y[k];
      st8(out, dto, i, x);
    }
    start = (size_t)n & ~(size_t)7;
  }
  TAIL_LOOP(i, start, n) st(out, dto, i, ld(a, dta, i) * ld(b, dtb, i));
}

// out(n) += alpha * x(n).
extern "C" __global__ void ew_axpy(void* out, int dto, const void* x, int dtx, float alpha,
                                   int n) {
  size_t start = 0;
  if (aligned16(out) && aligned16(x)) {
    VEC8_LOOP(i, n) {
      float o[8], y[8];
      ld8(out, dto, i, o);
      ld8(x, dtx, i, y);
      for (int k = 0; k < 8; k++) o[k] = o[k] + alpha * y[k];
      st8(out, dto, i, o);
    }
    start = (size_t)n & ~(size_t)7;
  }
  TAIL_LOOP(i, start, n) st(out, dto, i, ld(out, dto, i) + alpha * ld(x, dtx, i));
}

// buf(n) *= s.
extern "C" __global__ void ew_scale(void* buf, int dt, float s, int n) {
  size_t start = 0;
  if (aligned16(buf)) {
    VEC8_LOOP(i, n) {
      float v[8];
      ld8(buf, dt, i, v);
      for (int k = 0; k < 8; k++) v[k] = v[k] * s;
      st8(buf, dt, i, v);
    }
    start = (size_t)n & ~(size_t)7;
  }
  TAIL_LOOP(i, start, n) st(buf, dt, i, ld(buf, dt, i) * s);
}

// out(M, N) += bias(N).
extern "C" __global__ void add_bias(void* out, int dto, const void* bias, int dtb, int M,
                                    int N) {
  GRID_STRIDE(i, (size_t)M * N) st(out, dto, i, ld(out, dto, i) + ld(bias, dtb, i % N));
}

// dbias(N) += sum over rows of dout(M, N). One thread per column walks the rows in order,
// so the result is deterministic; neighbouring threads read neighbouring columns.
extern "C" __global__ void bias_grad(void* dbias, int dtb, const void* dout, int dto, int M,
                                     int N) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= N) return;
  float s = 0.0f;
  for (int r = 0; r < M; r++) s += ld(dout, dto, (size_t)r * N + c);
  st(dbias, dtb, c, ld(dbias, dtb, c) + s);
}

// First pass of sum / sum of squares: partial[blockIdx.x] = this block's share.
// The grid size is fixed by the caller, so the summation order (and result) is
// deterministic for a given n.
extern "C" __global__ void reduce_partial(float* partial, const void* x, int dt, int n,
                                          int squares) {
  float s = 0.0f;
  GRID_STRIDE(i, n) {
    const float v = ld(x, dt, i);
    s += squares ? v * v : v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Second pass: out[0] = sum of partial(count), one block.
extern "C" __global__ void reduce_final(float* out, const float* partial, int count) {
  float s = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) out[0] = s;
}

// lowbias32 (see src/backend/cpu/dropout.ts for the exact definition shared by backends).
__device__ __forceinline__ unsigned int mix32(unsigned int x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// mask(n) = r(i) < thresh ? 0 : keep, r(i) = mix32(mix32(i ^ key) + key).
// key = mix32(seed_lo32 ^ 0x9e3779b9), thresh = floor(p * 2^32), keep = fp32(1/(1-p)) are
// computed on the host exactly as the CPU backend does.
extern "C" __global__ void dropout_mask(void* mask, int dt, unsigned int key,
                                        unsigned int thresh, float keep, int n) {
  GRID_STRIDE(i, n) {
    const unsigned int r = mix32(mix32((unsigned int)i ^ key) + key);
    st(mask, dt, i, r < thresh ? 0.0f : keep);
  }
}

// out(N, C) = table(V, C)[tokens(N)]. A token outside 0..V-1 yields a NaN row (the CPU
// twin throws); it is never used as an address.
extern "C" __global__ void embedding_fwd(void* out, int dto, const int* tokens,
                                         const void* table, int dtt, int N, int C, int V) {
  GRID_STRIDE(i, (size_t)N * C) {
    const size_t row = i / C, c = i % C;
    const int t = tokens[row];
    st(out, dto, i, (t >= 0 && t < V) ? ld(table, dtt, (size_t)t * C + c) : NAN);
  }
}

// dtable(V, C)[tokens[i]] += dout(N, C)[i], deterministically: the host groups the rows by
// token, meta = [uniq(U), starts(U + 1), rows(N)], and block (u, chunk) sums the rows
// rows[starts[u] .. starts[u+1]) of token uniq[u] in that fixed order, then adds the sum to
// the table row. No two blocks touch the same element, so no atomics are needed.
extern "C" __global__ void embedding_bwd(void* dtable, int dtt, const void* dout, int dto,
                                         const int* meta, int U, int C) {
  const int u = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (u >= U || c >= C) return;
  const int* starts = meta + U;
  const int* rows = meta + 2 * U + 1;
  float s = 0.0f;
  for (int j = starts[u]; j < starts[u + 1]; j++) s += ld(dout, dto, (size_t)rows[j] * C + c);
  const size_t at = (size_t)meta[u] * C + c;
  st(dtable, dtt, at, ld(dtable, dtt, at) + s);
}

// cache(B, Tcap, width)[b, pos + t] = src(B, T, width)[b, t].
extern "C" __global__ void kv_cache_write(void* cache, int dtc, const void* src, int dts, int B,
                                          int T, int Tcap, int width, int pos) {
  GRID_STRIDE(i, (size_t)B * T * width) {
    const size_t w = i % width, bt = i / width;
    const size_t t = bt % T, b = bt / T;
    st(cache, dtc, ((b * Tcap) + pos + t) * width + w, ld(src, dts, i));
  }
}

// One AdamW step (PyTorch order, see src/backend/cpu/adamw.ts):
//   p *= decay; m = b1 m + a1 g; v = b2 v + a2 g^2;
//   p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
// decay = 1 - lr*wd, a1 = 1 - b1, a2 = 1 - b2, step_size = lr / (1 - b1^t),
// bc2_sqrt = sqrt(1 - b2^t), all computed on the host.
extern "C" __global__ void adamw(void* params, int dtp, const void* grads, int dtg, void* m,
                                 int dtm, void* v, int dtv, int n, float decay, float b1,
                                 float a1, float b2, float a2, float eps, float step_size,
                                 float bc2_sqrt) {
  GRID_STRIDE(i, n) {
    const float g = ld(grads, dtg, i);
    const float p = ld(params, dtp, i) * decay;
    const float mi = ld(m, dtm, i) * b1 + g * a1;
    const float vi = ld(v, dtv, i) * b2 + (g * g) * a2;
    st(m, dtm, i, mi);
    st(v, dtv, i, vi);
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    st(params, dtp, i, p - step_size * (mi / denom));
  }
}
