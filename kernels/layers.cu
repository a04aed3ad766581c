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

// Rotary embedding in place on x(B, T, NH, HS); one thread per rotated pair.
// cos/sin(Tmax, HS/2); token t at position pos + t, or at positions[b * T + t] when the
// (B, T) int buffer `positions` is given (packed samples). half != 0: pairs (i, i + HS/2)
// (Hugging Face), else (2i, 2i + 1) (Meta). inverse != 0 rotates by the negative angle.
extern "C" __global__ void rope(void* x, int dtx, const void* cosT, const void* sinT, int dtc,
                                int B, int T, int NH, int HS, int pos, int half, int inverse,
                                const int* positions) {
  const int hh = HS >> 1;
  GRID_STRIDE(idx, (size_t)B * T * NH * hh) {
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
  GRID_STRIDE(i, n) {
    const float g = ld(gate, dtg, i);
    st(out, dto, i, g / (1.0f + expf(-g)) * ld(up, dtu, i));
  }
}

// dgate = dout * up * sig * (1 + g (1 - sig)), dup = dout * g * sig; written. dgate/dup
// may alias gate/up: each thread reads its element before writing it.
extern "C" __global__ void swiglu_bwd(void* dgate, int dtdg, void* dup, int dtdu,
                                      const void* dout, int dtdo, const void* gate, int dtg,
                                      const void* up, int dtu, int n) {
  GRID_STRIDE(i, n) {
    const float g = ld(gate, dtg, i), u = ld(up, dtu, i), d = ld(dout, dtdo, i);
    const float sig = 1.0f / (1.0f + expf(-g));
    st(dgate, dtdg, i, d * u * sig * (1.0f + g * (1.0f - sig)));
    st(dup, dtdu, i, d * g * sig);
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
