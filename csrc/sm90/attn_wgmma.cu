// INT8 Q·Kᵀ + FP8 (e4m3) P·V attention on Hopper's warpgroup MMA (wgmma): unit _C_sm90, built
// only for sm_90a (setup.py), the kernel of sageattn_qk_int8_pv_fp8_cuda_sm90.
//
// Same inputs, scales and arithmetic as attention.cuh's FP8 kernel (quant_int8's q8 and k8,
// quant_v_fp8's v8 and v_scale; the online softmax in base 2 on integer scores; P * 448 in
// e4m3), so both give the same numbers up to the order of the sums. What differs is the
// matrix work: a block is one warpgroup (4 warps, 64 query rows: warp w rows 16w..16w+15),
// whose Q·Kᵀ is one m64n64k32 wgmma per 32 channels (Q's INT8 fragments in registers, the K
// tile from shared memory) and whose P·V one m64nDk32 wgmma per 32 keys (P packed into e4m3
// registers, V's transposed tile from shared memory). The accumulators of wgmma have the
// mma.sync layout per warp, so the softmax is attention.cuh's with one m16 tile per warp.
// K and V tiles are copied with cp.async, two stages, into the swizzled layout the
// descriptors name (csrc/sm90/wgmma.cuh).
#include "attention.cuh"
#include "kernels.h"
#include "sm90/wgmma.cuh"

namespace sageattention {
namespace {

constexpr int kRows = 64;      // query rows per block (one warpgroup)
constexpr int kThreads = 128;  // one warpgroup
static_assert(kQPad % kRows == 0, "q8's row padding must cover whole blocks");

template <int D_PAD>
struct WgSmem {
  static constexpr int k_tile = kCtaK * D_PAD;  // 64 keys x D_PAD bytes, rows D_PAD bytes
  static constexpr int v_tile = D_PAD * kCtaK;  // D_PAD channels x 64 keys, rows 64 bytes
  static constexpr int bytes = 2 * (k_tile + v_tile) + 1024;  // + the base's 1024-byte alignment
};

template <int D_PAD>
__device__ __forceinline__ void load_k_tile_wg(const AttnParams& p, uint32_t dst, int64_t bhk,
                                               int tile) {
  constexpr int kCpr = D_PAD / 16;  // 16-byte chunks per key row
  constexpr int kIters = kCtaK * kCpr / kThreads;
  const int8_t* src = p.k8 + (bhk * p.nk_pad + static_cast<int64_t>(tile) * kCtaK) * D_PAD;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = threadIdx.x + it * kThreads;  // chunk c is byte 16 c of the tile
    ptx::cp_async_16_full(dst + wgmma::swizzled_offset<D_PAD>(16 * c), src + 16 * c);
  }
}

template <int D_PAD>
__device__ __forceinline__ void load_v_tile_wg(const AttnParams& p, uint32_t dst, int64_t bhk,
                                               int tile) {
  constexpr int kIters = D_PAD * 4 / kThreads;  // 4 chunks of 16 keys per channel row
  const uint8_t* src = static_cast<const uint8_t*>(p.v) + bhk * D_PAD * static_cast<int64_t>(p.nk_pad) +
                       static_cast<int64_t>(tile) * kCtaK;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = threadIdx.x + it * kThreads, row = c / 4, chunk = c % 4;
    ptx::cp_async_16_full(dst + wgmma::swizzled_offset<64>(64 * row + 16 * chunk),
                          src + static_cast<int64_t>(row) * p.nk_pad + 16 * chunk);
  }
}

