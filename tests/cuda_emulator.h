// CPU emulation of the CUDA features kernels/*.cu use, so the kernels compile with g++ and
// run on the host (tests/cuda_emulator_test.ts copies this file in as <cuda_bf16.h>).
// A launch runs its blocks one after another; each block runs its threads as real OS
// threads, so __syncthreads, __syncwarp and warp shuffles are true barriers/exchanges.
// `__shared__` is rewritten to `static` (one block at a time) before compiling.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
  unsigned x, y, z;
};
extern thread_local dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

// Barriers of the running block; per-warp exchange slots for shuffles.
std::barrier<>& emu_block_barrier();
std::barrier<>& emu_warp_barrier();
float* emu_shfl_slots();  // 32 floats of the calling thread's warp

inline void __syncthreads() { emu_block_barrier().arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp_barrier().arrive_and_wait(); }

inline float emu_exchange(float v, int src) {
  float* slots = emu_shfl_slots();
  slots[threadIdx.x & 31] = v;
  emu_warp_barrier().arrive_and_wait();
  const float r = slots[src & 31];
  emu_warp_barrier().arrive_and_wait();
  return r;
}
inline float __shfl_xor_sync(unsigned, float v, int m) {
  return emu_exchange(v, (int)(threadIdx.x & 31) ^ m);
}
inline float __shfl_sync(unsigned, float v, int src) { return emu_exchange(v, src); }

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int min(int a, int b) { return a < b ? a : b; }

struct __nv_bfloat16 {
  uint16_t x;
};
inline float __bfloat162float(__nv_bfloat16 b) {
  uint32_t u = (uint32_t)b.x << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  __nv_bfloat16 b;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    b.x = (uint16_t)((u >> 16) | 0x40);
  } else {
    b.x = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  return b;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }

std::mutex& emu_atomic_mutex();
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
  std::lock_guard<std::mutex> g(emu_atomic_mutex());
  const __nv_bfloat16 old = *p;
  *p = __float2bfloat16_rn(__bfloat162float(old) + __bfloat162float(v));
  return old;
}

// Vector types and bit casts of the vectorised kernel paths (kernels/common.cuh).
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.x; }
