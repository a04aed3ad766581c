// Shared helpers of the tune kernels.
//
// Every buffer argument comes with a dtype code (0 = f32, 1 = bf16), so one kernel serves
// every mix of fp32 master/optimizer buffers and bf16 activations: the branch is uniform
// across a launch and costs nothing next to the memory traffic. Arithmetic is fp32.
#pragma once
#include <cuda_bf16.h>

#define DT_F32 0
#define DT_BF16 1

__device__ __forceinline__ float ld(const void* p, int dt, size_t i) {
  return dt == DT_BF16 ? __bfloat162float(((const __nv_bfloat16*)p)[i]) : ((const float*)p)[i];
}

__device__ __forceinline__ void st(void* p, int dt, size_t i, float v) {
  if (dt == DT_BF16) {
    ((__nv_bfloat16*)p)[i] = __float2bfloat16_rn(v);
  } else {
    ((float*)p)[i] = v;
  }
}

#define GRID_STRIDE(i, n)                                                        \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
       i += (size_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;
    w = warp_sum(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  return total;
}

// Max over the block; every thread gets it.
__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < (int)(blockDim.x >> 5) ? partial[lane] : -INFINITY;
    w = warp_max(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  return total;
}

// ---- Vectorised access: 8 consecutive elements, one 16-byte load of bf16 or two of f32 ----
// The fast paths below use these when every buffer of a launch is 16-byte aligned (checked
// on the device from the pointers, so the branch is uniform); each element converts exactly
// as ld()/st() do, so results are bitwise those of the scalar path.

/** Whether p is 16-byte aligned. */
__device__ __forceinline__ bool aligned16(const void* p) { return ((size_t)p & 15) == 0; }

// bf16 bits -> fp32 (exact, as __bfloat162float): low and high half of a 32-bit word.
__device__ __forceinline__ float bf16_lo(unsigned int u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(unsigned int u) {
  return __uint_as_float(u & 0xffff0000u);
}
// Two fp32 values rounded to bf16 (nearest even, as st()) packed low, high.
__device__ __forceinline__ unsigned int bf16_pack2(float a, float b) {
  return (unsigned int)__bfloat16_as_ushort(__float2bfloat16_rn(a)) |
         ((unsigned int)__bfloat16_as_ushort(__float2bfloat16_rn(b)) << 16);
}

// v[0..8) = p[i .. i + 8); i a multiple of 8, p 16-byte aligned.
__device__ __forceinline__ void ld8(const void* p, int dt, size_t i, float* v) {
  if (dt == DT_BF16) {
    const uint4 u = *(const uint4*)((const __nv_bfloat16*)p + i);
    v[0] = bf16_lo(u.x);
    v[1] = bf16_hi(u.x);
    v[2] = bf16_lo(u.y);
    v[3] = bf16_hi(u.y);
    v[4] = bf16_lo(u.z);
    v[5] = bf16_hi(u.z);
    v[6] = bf16_lo(u.w);
    v[7] = bf16_hi(u.w);
  } else {
    const float4 a = *(const float4*)((const float*)p + i);
    const float4 b = *(const float4*)((const float*)p + i + 4);
    v[0] = a.x;
    v[1] = a.y;
    v[2] = a.z;
    v[3] = a.w;
    v[4] = b.x;
    v[5] = b.y;
    v[6] = b.z;
    v[7] = b.w;
  }
}

// p[i .. i + 8) = v[0..8); i a multiple of 8, p 16-byte aligned.
__device__ __forceinline__ void st8(void* p, int dt, size_t i, const float* v) {
  if (dt == DT_BF16) {
    uint4 u;
    u.x = bf16_pack2(v[0], v[1]);
    u.y = bf16_pack2(v[2], v[3]);
    u.z = bf16_pack2(v[4], v[5]);
    u.w = bf16_pack2(v[6], v[7]);
    *(uint4*)((__nv_bfloat16*)p + i) = u;
  } else {
    float4 a, b;
    a.x = v[0];
    a.y = v[1];
    a.z = v[2];
    a.w = v[3];
    b.x = v[4];
    b.y = v[5];
    b.z = v[6];
    b.w = v[7];
    *(float4*)((float*)p + i) = a;
    *(float4*)((float*)p + i + 4) = b;
  }
}

// v[0..4) = p[i .. i + 4); i a multiple of 4, p 16-byte aligned.
__device__ __forceinline__ void ld4(const void* p, int dt, size_t i, float* v) {
  if (dt == DT_BF16) {
    const uint2 u = *(const uint2*)((const __nv_bfloat16*)p + i);
    v[0] = bf16_lo(u.x);
    v[1] = bf16_hi(u.x);
    v[2] = bf16_lo(u.y);
    v[3] = bf16_hi(u.y);
  } else {
    const float4 a = *(const float4*)((const float*)p + i);
    v[0] = a.x;
    v[1] = a.y;
    v[2] = a.z;
    v[3] = a.w;
  }
}

// Threads of a launch and this thread's index among them, for grid-stride loops.
#define GRID_THREADS ((size_t)gridDim.x * blockDim.x)
#define GRID_TID ((size_t)blockIdx.x * blockDim.x + threadIdx.x)