// TWO_LEVEL: each key tile's P·V goes into a fresh fp32 accumulator that is then added to the
// output ("fp32+fp32": the tensor cores' FP8 accumulation keeps fewer bits than fp32, so the
// long sum over key tiles is done outside them); otherwise straight into the output ("fp32").
template <int D_PAD, bool CAUSAL, bool TWO_LEVEL>
__global__ void __launch_bounds__(kThreads, 2) attention_wgmma_kernel(const AttnParams p) {
  using L = WgSmem<D_PAD>;
  constexpr int KC = D_PAD / 32;  // k32 steps of Q·Kᵀ
  constexpr int NO = D_PAD / 2;   // output registers per thread (D_PAD / 8 n8 tiles x 4)
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t smem = (ptx::smem_addr(smem_raw) + 1023) & ~1023u;
  const uint32_t k_smem = smem, v_smem = smem + 2 * L::k_tile;

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int q_block = CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x;  // long rows first
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (p.Hq / p.Hkv);
  const int64_t bh = b * p.Hq + h, bhk = b * p.Hkv + hk;
  const int q0 = q_block * kRows + 16 * warp;  // this warp's first row

  int n_tiles = (p.Nk + kCtaK - 1) / kCtaK;
  if (CAUSAL) n_tiles = min(n_tiles, (min((q_block + 1) * kRows, p.Nq) - 1) / kCtaK + 1);
  load_k_tile_wg<D_PAD>(p, k_smem, bhk, 0);
  ptx::cp_async_commit();
  load_v_tile_wg<D_PAD>(p, v_smem, bhk, 0);
  ptx::cp_async_commit();

  // Q's INT8 A fragments (rows q0 + g and q0 + g + 8, inside q8's padding) and their scale
  // (both rows are in one 32-row group and have the same r % 8).
  uint32_t qf[KC][4];
  {
    const int8_t* q = p.q8 + (bh * p.nq_pad + q0 + g) * D_PAD + 4 * t;
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      qf[kc][0] = *reinterpret_cast<const uint32_t*>(q + 32 * kc);
      qf[kc][1] = *reinterpret_cast<const uint32_t*>(q + 8 * D_PAD + 32 * kc);
      qf[kc][2] = *reinterpret_cast<const uint32_t*>(q + 32 * kc + 16);
      qf[kc][3] = *reinterpret_cast<const uint32_t*>(q + 8 * D_PAD + 32 * kc + 16);
    }
  }
  const float q_scale = p.per_thread ? p.q_scale[bh * (p.nq_pad / 32 * 8) + (q0 / 32) * 8 + g]
                                     : p.q_scale[bh * (p.nq_pad / 32) + q0 / 32];
  const int k_scale_step = p.per_thread ? 4 : 1;
  const float* k_scale = p.k_scale + bhk * (p.nk_pad / kCtaK) * k_scale_step + (p.per_thread ? t : 0);
  float k_scale_cur = k_scale[0];

  float o[NO];
#pragma unroll
  for (int i = 0; i < NO; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  auto step = [&](const int tile, auto bounds_c) {
    constexpr bool kBounds = decltype(bounds_c)::value;
    const int stage = tile & 1;
    const bool has_next = tile + 1 < n_tiles;
    ptx::cp_async_wait<1>();  // this tile's K has landed
    wgmma::fence_async_shared();
    __syncthreads();
    if (has_next) load_k_tile_wg<D_PAD>(p, k_smem + (stage ^ 1) * L::k_tile, bhk, tile + 1);
    ptx::cp_async_commit();

    int acc[32];
    wgmma::fence();
#pragma unroll
    for (int kc = 0; kc < KC; ++kc)
      wgmma::mma_s8_n64(acc, qf[kc], wgmma::tile_desc<D_PAD>(k_smem + stage * L::k_tile + 32 * kc),
                        kc > 0);
    wgmma::commit();
    wgmma::wait<0>();

    float sc = q_scale * k_scale_cur;
    if (has_next) k_scale_cur = k_scale[(tile + 1) * k_scale_step];
    if (sc < 0.f) {  // a negative sm_scale: the max is taken on the negated integers
      sc = -sc;
#pragma unroll
      for (int i = 0; i < 32; ++i) acc[i] = -acc[i];
    }
    const int key0 = tile * kCtaK;
    if constexpr (kBounds) {
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        const int key = key0 + 8 * (i / 4) + 2 * t + (i & 1);
        const int row = q0 + g + 8 * ((i % 4) >> 1);
        if (key >= p.Nk || (CAUSAL && key > row)) acc[i] = INT_MIN;
      }
    }
    float m_use[2], alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      int mx[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) mx[j] = max(acc[4 * j + 2 * r], acc[4 * j + 2 * r + 1]);
#pragma unroll
      for (int w = 4; w > 0; w /= 2)
#pragma unroll
        for (int j = 0; j < w; ++j) mx[j] = max(mx[j], mx[j + w]);
      float row_max = mx[0] == INT_MIN ? -INFINITY : static_cast<float>(mx[0]) * sc;
      row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 1));
      row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 2));
      const float m_new = fmaxf(m[r], row_max);
      m_use[r] = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = ptx::fast_exp2(m[r] - m_use[r]);
      m[r] = m_new;
    }
    // exp2(acc * sc - m) with acc read as a float through the 1.5 * 2^23 bias (one FMA).
    const float offset[2] = {-12582912.f * sc - m_use[0], -12582912.f * sc - m_use[1]};
    float s[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const float x = fmaf(__uint_as_float(static_cast<unsigned>(acc[i]) + 0x4B400000u), sc,
                           offset[(i % 4) >> 1]);
      s[i] = ptx::fast_exp2(kBounds && acc[i] == INT_MIN ? -INFINITY : x);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float sum[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) sum[j] = s[4 * j + 2 * r] + s[4 * j + 2 * r + 1];
#pragma unroll
      for (int w = 4; w > 0; w /= 2)
#pragma unroll
        for (int j = 0; j < w; ++j) sum[j] += sum[j + w];
      l[r] = l[r] * alpha[r] + sum[0];  // the thread's columns; the row's 4 threads add up last
    }
    // e4m3 A fragments of the two k32 steps, as attention.cuh packs them (quant_v_fp8.cu
    // stores V's keys in the matching order).
    uint32_t pa[2][4];
