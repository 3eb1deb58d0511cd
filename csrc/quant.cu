// INT8 quantization of Q or K (one op call from Python), optionally smoothed (K).
//
// Pass 1 (channel_stats_kernel, only when smoothing): mean over the sequence of every
// (batch, head, channel), fp32.
// Pass 2 (quant_int8_kernel): one 64-row tile per block; subtract the mean, max |x| per row,
// then per scale group x * (127 / amax) rounded half away from zero. Scale groups are those of
// sageattention/granularity.py (the same arithmetic as the Triton kernel and reference.py):
//   mode 0 (MODE_TILE)     one scale per 64 rows               (per_block / per_warp K)
//   mode 1 (MODE_WARP)     one per 32 rows, group r / 32        (per_warp Q)
//   mode 2 (MODE_THREAD_Q) 8 per 32 rows, group (r/32)*8 + r%8  (per_thread Q)
//   mode 3 (MODE_THREAD_K) 4 per 64 rows, group (r/64)*4 + (r%8)/2 (per_thread K)
// The stored scale is amax / 127 * scale_mul (Q passes sm_scale * log2(e), K passes 1).
// A NaN or an infinity counts as 0 for its group's amax and makes the group's scale NaN: the
// attention kernel's scores of that group then come out NaN (NaN in, NaN out, as in SDPA, at
// the granularity of a scale group), while the other groups quantize as usual.
//
// Layouts (all contiguous, zero padded): x8 int8 [B, H, n_pad, d_pad]; scales fp32
// [B, H, groups(n_pad)], or with per_row [B, H, n_pad]: each row's group scale, NaN for a row
// that held a NaN or an infinity (the Triton attention kernel reads one scale per key, so a bad
// key spoils exactly its own scores); mean fp32 [B, H, D] (zeros without smoothing). The input may have any
// strides; offsets are 64-bit.
#include "channel_stats.cuh"
#include "int8_code.cuh"
#include "kernels.h"

