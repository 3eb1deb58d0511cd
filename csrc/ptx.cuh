// Inline-PTX wrappers for the tensor-core attention kernels: cp.async, ldmatrix, mma.sync.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k*"), with g = lane / 4 and
// t = lane % 4. Every kernel in attention.cuh is written against exactly these:
//
// m16n8k32 .s8 / .e4m3 (A 16x32 row-major, B 32x8 column-major, C/D 16x8):
//   A regs a0..a3 hold 4 consecutive k each: a0 row g k 4t..4t+3, a1 row g+8 k 4t..,
//   a2 row g k 16+4t.., a3 row g+8 k 16+4t..
//   B regs b0 k 4t..4t+3 of column g, b1 k 16+4t.. of column g
//   C regs c0 c1 row g columns 2t 2t+1, c2 c3 row g+8 columns 2t 2t+1
// m16n8k16 .f16 / .bf16:
//   A a0 row g k 2t,2t+1; a1 row g+8 k 2t..; a2 row g k 8+2t..; a3 row g+8 k 8+2t..
//   B b0 k 2t,2t+1 of column g; b1 k 8+2t, 9+2t of column g; C as above.
// ldmatrix .x4 loads four 8x8 b16 matrices (8 rows of 16 bytes); lane i gives the address of
// row i % 8 of matrix i / 8 and receives, per matrix, the 32-bit word (i % 4) of row i / 4
// (with .trans: the two b16 elements of column i / 4 in rows 2(i % 4), 2(i % 4) + 1).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

// The fp16-accumulating e4m3 MMA needs PTX ISA 8.7 (nvcc >= 12.8); setup.py defines this macro
// only then, and records it in _build_info.OPTIONAL_PATHS so Python never asks for the mode.
#ifndef SAGE_FP8_F16_ACCUM
#define SAGE_FP8_F16_ACCUM 0
#endif

namespace sageattention {
namespace ptx {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copies. Shared addresses are 32-bit shared-window addresses
// (smem_addr once per kernel, not a conversion per copy). _full copies every byte; _zfill copies
// src_bytes (0 or 16) and zero-fills the rest.
__device__ __forceinline__ void cp_async_16_full(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_16_zfill(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ldmatrix from a 32-bit shared-window address: the kernels keep one such base per lane and
// add compile-time offsets, which ptxas folds into the instruction's immediate.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// D = A(s8) * B(s8) + C, s32 accumulation.
__device__ __forceinline__ void mma_s8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                       uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D = A * B + C with 16-bit inputs and f32 accumulation (T = half or bfloat16).
template <typename T>
__device__ __forceinline__ void mma_16bit_f32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                              uint32_t b1);
template <>
__device__ __forceinline__ void mma_16bit_f32<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                      uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16bit_f32<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                             uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// fp16 inputs, fp16 accumulation: c holds two half2 (row g, row g + 8).
__device__ __forceinline__ void mma_f16_f16(uint32_t (&c)[2], const uint32_t (&a)[4], uint32_t b0,
                                            uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%0, %1}, {%2, %3, %4, %5}, {%6, %7}, "
      "{%0, %1};\n"
      : "+r"(c[0]), "+r"(c[1])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
// The FP8 unit is compiled for sm_89 and newer only (setup.py); reaching this is a build error.
#define SAGE_NO_FP8_MMA 1
#endif

#ifndef SAGE_NO_FP8_MMA
// e4m3 x e4m3 with f32 accumulation (sm_89+).
__device__ __forceinline__ void mma_e4m3_f32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#if SAGE_FP8_F16_ACCUM
// e4m3 x e4m3 with f16 accumulation (PTX 8.7, sm_89+): c holds two half2.
__device__ __forceinline__ void mma_e4m3_f16(uint32_t (&c)[2], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f16.e4m3.e4m3.f16 {%0, %1}, {%2, %3, %4, %5}, {%6, %7}, "
      "{%0, %1};\n"
      : "+r"(c[0]), "+r"(c[1])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif
#endif  // SAGE_NO_FP8_MMA

// Two floats -> packed 16-bit pair (low half = first element).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Four floats -> four e4m3 bytes (byte 0 = a), round to nearest, saturating at +-448.
__device__ __forceinline__ uint32_t pack4_e4m3(float a, float b, float c, float d) {
  uint16_t lo, hi;
  // cvt packs its first source into the upper byte, hence the swapped order.
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(lo) : "f"(b), "f"(a));
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(hi) : "f"(d), "f"(c));
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace ptx
}  // namespace sageattention