#pragma unroll
    for (int ks = 0; ks < 2; ++ks)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int j = 4 * ks + 2 * (i / 2), e = 2 * (i % 2);
        pa[ks][i] = ptx::pack4_e4m3(s[4 * j + e] * kFp8PScale, s[4 * j + e + 1] * kFp8PScale,
                                    s[4 * (j + 1) + e] * kFp8PScale, s[4 * (j + 1) + e + 1] * kFp8PScale);
      }
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int i = 0; i < NO; ++i) o[i] *= alpha[(i % 4) >> 1];
    }

    if (has_next) ptx::cp_async_wait<1>();  // this tile's V has landed
    else ptx::cp_async_wait<0>();
    wgmma::fence_async_shared();
    __syncthreads();
    if (has_next) load_v_tile_wg<D_PAD>(p, v_smem + (stage ^ 1) * L::v_tile, bhk, tile + 1);
    ptx::cp_async_commit();

    const uint32_t vs = v_smem + stage * L::v_tile;
    [[maybe_unused]] float ob[TWO_LEVEL ? NO : 1];
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      const uint64_t desc = wgmma::tile_desc<64>(vs + 32 * ks);
      if constexpr (TWO_LEVEL) {
        if constexpr (D_PAD == 128) wgmma::mma_e4m3_n128(ob, pa[ks], desc, ks > 0);
        else wgmma::mma_e4m3_n64(ob, pa[ks], desc, ks > 0);
      } else {
        if constexpr (D_PAD == 128) wgmma::mma_e4m3_n128(o, pa[ks], desc, 1);
        else wgmma::mma_e4m3_n64(o, pa[ks], desc, 1);
      }
    }
    wgmma::commit();
    wgmma::wait<0>();
    if constexpr (TWO_LEVEL) {
#pragma unroll
      for (int i = 0; i < NO; ++i) o[i] += ob[i];
    }
  };

  // Tiles no row of the block masks: all keys below Nk and, causally, at or before its first row.
  int n_plain = min(p.Nk / kCtaK, n_tiles);
  if (CAUSAL) n_plain = min(n_plain, (q_block * kRows + 1) / kCtaK);
  int tile = 0;
  for (; tile < n_plain; ++tile) step(tile, std::false_type{});
  for (; tile < n_tiles; ++tile) step(tile, std::true_type{});

  // Normalize and store (rows past Nq and channels past D are padding).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    const float inv = lr == 0.f ? 0.f : 1.f / lr;  // no visible key: zeros; NaN stays NaN
    const int row = q0 + g + 8 * r;
    if (row >= p.Nq) continue;
    const int64_t base = b * p.o_sb + h * p.o_sh + static_cast<int64_t>(row) * p.o_sn;
