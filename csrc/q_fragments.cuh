// Q quantized to INT8 by the attention kernel itself, straight into the A fragments of its
// Q·Kᵀ MMA (mma.sync m16n8k32 s8): no separate quantization pass over Q, no INT8 copy of Q in
// global memory, one launch less per call (docs/perf-notes.md row 33).
//
// A warp owns 32 consecutive query rows (two m16 tiles). Thread (g = lane / 4, t = lane % 4)
// holds rows g, g + 8 of each m16 tile, i.e. rows g, g + 8, g + 16, g + 24 of the warp: exactly
// one per_thread scale group ((r / 32) * 8 + r % 8, sageattention/granularity.py). Its four
// channels 4t..4t+3 and 16+4t..16+4t+3 of every 32 are loaded as 8-byte chunks; the four
// threads of a row quad cover all channels, so a per_thread scale is a max over the quad and a
// per_warp one a max over the warp. The arithmetic is quant_int8's (int8_code.cuh): the same
// bytes and the same scale, NaN for a group holding a NaN or an infinity.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "int8_code.cuh"

namespace sageattention {

// Q as the caller gave it: [B, H, N, D] element strides (unit channel stride, every row
// 8-byte aligned: the host checks), scale_mul = sm_scale * log2(e).
struct RawQ {
  const void* data;
  int64_t sb, sh, sn;
  float scale_mul;
  bool bf16;
};

template <typename T>
__device__ __forceinline__ void four_floats(uint2 raw, float (&x)[4]) {
  const T* e = reinterpret_cast<const T*>(&raw);
  if constexpr (std::is_same<T, __half>::value) {
#pragma unroll
    for (int i = 0; i < 4; ++i) x[i] = __half2float(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) x[i] = __bfloat162float(e[i]);
  }
}

// Fills qf[mt][kc][i] (fragment register i of k32 step kc of m16 tile mt) for the warp whose
// first row is q0 and returns the thread's Q scale (times scale_mul). Rows past nq and channels
// past d are zeros, as quant_int8 pads them.
template <typename T, int MT, int KC>
__device__ __forceinline__ float quantize_q_fragments(const RawQ& q, int64_t b, int64_t h, int q0,
                                                      int nq, int d, bool per_warp,
                                                      uint32_t (&qf)[MT][KC][4]) {
  static_assert(MT == 2, "a scale group spans one warp's 32 rows: two m16 tiles");
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const T* base = static_cast<const T*>(q.data) + b * q.sb + h * q.sh;
  // f(mt, kc, i) for every fragment register of the warp's two m16 tiles.
  auto each_register = [](auto&& f) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kc = 0; kc < KC; ++kc)
#pragma unroll
        for (int i = 0; i < 4; ++i) f(mt, kc, i);
  };
  uint2 raw[MT][KC][4];
  each_register([&](int mt, int kc, int i) {
    // A fragment: a0 row g, a1 row g + 8, a2 / a3 the same 16 channels further.
    const int row = q0 + 16 * mt + g + 8 * (i & 1);
    const int ch = kc * 32 + 16 * (i >> 1) + 4 * t;
    raw[mt][kc][i] = row < nq && ch < d ? *reinterpret_cast<const uint2*>(base + row * q.sn + ch)
                                        : make_uint2(0u, 0u);
  });
  float amax = 0.f;
  bool bad = false;
  each_register([&](int mt, int kc, int i) {
    float x[4];
    four_floats<T>(raw[mt][kc][i], x);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (isfinite(x[e])) amax = fmaxf(amax, fabsf(x[e]));
      else bad = true;
    }
  });
  // The group: the row quad (per_thread) or the whole warp (per_warp).
  int bad_i = bad;
#pragma unroll
  for (int w = 1; w < 32; w *= 2) {
    if (w >= 4 && !per_warp) break;
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, w));
    bad_i |= __shfl_xor_sync(0xffffffffu, bad_i, w);
  }
  amax = fmaxf(amax, kMinAmax);
  const float inv = 127.f / amax;
  each_register([&](int mt, int kc, int i) {
    float x[4];
    four_floats<T>(raw[mt][kc][i], x);
    uint32_t packed = 0u;
#pragma unroll
    for (int e = 0; e < 4; ++e) packed |= int8_code(isfinite(x[e]) ? x[e] : 0.f, inv) << (8 * e);
    qf[mt][kc][i] = packed;
  });
  return bad_i ? poisoned_scale() : amax / 127.f * q.scale_mul;
}

}  // namespace sageattention
