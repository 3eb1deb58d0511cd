// The INT8 code of one value and the scale of a group that held a non-finite value: shared by
// quant_int8 (quant.cu) and the attention kernel's own quantization of Q (q_fragments.cuh), so
// that both produce the same bytes and scales (tests/test_gpu_cuda.py compares them).
#pragma once

#include <cstdint>

namespace sageattention {

// x * (127 / amax) rounded half away from zero, clamped to [-127, 127].
__device__ __forceinline__ uint32_t int8_code(float x, float inv) {
  float v = x * inv;
  v = v >= 0.f ? v + 0.5f : v - 0.5f;
  v = fminf(fmaxf(v, -127.f), 127.f);
  return static_cast<uint8_t>(static_cast<int8_t>(__float2int_rz(v)));
}

// The scale of a group or row that held a NaN or an infinity: its scores come out NaN.
__device__ __forceinline__ float poisoned_scale() { return __int_as_float(0x7fc00000); }

// A group's max |x| is at least this (an all-zero group quantizes to zeros, not NaN).
constexpr float kMinAmax = 1e-30f;

}  // namespace sageattention
