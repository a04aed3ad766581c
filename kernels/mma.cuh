// bf16 tensor-core matrix products for the flash-attention kernels: the warp-wide
// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` (sm_80 and newer), fp32 accumulate.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .bf16), where
// g = lane / 4 and c = lane % 4, and each 32-bit register packs two bf16, the lower
// index in the low half:
//   A (16 x 16, row major): a[0] = A[g][2c, 2c+1]     a[1] = A[g+8][2c, 2c+1]
//                           a[2] = A[g][2c+8, 2c+9]   a[3] = A[g+8][2c+8, 2c+9]
//   B (16 x 8, k by n):     b[0] = B[2c, 2c+1][g]     b[1] = B[2c+8, 2c+9][g]
//   C (16 x 8):             c[0], c[1] = C[g][2c, 2c+1]   c[2], c[3] = C[g+8][2c, 2c+1]
// Under the CPU emulator (TUNE_EMU, tests/cuda_emulator_test.ts) the same product is
// computed from the 32 lanes' registers exchanged through a per-warp table.
#pragma once
#include "common.cuh"
#ifndef TUNE_EMU
#include <stdint.h>
#endif

#ifdef TUNE_EMU
#define LAUNCH_BOUNDS(...)
#else
#define LAUNCH_BOUNDS(...) __launch_bounds__(__VA_ARGS__)
#endif

// 16 bytes moved in one load or store (8 bf16).
struct alignas(16) u128 {
  uint32_t x, y, z, w;
};

__device__ __forceinline__ uint16_t bf16_bits(float f) {
  const __nv_bfloat16 b = __float2bfloat16_rn(f);
  return *reinterpret_cast<const uint16_t*>(&b);
}

__device__ __forceinline__ float bits_bf16(uint32_t bits16) {
  __nv_bfloat16 b;
  *reinterpret_cast<uint16_t*>(&b) = (uint16_t)bits16;
  return __bfloat162float(b);
}

// Two floats rounded to bf16 in one register (lo in the low half).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return (uint32_t)bf16_bits(lo) | ((uint32_t)bf16_bits(hi) << 16);
}

// An A fragment (16 rows x 16 k) from two C-layout accumulator tiles holding k columns 0-7
// (lo) and 8-15 (hi) of the same 16 rows, rounded to bf16: a product's output feeds the
// next product without leaving registers.
__device__ __forceinline__ void acc_to_a(uint32_t* a, const float* lo, const float* hi) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

// Two bf16 at p[0] and p[1] (p 4-byte aligned) as one register.
__device__ __forceinline__ uint32_t ld_pair(const uint16_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Two bf16 from different rows: p[0] low, p[stride] high.
__device__ __forceinline__ uint32_t ld_pair_strided(const uint16_t* p, int stride) {
  return (uint32_t)p[0] | ((uint32_t)p[stride] << 16);
}

// ldmatrix: four 8x8 bf16 matrices from shared memory, lane l giving the address of row
// l % 8 of matrix l / 8 (16 contiguous bytes, 16-byte aligned). Register i of lane l gets
// matrix i's elements [l / 4][2(l % 4), +1] (plain) or [2(l % 4), +1][l / 4] (trans), so
// one call yields two A/B fragment halves for each of two tiles.
#ifndef TUNE_EMU
__device__ __forceinline__ void ldsm_x4(uint32_t* r, const uint16_t* p) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t* r, const uint16_t* p) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
#else
inline void ldsm_emu(uint32_t* r, const uint16_t* p, bool trans) {
  static const uint16_t* rows[32][32];  // [warp][lane] row addresses; one block at a time
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  rows[warp][lane] = p;
  __syncwarp();
  for (int i = 0; i < 4; i++) {
    const uint16_t* const* m = rows[warp] + 8 * i;
    r[i] = trans ? (uint32_t)m[2 * c][g] | ((uint32_t)m[2 * c + 1][g] << 16)
                 : (uint32_t)m[g][2 * c] | ((uint32_t)m[g][2 * c + 1] << 16);
  }
  __syncwarp();
}
inline void ldsm_x4(uint32_t* r, const uint16_t* p) { ldsm_emu(r, p, false); }
inline void ldsm_x4_trans(uint32_t* r, const uint16_t* p) { ldsm_emu(r, p, true); }
#endif

// cp.async (sm_80): global -> shared copies that run while the warp computes; `valid`
// false writes zeros (no bytes read). A group of them is committed, then waited for
// (wait_1: all but the newest group have landed for this thread; __syncthreads after it
// makes every thread's copies visible).
#ifndef TUNE_EMU
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::); }
#else
inline void cp_async16(void* dst, const void* src, bool valid) {
  if (valid) memcpy(dst, src, 16); else memset(dst, 0, 16);
}
inline void cp_async4(void* dst, const void* src, bool valid) {
  if (valid) memcpy(dst, src, 4); else memset(dst, 0, 4);
}
inline void cp_async_commit() {}
inline void cp_async_wait_1() {}
#endif

#ifndef TUNE_EMU
// c += A * B for one 16x16 (A) by 16x8 (B) tile.
__device__ __forceinline__ void mma_16816(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
inline void mma_16816(float* c, const uint32_t* a, const uint32_t* b) {
  static uint32_t regs[32][32][6];  // [warp][lane][a0..a3, b0, b1]; one block at a time
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  for (int i = 0; i < 4; i++) regs[warp][lane][i] = a[i];
  regs[warp][lane][4] = b[0];
  regs[warp][lane][5] = b[1];
  __syncwarp();
  for (int e = 0; e < 4; e++) {
    const int row = g + 8 * (e >> 1), col = 2 * q + (e & 1);
    float sum = 0.0f;
    for (int k = 0; k < 16; k++) {
      const int hi = k >= 8 ? 1 : 0, half = k & 1, kq = (k & 7) >> 1;
      const uint32_t ar = regs[warp][(row & 7) * 4 + kq][(row >> 3) + 2 * hi];
      const uint32_t br = regs[warp][col * 4 + kq][4 + hi];
      sum += bits_bf16(ar >> (16 * half)) * bits_bf16(br >> (16 * half));
    }
    c[e] += sum;
  }
  __syncwarp();
}
#endif
