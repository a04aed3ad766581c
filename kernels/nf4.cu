// NF4 base weights (QLoRA, torchao's NF4Tensor); CPU twin: dequantizeNf4 in
// src/backend/cpu/nf4.ts. Codes are 4 bits, two a byte (element 2k in the high nibble of
// byte k); blocks of 64 elements share an int8 scaler, groups of 256 blocks an fp32 factor.
#include "common.cuh"

// torchao's 16 levels, rounded from their decimal literals through double as tune's twin does.
__device__ __forceinline__ float nf4_level(int c) {
  const float levels[16] = {
      (float)-1.0,   (float)-0.6962, (float)-0.5251, (float)-0.3949, (float)-0.2844, (float)-0.1848,
      (float)-0.0911, (float)0.0,    (float)0.0796,  (float)0.1609,  (float)0.2461,  (float)0.3379,
      (float)0.4407, (float)0.5626,  (float)0.723,   (float)1.0};
  return levels[c];
}

__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

// out[j] = level(code(start + j)) * (scaler / factor + mean) for j < count; every step is
// rounded to bf16 when the weight was quantized from bf16 (wbf16), else fp32 (bitwise the
// CPU twin). out is f32 or bf16 (dto).
extern "C" __global__ void nf4_dequant(void* out, int dto, const unsigned char* codes,
                                       const signed char* scalers, const float* factors,
                                       float mean, int wbf16, int start, int count) {
  GRID_STRIDE(j, count) {
    const size_t i = (size_t)start + j;
    const size_t b = i / 64;
    float s = (float)scalers[b] / factors[b / 256];
    if (wbf16) s = round_bf16(s);
    s = s + mean;
    if (wbf16) s = round_bf16(s);
    const unsigned char byte = codes[i >> 1];
    float lv = nf4_level((i & 1) == 0 ? byte >> 4 : byte & 15);
    if (wbf16) lv = round_bf16(lv);
    float v = lv * s;
    if (wbf16) v = round_bf16(v);
    st(out, dto, j, v);
  }
}