#pragma unroll
    for (int n = 0; n < D_PAD / 8; ++n) {
      const int col = 8 * n + 2 * t;
      if (col >= p.D) continue;
      const float* vsc = p.v_scale + bhk * D_PAD + col;
      const float x0 = o[4 * n + 2 * r] * inv * (vsc[0] * (1.f / kFp8PScale));
      const float x1 = o[4 * n + 2 * r + 1] * inv * (vsc[1] * (1.f / kFp8PScale));
      if (p.out_bf16) {
        *reinterpret_cast<uint32_t*>(static_cast<__nv_bfloat16*>(p.out) + base + col) =
            ptx::pack2<__nv_bfloat16>(x0, x1);
      } else {
        *reinterpret_cast<uint32_t*>(static_cast<__half*>(p.out) + base + col) = ptx::pack2<__half>(x0, x1);
      }
    }
    if (p.lse != nullptr && t == 0) {
      p.lse[bh * p.Nq + row] = lr == 0.f ? -INFINITY : (m[r] + log2f(lr)) * 0.6931471805599453f;
    }
  }
}

template <int D_PAD, bool CAUSAL, bool TWO_LEVEL>
void launch(const AttnParams& p, int B, cudaStream_t stream) {
  auto kernel = attention_wgmma_kernel<D_PAD, CAUSAL, TWO_LEVEL>;
  constexpr int smem = WgSmem<D_PAD>::bytes;
  if (smem > 48 * 1024) {
    SAGE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  }
  dim3 grid((p.Nq + kRows - 1) / kRows, p.Hq, B);
  kernel<<<grid, kThreads, smem, stream>>>(p);
  SAGE_LAUNCH_CHECK();
}

}  // namespace

std::tuple<Tensor, Tensor> attn_int8_fp8_sm90(const Tensor& q8, const Tensor& q_scale,
                                              const Tensor& k8, const Tensor& k_scale,
                                              const Tensor& v8, const Tensor& v_scale, int64_t nq,
                                              int64_t nk, int64_t head_dim, bool nhd, bool causal,
                                              bool per_thread, int64_t pv_mode, bool return_lse,
                                              bool out_bf16) {
  const char* op = "attn_int8_fp8_sm90";
  SAGE_CHECK(q8.scalar_type() == kInt8, op, ": q8 must be quant_int8's int8 Q");
  check_quantized(q8, q_scale, k8, k_scale, nq, per_thread, op);
  SAGE_CHECK(pv_mode == kPvF8AccF32 || pv_mode == kPvF8AccF32F32, op, ": pv_mode must be 2 or 3");
  const int64_t B = q8.size(0), Hq = q8.size(1);
  check_fp8_v(v8, v_scale, k8, nk, head_dim, op);
  const DeviceGuard guard(k8);
  cudaStream_t stream = current_stream(k8);
  auto [out, lse] = allocate_outputs(k8, B, Hq, nq, head_dim, nhd, out_bf16 ? kBFloat16 : kHalf,
                                     return_lse);
  if (nq == 0 || B == 0 || Hq == 0) return {out, lse};
  AttnParams p = common_params(q8, q_scale, k8, k_scale, out, lse, nq, nk, head_dim, nhd,
                               per_thread, out_bf16, 1.0);
  p.v = v8.data_ptr();
  p.v_scale = ptr<float>(v_scale);
  dispatch_shape(k8.size(3), causal, [&](auto d_pad_c, auto causal_c) {
    constexpr int kD = decltype(d_pad_c)::value;
    constexpr bool kCausal = decltype(causal_c)::value;
    if (pv_mode == kPvF8AccF32F32) launch<kD, kCausal, true>(p, static_cast<int>(B), stream);
    else launch<kD, kCausal, false>(p, static_cast<int>(B), stream);
  });
  return {out, lse};
}

}  // namespace sageattention
