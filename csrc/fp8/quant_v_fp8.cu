// V to FP8 e4m3 per channel, transposed, for the FP8 P·V kernels (sm89+ unit), in two passes.
//
// Pass 1 (channel_stats_kernel): per (batch, head, channel) mean and range (of V - mean with
// smooth_v, else of V).
// Pass 2 (quant_v_fp8_kernel): one 64-key tile per block: (v - mean) / scale rounded to e4m3
// (nearest, saturating), written as v8 [B, H, d_pad, n_pad] (channels major: the P·V MMA reads
// 4 consecutive keys of one channel per register). Inside each group of 16 keys the order is
// permuted so that the keys a thread holds in its score accumulator (columns 2t, 2t+1 of two
// 8-key tiles) are the 4 consecutive k of its e4m3 A fragment: key kk (0..15) is stored at
// position 4 * ((kk % 8) / 2) + 2 * (kk / 8) + kk % 2.
// scale fp32 [B, H, d_pad] = range / max_value (448 for e4m3's full range; 2.25 where the
// fp16-accumulating MMA must not overflow: 64 keys * 448 * 2.25 < 65504); padding channels
// have scale 0. mean fp32 [B, H, D] (zeros without smoothing).
#include <cuda_fp8.h>

#include "channel_stats.cuh"
#include "kernels.h"

namespace sageattention {
namespace {

constexpr int kTileKeys = 64;
constexpr int kThreads = 256;

__device__ __forceinline__ int permuted_position(int key) {
  const int kk = key % 16;
  return (key / 16) * 16 + 4 * ((kk % 8) / 2) + 2 * (kk / 8) + kk % 2;
}

// grid (n_pad / 64, H, B), block kThreads; dynamic shared memory d_pad * 64 bytes.
template <typename T>
__global__ void quant_v_fp8_kernel(const T* __restrict__ x, Strides s, int N, int D, int d_pad,
                                   const float* __restrict__ mean, const float* __restrict__ amax,
                                   float max_value, int n_pad, uint8_t* __restrict__ y,
                                   float* __restrict__ scale_out) {
  extern __shared__ uint8_t tile[];  // [d_pad][64] in stored (permuted) key order
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int H = gridDim.y;
  const int64_t slab = b * H + h;
  const int key0 = blockIdx.x * kTileKeys;
  // Read along channels (coalesced), write transposed into shared memory.
  for (int i = threadIdx.x; i < kTileKeys * d_pad; i += kThreads) {
    const int r = i / d_pad, c = i % d_pad;
    const int n = key0 + r;
    uint8_t q = 0;
    if (n < N && c < D) {
      float v = to_float(x[b * s.b + h * s.h + static_cast<int64_t>(n) * s.n + c * s.d]);
      if (mean) v -= mean[slab * D + c];
      const float range = amax[slab * D + c];
      const float inv = range > 0.f ? max_value / range : 0.f;
      q = __nv_cvt_float_to_fp8(v * inv, __NV_SATFINITE, __NV_E4M3);
    }
    tile[c * kTileKeys + permuted_position(r)] = q;
  }
  __syncthreads();
  // Rows of 64 bytes out, 16 bytes per thread.
  uint8_t* out = y + slab * static_cast<int64_t>(d_pad) * n_pad + key0;
  for (int i = threadIdx.x; i < d_pad * (kTileKeys / 16); i += kThreads) {
    const int c = i / (kTileKeys / 16), part = i % (kTileKeys / 16);
    *reinterpret_cast<uint4*>(out + static_cast<int64_t>(c) * n_pad + part * 16) =
        *reinterpret_cast<const uint4*>(tile + c * kTileKeys + part * 16);
  }
  if (blockIdx.x == 0) {
    for (int c = threadIdx.x; c < d_pad; c += kThreads) {
      scale_out[slab * d_pad + c] = c < D ? amax[slab * D + c] / max_value : 0.f;
    }
  }
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> quant_v_fp8(const Tensor& v, int64_t n_pad,
                                               int64_t d_pad, bool smooth,
                                               double max_value) {
  SAGE_CHECK(v.is_cuda(), "quant_v_fp8: v must be a CUDA tensor");
  SAGE_CHECK(v.dim() == 4, "quant_v_fp8: v must be [B, H, N, D], got ", v.dim(), " dims");
  const int64_t B = v.size(0), H = v.size(1), N = v.size(2), D = v.size(3);
  SAGE_CHECK(n_pad % kTileKeys == 0 && n_pad >= N,
              "quant_v_fp8: n_pad must be a multiple of 64 >= N");
  SAGE_CHECK(d_pad % 16 == 0 && d_pad >= D && d_pad <= 256,
              "quant_v_fp8: need D <= d_pad <= 256, d_pad a multiple of 16");
  SAGE_CHECK(max_value > 0 && max_value <= 448, "quant_v_fp8: max_value must be in (0, 448]");
  SAGE_CHECK(B <= 65535 && H <= 65535, "quant_v_fp8: B and H must each be <= 65535");
  const DeviceGuard guard(v);
  cudaStream_t stream = current_stream(v);
  Tensor mean = zeros_on(v, {B, H, D}, kFloat);
  Tensor amax = empty_on(v, {B, H, D}, kFloat);
  Tensor y = empty_on(v, {B, H, d_pad, n_pad}, kUInt8);
  Tensor scale = empty_on(v, {B, H, d_pad}, kFloat);
  if (B == 0 || H == 0 || n_pad == 0) return {y, scale, mean};
  const Strides s{v.stride(0), v.stride(1), v.stride(2), v.stride(3)};
  const size_t smem = static_cast<size_t>(d_pad) * kTileKeys;
  dispatch_float_types(v.scalar_type(), "quant_v_fp8", [&](auto element) {
    using scalar_t = decltype(element);
    dim3 sgrid((D + 31) / 32, H, B), sblock(32, kStatRows);
    channel_stats_kernel<scalar_t><<<sgrid, sblock, 0, stream>>>(
        ptr<scalar_t>(v), s, static_cast<int>(N), static_cast<int>(D),
        ptr<float>(mean), ptr<float>(amax), smooth);
    SAGE_LAUNCH_CHECK();
    dim3 grid(n_pad / kTileKeys, H, B);
    quant_v_fp8_kernel<scalar_t><<<grid, kThreads, smem, stream>>>(
        ptr<scalar_t>(v), s, static_cast<int>(N), static_cast<int>(D),
        static_cast<int>(d_pad), smooth ? ptr<float>(mean) : nullptr,
        ptr<float>(amax), static_cast<float>(max_value), static_cast<int>(n_pad),
        ptr<uint8_t>(y), ptr<float>(scale));
    SAGE_LAUNCH_CHECK();
  });
  if (!smooth) zero_fill(mean);
  return {y, scale, mean};
}

}  // namespace sageattention
