// GeGLU (Gemma's MLP activation): out = gelu_tanh(gate) * up, and its backward.
// CPU twin: gegluForward / gegluBackward in src/backend/cpu/layers.ts (same formulas, same
// argument order as swiglu_fwd / swiglu_bwd). Its own module, so the PTX of the kernels
// already run on a GPU stays as it was.
#include "common.cuh"

// sqrt(2 / pi) and the cubic coefficient of torch's tanh approximation of GELU.
#define GELU_BETA 0.7978845608028654f
#define GELU_KAPPA 0.044715f

// gelu_tanh(g) = 0.5 g (1 + t), t = tanh(sqrt(2/pi) (g + 0.044715 g^3)); t returned too.
__device__ __forceinline__ float gelu_tanh(float g, float* t) {
  *t = tanhf(GELU_BETA * (g + GELU_KAPPA * g * g * g));
  return 0.5f * g * (1.0f + *t);
}

// d gelu_tanh / dg = 0.5 (1 + t) + 0.5 g (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 g^2).
__device__ __forceinline__ float gelu_tanh_grad(float g, float t) {
  return 0.5f * (1.0f + t) + 0.5f * g * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * g * g);
}

// out(n) = gelu_tanh(gate) * up.
extern "C" __global__ void geglu_fwd(void* out, int dto, const void* gate, int dtg,
                                     const void* up, int dtu, int n) {
  size_t start = 0;
  if (aligned16(out) && aligned16(gate) && aligned16(up)) {
    for (size_t i = GRID_TID * 8; i + 8 <= (size_t)n; i += GRID_THREADS * 8) {
      float g[8], u[8];
      ld8(gate, dtg, i, g);
      ld8(up, dtu, i, u);
      for (int k = 0; k < 8; k++) {
        float t;
        g[k] = gelu_tanh(g[k], &t) * u[k];
      }
      st8(out, dto, i, g);
    }
    start = (size_t)n & ~(size_t)7;
  }
  for (size_t i = start + GRID_TID; i < (size_t)n; i += GRID_THREADS) {
    float t;
    st(out, dto, i, gelu_tanh(ld(gate, dtg, i), &t) * ld(up, dtu, i));
  }
}

// dgate = dout * up * gelu_tanh'(g), dup = dout * gelu_tanh(g); written. dgate/dup may alias
// gate/up: each thread reads its element before writing it.
extern "C" __global__ void geglu_bwd(void* dgate, int dtdg, void* dup, int dtdu,
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
        float t;
        const float a = gelu_tanh(g[k], &t);
        dg[k] = d[k] * u[k] * gelu_tanh_grad(g[k], t);
        du[k] = d[k] * a;
      }
      st8(dgate, dtdg, i, dg);
      st8(dup, dtdu, i, du);
    }
    start = (size_t)n & ~(size_t)7;
  }
  for (size_t i = start + GRID_TID; i < (size_t)n; i += GRID_THREADS) {
    const float g = ld(gate, dtg, i), u = ld(up, dtu, i), d = ld(dout, dtdo, i);
    float t;
    const float a = gelu_tanh(g, &t);
    st(dgate, dtdg, i, d * u * gelu_tanh_grad(g, t));
    st(dup, dtdu, i, d * a);
  }
}
