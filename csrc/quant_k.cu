// K smoothing and INT8 quantization of K in two passes (one op call from Python).
//
// Pass 1 (channel_mean_kernel): mean over the sequence of every (batch, head, channel), fp32.
// Pass 2 (quant_k_kernel): one 64-row tile per block; subtract the mean, max |x| per row, then
// per scale group (sageattention/granularity.py: MODE_TILE = one scale per 64 rows,
// MODE_THREAD_K = 4 scales per 64 rows, rows with the same (r % 8) / 2), x * (127 / amax)
// rounded half away from zero. Same arithmetic as the Triton kernel and reference.py.
//
// Layouts (all contiguous, zero padded): k8 int8 [B, H, n_pad, d_pad]; scales fp32
// [B, H, groups(n_pad)] holding amax / 127; mean fp32 [B, H, D]. The input may have any
// strides; offsets are 64-bit.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that one needs cuSPARSE headers

#include "quant_k.h"

namespace sageattention {
namespace {

constexpr int kTile = 64;       // rows per block in pass 2 (the K scale tile)
constexpr int kThreads = 256;   // 8 warps
constexpr int kMeanRows = 8;    // row lanes per block in pass 1 (x 32 channels)

template <typename T>
__device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }

struct Strides {
  int64_t b, h, n, d;
};

// grid (ceil(D / 32), H, B), block (32, kMeanRows)
template <typename T>
__global__ void channel_mean_kernel(const T* __restrict__ x, Strides s, int N, int D,
                                    float* __restrict__ mean) {
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int H = gridDim.y;
  __shared__ float partial[kMeanRows][32];
  float acc = 0.f;
  if (c < D) {
    const T* base = x + b * s.b + h * s.h + c * s.d;
    for (int r = threadIdx.y; r < N; r += kMeanRows) acc += to_float(base[r * s.n]);
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < D) {
    float total = 0.f;
#pragma unroll
    for (int i = 0; i < kMeanRows; ++i) total += partial[i][threadIdx.x];
    mean[(b * H + h) * D + c] = total / static_cast<float>(N);
  }
}

__device__ __forceinline__ int group_in_tile(int r, int mode) {
  // MODE_TILE (0): the whole tile; MODE_THREAD_K (3): (r % 8) / 2.
  return mode == 3 ? (r % 8) / 2 : 0;
}

// grid (n_pad / kTile, H, B), block kThreads; dynamic shared memory: kTile * d_pad floats.
template <typename T>
__global__ void quant_k_kernel(const T* __restrict__ x, Strides s, int N, int D, int d_pad,
                               const float* __restrict__ mean, int mode, int n_pad,
                               int8_t* __restrict__ y, float* __restrict__ scales) {
  extern __shared__ float tile[];  // [kTile][d_pad]
  __shared__ float row_amax[kTile];
  __shared__ float group_amax[4];
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int H = gridDim.y;
  const int row0 = blockIdx.x * kTile;
  const int64_t slab = b * H + h;
  const float* m = mean ? mean + slab * D : nullptr;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  // Load, smooth; each warp owns rows warp, warp + 8, ...
  for (int r = warp; r < kTile; r += kThreads / 32) {
    const int n = row0 + r;
    float amax = 0.f;
    for (int c = lane; c < d_pad; c += 32) {
      float v = 0.f;
      if (n < N && c < D) {
        v = to_float(x[b * s.b + h * s.h + static_cast<int64_t>(n) * s.n + c * s.d]);
        if (m) v -= m[c];
      }
      tile[r * d_pad + c] = v;
      amax = fmaxf(amax, fabsf(v));
    }
    for (int o = 16; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (lane == 0) row_amax[r] = amax;
  }
  __syncthreads();
  const int n_groups = mode == 3 ? 4 : 1;
  if (threadIdx.x < n_groups) {
    float g = 0.f;
    for (int r = 0; r < kTile; ++r)
      if (group_in_tile(r, mode) == static_cast<int>(threadIdx.x)) g = fmaxf(g, row_amax[r]);
    g = fmaxf(g, 1e-30f);
    group_amax[threadIdx.x] = g;
    scales[slab * (static_cast<int64_t>(n_pad / kTile) * n_groups) + blockIdx.x * n_groups +
           threadIdx.x] = g / 127.f;
  }
  __syncthreads();
  int8_t* out = y + (slab * n_pad + row0) * static_cast<int64_t>(d_pad);
  for (int i = threadIdx.x; i < kTile * d_pad; i += kThreads) {
    const int r = i / d_pad;
    const float inv = 127.f / group_amax[group_in_tile(r, mode)];
    float v = tile[i] * inv;
    v = v >= 0.f ? v + 0.5f : v - 0.5f;
    v = fminf(fmaxf(v, -127.f), 127.f);
    out[i] = static_cast<int8_t>(__float2int_rz(v));
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> quant_k_int8(const at::Tensor& k, int64_t mode,
                                                            int64_t n_pad, int64_t d_pad,
                                                            bool smooth) {
  TORCH_CHECK(k.is_cuda(), "quant_k_int8: k must be a CUDA tensor");
  TORCH_CHECK(k.dim() == 4, "quant_k_int8: k must be [B, H, N, D], got ", k.dim(), " dims");
  TORCH_CHECK(mode == 0 || mode == 3, "quant_k_int8: mode must be 0 (per block) or 3 (per thread)");
  const int64_t B = k.size(0), H = k.size(1), N = k.size(2), D = k.size(3);
  TORCH_CHECK(n_pad % kTile == 0 && n_pad >= N, "quant_k_int8: n_pad must be a multiple of 64 >= N");
  TORCH_CHECK(d_pad >= D && d_pad <= 256, "quant_k_int8: need D <= d_pad <= 256");
  TORCH_CHECK(B <= 65535 && H <= 65535, "quant_k_int8: B and H must each be <= 65535");
  const c10::cuda::CUDAGuard guard(k.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto f32 = k.options().dtype(at::kFloat);
  at::Tensor mean = at::empty({B, H, D}, f32);
  at::Tensor y = at::empty({B, H, n_pad, d_pad}, k.options().dtype(at::kChar));
  const int64_t groups = (n_pad / kTile) * (mode == 3 ? 4 : 1);
  at::Tensor scales = at::empty({B, H, groups}, f32);
  const Strides s{k.stride(0), k.stride(1), k.stride(2), k.stride(3)};
  const size_t smem = static_cast<size_t>(kTile) * d_pad * sizeof(float);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, k.scalar_type(), "quant_k_int8", [&] {
    if (smooth && N > 0) {
      dim3 grid((D + 31) / 32, H, B), block(32, kMeanRows);
      channel_mean_kernel<scalar_t><<<grid, block, 0, stream>>>(
          k.data_ptr<scalar_t>(), s, static_cast<int>(N), static_cast<int>(D),
          mean.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    auto kernel = quant_k_kernel<scalar_t>;
    if (smem > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
    }
    dim3 grid(n_pad / kTile, H, B);
    kernel<<<grid, kThreads, smem, stream>>>(
        k.data_ptr<scalar_t>(), s, static_cast<int>(N), static_cast<int>(D),
        static_cast<int>(d_pad), smooth ? mean.data_ptr<float>() : nullptr, static_cast<int>(mode),
        static_cast<int>(n_pad), y.data_ptr<int8_t>(), scales.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (!smooth) mean.zero_();
  return {y, scales, mean};
}

}  // namespace sageattention
