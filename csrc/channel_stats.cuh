// Per-(batch, head, channel) statistics over the sequence, shared by the K quantization
// (mean, for smoothing) and the V quantization (mean and the range of V or of V - mean).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace sageattention {

struct Strides {
  int64_t b, h, n, d;
};

constexpr int kStatRows = 8;  // row lanes per block (x 32 channels)

// Element types are the CUDA ones (torch_api.h dispatch_float_types); torch builds with
// __CUDA_NO_HALF_CONVERSIONS__, so the 16-bit types convert through the intrinsics.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// grid (ceil(D / 32), H, B), block (32, kStatRows). mean [B, H, D] always; amax [B, H, D] when
// not null: max |x - mean| if centered, else max |x|. Both over the finite values only.
template <typename T>
__global__ void channel_stats_kernel(const T* __restrict__ x, Strides s, int N, int D,
                                     float* __restrict__ mean, float* __restrict__ amax,
                                     bool centered) {
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int H = gridDim.y;
  __shared__ float part_sum[kStatRows][32], part_max[kStatRows][32], part_min[kStatRows][32];
  float acc = 0.f, hi = -INFINITY, lo = INFINITY;
  if (c < D) {
    const T* base = x + b * s.b + h * s.h + c * s.d;
    for (int r = threadIdx.y; r < N; r += kStatRows) {
      // A NaN or an infinity is left out: one bad token must not spoil the mean and range
      // of every other one (its own score or value still comes out non-finite downstream).
      const float v = to_float(base[r * s.n]);
      if (isfinite(v)) {
        acc += v;
        hi = fmaxf(hi, v);
        lo = fminf(lo, v);
      }
    }
  }
  part_sum[threadIdx.y][threadIdx.x] = acc;
  part_max[threadIdx.y][threadIdx.x] = hi;
  part_min[threadIdx.y][threadIdx.x] = lo;
  __syncthreads();
  if (threadIdx.y == 0 && c < D) {
    float total = 0.f;
#pragma unroll
    for (int i = 0; i < kStatRows; ++i) {
      total += part_sum[i][threadIdx.x];
      hi = fmaxf(hi, part_max[i][threadIdx.x]);
      lo = fminf(lo, part_min[i][threadIdx.x]);
    }
    const int64_t at = (b * H + h) * D + c;
    const float mu = N > 0 ? total / static_cast<float>(N) : 0.f;
    mean[at] = mu;
    if (amax != nullptr) {
      amax[at] = N == 0 ? 0.f : centered ? fmaxf(hi - mu, mu - lo) : fmaxf(fabsf(hi), fabsf(lo));
    }
  }
}

}  // namespace sageattention