namespace sageattention {
namespace {

constexpr int kTile = 64;       // rows per block in pass 2 (the K scale tile)
constexpr int kThreads = 256;   // 8 warps

__host__ __device__ __forceinline__ int groups_per_tile(int mode) {
  return mode == 1 ? 2 : mode == 2 ? 16 : mode == 3 ? 4 : 1;
}

// Group of row r (0..63) inside its 64-row tile.
__device__ __forceinline__ int group_in_tile(int r, int mode) {
  switch (mode) {
    case 1: return r / 32;
    case 2: return (r / 32) * 8 + r % 8;
    case 3: return (r % 8) / 2;
    default: return 0;
  }
}

// Eight consecutive channels of one row as floats: one 16-byte load when the caller checked
// alignment (vec), else eight scalar loads; zeros past D.
template <typename T>
__device__ __forceinline__ void load8(const T* __restrict__ row, int c, int D, int64_t sd,
                                      bool vec, float (&v)[8]) {
  if (vec && c + 8 <= D) {
    uint4 raw[sizeof(T) / 2];  // 8 elements: one 16-byte load for 16-bit types, two for fp32
#pragma unroll
    for (int p = 0; p < static_cast<int>(sizeof(T) / 2); ++p)
      raw[p] = reinterpret_cast<const uint4*>(row + c)[p];
    const T* e = reinterpret_cast<const T*>(raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = to_float(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = c + i < D ? to_float(row[(c + i) * sd]) : 0.f;
  }
}

// grid (n_pad / kTile, H, B), block kThreads; dynamic shared memory: kTile * d_pad floats.
// Each thread moves 8 channels at a time (16-byte loads when aligned, 8-byte stores).
template <typename T>
__global__ void quant_int8_kernel(const T* __restrict__ x, Strides s, int N, int D, int d_pad,
                                  const float* __restrict__ mean, int mode, int n_pad,
                                  float scale_mul, bool vec, bool per_row,
                                  int8_t* __restrict__ y, float* __restrict__ scales) {
  extern __shared__ float tile[];  // [kTile][d_pad]
  __shared__ unsigned row_amax[kTile];  // float bits: amax >= 0 orders like an unsigned int
  __shared__ float group_amax[16];
  __shared__ int row_bad[kTile];  // the row held a NaN or an infinity
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int H = gridDim.y;
  const int row0 = blockIdx.x * kTile;
  const int64_t slab = b * H + h;
  const float* m = mean ? mean + slab * D : nullptr;
  const int chunks = d_pad / 8;
  if (threadIdx.x < kTile) row_amax[threadIdx.x] = 0u, row_bad[threadIdx.x] = 0;
  __syncthreads();

  // Load and smooth 8 channels per step; per-row max |x| through shared-memory atomics.
  for (int i = threadIdx.x; i < kTile * chunks; i += kThreads) {
    const int r = i / chunks, c = (i % chunks) * 8;
    const int n = row0 + r;
    float v[8];
    if (n < N && c < D) {
      load8(x + b * s.b + h * s.h + static_cast<int64_t>(n) * s.n, c, D, s.d, vec, v);
      if (m) {
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = c + e < D ? v[e] - m[c + e] : 0.f;
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = 0.f;
    }
    float amax = 0.f;
    bool bad = false;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if (!isfinite(v[e])) bad = true, v[e] = 0.f;
      tile[r * d_pad + c + e] = v[e];
      amax = fmaxf(amax, fabsf(v[e]));
    }
    atomicMax(&row_amax[r], __float_as_uint(amax));
    if (bad) row_bad[r] = 1;
  }
  __syncthreads();
  const int n_groups = groups_per_tile(mode);
  if (threadIdx.x < n_groups) {
    float g = 0.f;
    bool bad = false;
    for (int r = 0; r < kTile; ++r)
      if (group_in_tile(r, mode) == static_cast<int>(threadIdx.x)) {
        g = fmaxf(g, __uint_as_float(row_amax[r]));
        bad = bad || row_bad[r];
      }
    g = fmaxf(g, kMinAmax);
    group_amax[threadIdx.x] = g;
    if (!per_row) {
      scales[slab * (static_cast<int64_t>(n_pad / kTile) * n_groups) + blockIdx.x * n_groups +
             threadIdx.x] = bad ? poisoned_scale() : g / 127.f * scale_mul;
    }
  }
  __syncthreads();
  if (per_row && threadIdx.x < kTile) {
    const int r = threadIdx.x;
    scales[slab * n_pad + row0 + r] =
        row_bad[r] ? poisoned_scale() : group_amax[group_in_tile(r, mode)] / 127.f * scale_mul;
  }
  int8_t* out = y + (slab * n_pad + row0) * static_cast<int64_t>(d_pad);
  for (int i = threadIdx.x; i < kTile * chunks; i += kThreads) {
    const int r = i / chunks, c = (i % chunks) * 8;
    const float inv = 127.f / group_amax[group_in_tile(r, mode)];
    uint32_t packed[2] = {0u, 0u};
#pragma unroll
    for (int e = 0; e < 8; ++e) packed[e / 4] |= int8_code(tile[r * d_pad + c + e], inv) << (8 * (e % 4));
    *reinterpret_cast<uint2*>(out + r * d_pad + c) = make_uint2(packed[0], packed[1]);
  }
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> quant_int8(const Tensor& x, int64_t mode,
                                              int64_t n_pad, int64_t d_pad,
                                              bool smooth, double scale_mul, bool per_row) {
  SAGE_CHECK(x.is_cuda(), "quant_int8: x must be a CUDA tensor");
  SAGE_CHECK(x.dim() == 4, "quant_int8: x must be [B, H, N, D], got ", x.dim(), " dims");
  SAGE_CHECK(mode >= 0 && mode <= 3, "quant_int8: mode must be 0..3 (sageattention/granularity.py)");
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), D = x.size(3);
  SAGE_CHECK(n_pad % kTile == 0 && n_pad >= N, "quant_int8: n_pad must be a multiple of 64 >= N");
  SAGE_CHECK(d_pad >= D && d_pad <= 256 && d_pad % 8 == 0,
              "quant_int8: need D <= d_pad <= 256, d_pad a multiple of 8");
  SAGE_CHECK(B <= 65535 && H <= 65535, "quant_int8: B and H must each be <= 65535");
  const DeviceGuard guard(x);
  cudaStream_t stream = current_stream(x);
  Tensor mean = smooth ? empty_on(x, {B, H, D}, kFloat) : zeros_on(x, {B, H, D}, kFloat);
  Tensor y = empty_on(x, {B, H, n_pad, d_pad}, kInt8);
  const int64_t groups =
      per_row ? n_pad : (n_pad / kTile) * groups_per_tile(static_cast<int>(mode));
  Tensor scales = empty_on(x, {B, H, groups}, kFloat);
  if (B == 0 || H == 0 || n_pad == 0) return {y, scales, mean};
  const Strides s{x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const size_t smem = static_cast<size_t>(kTile) * d_pad * sizeof(float);
  dispatch_float_types(x.scalar_type(), "quant_int8", [&](auto element) {
    using scalar_t = decltype(element);
    if (smooth) {
      dim3 grid((D + 31) / 32, H, B), block(32, kStatRows);
      channel_stats_kernel<scalar_t><<<grid, block, 0, stream>>>(
          ptr<scalar_t>(x), s, static_cast<int>(N), static_cast<int>(D),
          ptr<float>(mean), nullptr, false);
      SAGE_LAUNCH_CHECK();
    }
    auto kernel = quant_int8_kernel<scalar_t>;
    if (smem > 48 * 1024) {
      SAGE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
    }
    dim3 grid(n_pad / kTile, H, B);
    // 16-byte loads need a unit channel stride and 16-byte aligned rows.
    constexpr int per16 = 16 / sizeof(scalar_t);
    const bool vec = s.d == 1 && s.n % per16 == 0 && s.h % per16 == 0 && s.b % per16 == 0 &&
                     reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
    kernel<<<grid, kThreads, smem, stream>>>(
        ptr<scalar_t>(x), s, static_cast<int>(N), static_cast<int>(D),
        static_cast<int>(d_pad), smooth ? ptr<float>(mean) : nullptr,
        static_cast<int>(mode), static_cast<int>(n_pad), static_cast<float>(scale_mul), vec,
        per_row, ptr<int8_t>(y), ptr<float>(scales));
    SAGE_LAUNCH_CHECK();
  });
  return {y, scales, mean};
}

}  // namespace sageattention
