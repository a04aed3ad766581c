// DoRA (weight-decomposed LoRA) kernels; CPU twins in src/backend/cpu/backend.ts.
#include "common.cuh"

// norm[o] = sqrt(sum_i (w[o, i] + s * ba[o, i])^2), scale[o] = mag[o] / norm[o].
// One block per row o; w (O, I) f32 or bf16, ba (O, I), mag, norm, scale fp32.
extern "C" __global__ void dora_norm(float* scale, float* norm, const void* w, int dtw,
                                     const float* ba, const float* mag, float s, int O,
                                     int I) {
  const int o = blockIdx.x;
  if (o >= O) return;
  const size_t row = (size_t)o * I;
  float acc = 0.0f;
  for (int i = threadIdx.x; i < I; i += blockDim.x) {
    const float v = ld(w, dtw, row + i) + s * ba[row + i];
    acc += v * v;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) {
    const float n = sqrtf(acc);
    norm[o] = n;
    scale[o] = mag[o] / n;
  }
}

// out[n, c] = inp[n, c] * v[c] over (N, C); out may alias inp; v fp32.
extern "C" __global__ void scale_columns(void* out, int dto, const void* inp, int dti,
                                         const float* v, int N, int C) {
  GRID_STRIDE(i, (size_t)N * C) { st(out, dto, i, ld(inp, dti, i) * v[i % C]); }
}

// dmag[c] += sum_n dout[n, c] * z[n, c] / norm[c]; one thread per column c.
extern "C" __global__ void dora_mag_bwd(float* dmag, const void* dout, int dtd, const void* z,
                                        int dtz, const float* norm, int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.0f;
  for (int r = 0; r < N; r++) {
    const size_t i = (size_t)r * C + c;
    s += ld(dout, dtd, i) * ld(z, dtz, i);
  }
  dmag[c] += s / norm[c];
}
