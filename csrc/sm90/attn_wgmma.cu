// INT8 Q·Kᵀ + FP8 (e4m3) P·V attention on Hopper's warpgroup MMA (wgmma): unit _C_sm90, built
// only for sm_90a (setup.py), the kernel of sageattn_qk_int8_pv_fp8_cuda_sm90.
//
// Same inputs, scales and arithmetic as attention.cuh's FP8 kernel (quant_int8's q8 and k8,
// quant_v_fp8's v8 and v_scale; the online softmax in base 2 on integer scores; P * 448 in
// e4m3), so both give the same numbers up to the order of the sums. What differs is the
// matrix work: a block is one warpgroup (4 warps, 64 query rows: warp w rows 16w..16w+15)
// that walks the keys in tiles of 128. Its Q·Kᵀ is one m64n128k32 wgmma per 32 channels, both
// operands from shared memory (Q's tile is copied once), and its P·V one m64nDk32 wgmma per
// 32 keys (P packed into e4m3 registers, V's transposed tile from shared memory). A tile of
// 128 keys holds two of k_scale's 64-key groups, so each half of the scores has its own
// scale. The accumulators of wgmma have the mma.sync layout per warp, so the softmax is
// attention.cuh's with one m16 tile per warp. Q, K and V tiles are copied by TMA (K and V
// in two stages, csrc/sm90/tma.cuh) into the swizzled layout the descriptors name
// (csrc/sm90/wgmma.cuh).
//
// Why 128-key tiles (docs/perf-notes.md): every tile pays two barrier waits, two waits for
// the whole wgmma latency, the row max and sum shuffles and the rescale of the output; twice
// the keys per tile halves all of that per key, and n128 is the wgmma shape that keeps the
// tensor cores busiest.
#include "attention.cuh"
#include "kernels.h"
#include "sm90/tma.cuh"
#include "sm90/wgmma.cuh"

// Blocks per SM the registers are budgeted for (__launch_bounds__): 2 leaves ptxas up to 255
// registers per thread, 3 asks for at most 168. Measured (docs/perf-notes.md row 41): at D=128
// 2 (3 spills in "fp32+fp32" and is 6% slower at full attention), at D=64 3 (+15-20% over 2).
// SAGE_WGMMA_MIN_BLOCKS overrides both, for measurements.
#ifdef SAGE_WGMMA_MIN_BLOCKS
#define SAGE_WGMMA_BLOCKS(D_PAD) SAGE_WGMMA_MIN_BLOCKS
#else
#define SAGE_WGMMA_BLOCKS(D_PAD) ((D_PAD) == 64 ? 3 : 2)
#endif
// 1: the pipelined loop (wgmma through the softmax), 0: each wgmma waited for at once. The
// pipelined loop passed the GPU tests but gave nothing over the plain one with two blocks per
// SM (docs/perf-notes.md row 41), so builds use 0; it stays for the warp-specialised version.
#ifndef SAGE_WGMMA_PIPELINE
#define SAGE_WGMMA_PIPELINE 0
#endif

namespace sageattention {
namespace {

constexpr int kRows = 64;                  // query rows per block (one warpgroup)
constexpr int kThreads = 128;              // one warpgroup
constexpr int kTileK = 128;                // keys per tile
constexpr int kGroups = kTileK / kCtaK;    // k_scale groups per tile
static_assert(kQPad % kRows == 0, "q8's row padding must cover whole blocks");
static_assert(kGroups == 2, "the softmax below splits a tile's scores into two scale groups");

template <int D_PAD>
struct WgSmem {
  static constexpr int q_tile = kRows * D_PAD;   // 64 rows x D_PAD bytes
  static constexpr int k_tile = kTileK * D_PAD;  // 128 keys x D_PAD bytes, rows D_PAD bytes
  static constexpr int v_tile = D_PAD * kTileK;  // D_PAD channels x 128 keys, rows 128 bytes
  static constexpr int bytes = q_tile + 2 * (k_tile + v_tile) + 1024;  // + the 1024-byte alignment
  static_assert(q_tile % 1024 == 0 && k_tile % 1024 == 0, "swizzled tiles start 1024-aligned");
};

// Pairwise sum of n values (a tree: short dependency chains, fully unrolled at any n).
template <int N>
__device__ __forceinline__ float tree_sum(const float* x) {
  if constexpr (N == 1) return x[0];
  else return tree_sum<N / 2>(x) + tree_sum<N / 2>(x + N / 2);
}

constexpr int kNS = kTileK / 2;  // score registers per thread (16 n8 tiles x 4)
constexpr int kKS = kTileK / 32;  // k32 steps of P·V

// One tile's online-softmax step on its integer scores acc (row r = (i % 4) >> 1 of the
// thread, key 8 (i / 4) + 2t + (i & 1) of the tile, key group i / (kNS / kGroups)): updates
// the row max m and sum l, gives the output's rescale factors alpha and P * 448 as the e4m3 A
// fragments of the kKS k32 steps of P·V (as attention.cuh packs them; quant_v_fp8.cu stores
// V's keys in the matching order, per 16 keys). kBounds: hide keys past Nk and, causally,
// after the row.
template <bool kBounds, bool CAUSAL>
__device__ __forceinline__ void softmax_tile(int (&acc)[kNS], float (&sc)[kGroups], const AttnParams& p,
                                             int key0, int row0, int t, float (&m)[2], float (&l)[2],
                                             float (&alpha)[2], uint32_t (&pa)[kKS][4]) {
#pragma unroll
  for (int gi = 0; gi < kGroups; ++gi) {
    if (sc[gi] < 0.f) {  // a negative sm_scale: the max is taken on the negated integers
      sc[gi] = -sc[gi];
#pragma unroll
      for (int i = 0; i < kNS / kGroups; ++i) acc[gi * kNS / kGroups + i] = -acc[gi * kNS / kGroups + i];
    }
  }
  if constexpr (kBounds) {
#pragma unroll
    for (int i = 0; i < kNS; ++i) {
      const int key = key0 + 8 * (i / 4) + 2 * t + (i & 1);
      const int row = row0 + 8 * ((i % 4) >> 1);
      if (key >= p.Nk || (CAUSAL && key > row)) acc[i] = INT_MIN;
    }
  }
  float m_use[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float row_max = -INFINITY;
#pragma unroll
    for (int gi = 0; gi < kGroups; ++gi) {
      int mx[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int base = gi * kNS / kGroups + 4 * j + 2 * r;
        mx[j] = max(acc[base], acc[base + 1]);
      }
#pragma unroll
      for (int w = 4; w > 0; w /= 2)
#pragma unroll
        for (int j = 0; j < w; ++j) mx[j] = max(mx[j], mx[j + w]);
      row_max = fmaxf(row_max, mx[0] == INT_MIN ? -INFINITY : static_cast<float>(mx[0]) * sc[gi]);
    }
    row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 1));
    row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 2));
    const float m_new = fmaxf(m[r], row_max);
    m_use[r] = m_new == -INFINITY ? 0.f : m_new;
    alpha[r] = ptx::fast_exp2(m[r] - m_use[r]);
    m[r] = m_new;
  }
  // exp2(acc * sc - m) with acc read as a float through the 1.5 * 2^23 bias (one FMA).
  float offset[kGroups][2];
#pragma unroll
  for (int gi = 0; gi < kGroups; ++gi)
#pragma unroll
    for (int r = 0; r < 2; ++r) offset[gi][r] = -12582912.f * sc[gi] - m_use[r];
  float s[kNS];
#pragma unroll
  for (int i = 0; i < kNS; ++i) {
    const int gi = i / (kNS / kGroups), r = (i % 4) >> 1;
    const float x = fmaf(__uint_as_float(static_cast<unsigned>(acc[i]) + 0x4B400000u), sc[gi],
                         offset[gi][r]);
    s[i] = ptx::fast_exp2(kBounds && acc[i] == INT_MIN ? -INFINITY : x);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) sum[j] = s[4 * j + 2 * r] + s[4 * j + 2 * r + 1];
    l[r] = l[r] * alpha[r] + tree_sum<16>(sum);  // the thread's columns; the row's 4 threads add up last
  }
#pragma unroll
  for (int ks = 0; ks < kKS; ++ks)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int j = 4 * ks + 2 * (i / 2), e = 2 * (i % 2);
      pa[ks][i] = ptx::pack4_e4m3(s[4 * j + e] * kFp8PScale, s[4 * j + e + 1] * kFp8PScale,
                                  s[4 * (j + 1) + e] * kFp8PScale, s[4 * (j + 1) + e + 1] * kFp8PScale);
    }
}

// P·V of one tile (kKS k32 steps) into d: fresh (kFresh: the first step overwrites) or added.
template <int D_PAD, bool kFresh>
__device__ __forceinline__ void pv_tile(float (&d)[D_PAD / 2], const uint32_t (&pa)[kKS][4], uint32_t vs) {
#pragma unroll
  for (int ks = 0; ks < kKS; ++ks) {
    const uint64_t desc = wgmma::tile_desc<128>(vs + 32 * ks);
    if constexpr (D_PAD == 128) wgmma::mma_e4m3_n128(d, pa[ks], desc, kFresh ? ks > 0 : 1);
    else wgmma::mma_e4m3_n64(d, pa[ks], desc, kFresh ? ks > 0 : 1);
  }
}

// TWO_LEVEL: each key tile's P·V goes into a fresh fp32 accumulator that is then added to the
// output ("fp32+fp32": the tensor cores' FP8 accumulation keeps fewer bits than fp32, so the
// long sum over key tiles is done outside them); otherwise straight into the output ("fp32").
//
// Loads: thread 0 issues every tile as one TMA copy (csrc/sm90/tma.cuh) into a ring of two
// stages per operand, each with its own mbarrier; a stage is refilled with the tile two ahead
// as soon as the wgmma that read it has completed. A wgmma is one operation of the whole
// warpgroup: when thread 0's wait for it returns, all four warps' parts have read their
// operands, so no block barrier guards the refill.
//
// PIPELINED: the tensor cores work through the softmax. Iteration t issues Q·Kᵀ of tile t + 1
// and then P·V of tile t, waits for the first only and runs tile t + 1's softmax while P·V
// is in flight; then waits for P·V and folds it into the output. P of tile t stays in its
// registers until its P·V is done, so P is double-buffered. Otherwise each wgmma is waited
// for at once (the tensor cores idle through the softmax, other blocks on the SM fill in).
template <int D_PAD, bool CAUSAL, bool TWO_LEVEL, bool PIPELINED>
__global__ void __launch_bounds__(kThreads, SAGE_WGMMA_BLOCKS(D_PAD))
    attention_wgmma_kernel(const AttnParams p, const __grid_constant__ CUtensorMap q_map,
                           const __grid_constant__ CUtensorMap k_map,
                           const __grid_constant__ CUtensorMap v_map) {
  using L = WgSmem<D_PAD>;
  constexpr int KC = D_PAD / 32;  // k32 steps of Q·Kᵀ
  constexpr int NO = D_PAD / 2;   // output registers per thread (D_PAD / 8 n8 tiles x 4)
  extern __shared__ __align__(16) uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t bars[5];  // Q, K stage 0/1, V stage 0/1
  const uint32_t smem = (ptx::smem_addr(smem_raw) + 1023) & ~1023u;
  const uint32_t q_smem = smem, k_smem = smem + L::q_tile, v_smem = k_smem + 2 * L::k_tile;
  const uint32_t q_bar = ptx::smem_addr(&bars[0]);
  auto k_bar = [&](int stage) { return q_bar + 8 * (1 + stage); };
  auto v_bar = [&](int stage) { return q_bar + 8 * (3 + stage); };

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int q_block = CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x;  // long rows first
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (p.Hq / p.Hkv);
  const int64_t bh = b * p.Hq + h, bhk = b * p.Hkv + hk;
  const int q0 = q_block * kRows + 16 * warp;  // this warp's first row
  const bool issuer = threadIdx.x == 0;

  int n_tiles = (p.Nk + kTileK - 1) / kTileK;
  if (CAUSAL) n_tiles = min(n_tiles, (min((q_block + 1) * kRows, p.Nq) - 1) / kTileK + 1);
  // Tiles no row of the block masks: all keys below Nk and, causally, at or before its first row.
  int n_plain = min(p.Nk / kTileK, n_tiles);
  if (CAUSAL) n_plain = min(n_plain, (q_block * kRows + 1) / kTileK);

  // Tile `tile` of K or V into its stage (tile % 2). Keys past k8's / v8's padding read as zeros.
  auto load_k = [&](int tile) {
    tma::mbar_expect_bytes(k_bar(tile & 1), L::k_tile);
    tma::load_3d(k_smem + (tile & 1) * L::k_tile, k_map, k_bar(tile & 1), 0, tile * kTileK,
                 static_cast<int>(bhk));
  };
  auto load_v = [&](int tile) {
    tma::mbar_expect_bytes(v_bar(tile & 1), L::v_tile);
    tma::load_3d(v_smem + (tile & 1) * L::v_tile, v_map, v_bar(tile & 1), tile * kTileK, 0,
                 static_cast<int>(bhk));
  };
  auto wait_k = [&](int tile) { tma::mbar_wait(k_bar(tile & 1), (tile >> 1) & 1); };
  auto wait_v = [&](int tile) { tma::mbar_wait(v_bar(tile & 1), (tile >> 1) & 1); };
  if (issuer) {
    tma::prefetch_map(q_map);
    tma::prefetch_map(k_map);
    tma::prefetch_map(v_map);
#pragma unroll
    for (int i = 0; i < 5; ++i) tma::mbar_init(q_bar + 8 * i, 1);
    tma::fence_mbar_init();
  }
  __syncthreads();
  if (issuer) {
    tma::mbar_expect_bytes(q_bar, L::q_tile);
    tma::load_3d(q_smem, q_map, q_bar, 0, q_block * kRows, static_cast<int>(bh));
    for (int tile = 0; tile < min(n_tiles, 2); ++tile) {
      load_k(tile);
      load_v(tile);
    }
  }

  // Q's scale (rows q0 + g and q0 + g + 8 are in one 32-row group and have the same r % 8).
  const float q_scale = p.per_thread ? p.q_scale[bh * (p.nq_pad / 32 * 8) + (q0 / 32) * 8 + g]
                                     : p.q_scale[bh * (p.nq_pad / 32) + q0 / 32];
  const int k_scale_step = p.per_thread ? 4 : 1;
  const int k_groups = p.nk_pad / kCtaK;
  const float* k_scale = p.k_scale + bhk * k_groups * k_scale_step + (p.per_thread ? t : 0);
  float o[NO];
#pragma unroll
  for (int i = 0; i < NO; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  // The score scales of a tile's two key groups; a group past the padding holds only hidden keys.
  auto tile_scales = [&](int tile, float (&sc)[kGroups]) {
#pragma unroll
    for (int gi = 0; gi < kGroups; ++gi) {
      const int group = kGroups * tile + gi;
      sc[gi] = q_scale * (group < k_groups ? k_scale[group * k_scale_step] : 0.f);
    }
  };
  auto qk_tile = [&](int (&acc)[kNS], int stage) {
#pragma unroll
    for (int kc = 0; kc < KC; ++kc)
      wgmma::mma_s8_n128_ss(acc, wgmma::tile_desc<D_PAD>(q_smem + 32 * kc),
                            wgmma::tile_desc<D_PAD>(k_smem + stage * L::k_tile + 32 * kc), kc > 0);
  };
  auto softmax = [&](int tile, int (&acc)[kNS], float (&sc)[kGroups], float (&alpha)[2],
                     uint32_t (&pa)[kKS][4]) {
    if (tile < n_plain) softmax_tile<false, CAUSAL>(acc, sc, p, tile * kTileK, q0 + g, t, m, l, alpha, pa);
    else softmax_tile<true, CAUSAL>(acc, sc, p, tile * kTileK, q0 + g, t, m, l, alpha, pa);
  };

  [[maybe_unused]] float ob[TWO_LEVEL ? NO : 1];
  auto fold = [&](const float (&alpha)[2]) {  // TWO_LEVEL: rescale and sum in one FMA
#pragma unroll
    for (int i = 0; i < NO; ++i) o[i] = fmaf(o[i], alpha[(i % 4) >> 1], ob[i]);
  };
  auto rescale = [&](const float (&alpha)[2]) {  // one accumulator: before P·V adds to it
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int i = 0; i < NO; ++i) o[i] *= alpha[(i % 4) >> 1];
    }
  };

  // P·V of one tile: into ob (TWO_LEVEL, folded in after) or straight into the output.
  auto issue_pv = [&](const uint32_t (&pa_t)[kKS][4], uint32_t vs) {
    if constexpr (TWO_LEVEL) pv_tile<D_PAD, true>(ob, pa_t, vs);
    else pv_tile<D_PAD, false>(o, pa_t, vs);
  };
  // The pipelined loop: wait for P·V (its registers pinned until then) and fold it in.
  auto finish_pv = [&](const float (&alpha_t)[2]) {
    wgmma::wait<0>();
    if constexpr (TWO_LEVEL) {
      wgmma::fence_operand(ob);
      fold(alpha_t);
    } else {
      wgmma::fence_operand(o);
    }
  };

  tma::mbar_wait(q_bar, 0);
  if constexpr (!PIPELINED) {
    for (int tile = 0; tile < n_tiles; ++tile) {
      const int stage = tile & 1;
      wait_k(tile);
      int acc[kNS];
      wgmma::fence();
      qk_tile(acc, stage);
      wgmma::commit();
      float sc[kGroups];
      tile_scales(tile, sc);
      wgmma::wait<0>();
      if (issuer && tile + 2 < n_tiles) load_k(tile + 2);  // this stage's K has been read
      float alpha[2];
      uint32_t pa[kKS][4];
      softmax(tile, acc, sc, alpha, pa);
      if constexpr (!TWO_LEVEL) rescale(alpha);

      wait_v(tile);
      wgmma::fence();
      issue_pv(pa, v_smem + stage * L::v_tile);
      wgmma::commit();
      wgmma::wait<0>();
      if (issuer && tile + 2 < n_tiles) load_v(tile + 2);
      if constexpr (TWO_LEVEL) fold(alpha);
    }
  } else {
    // Prologue: tile 0's scores and softmax.
    uint32_t pa[2][kKS][4];
    float alpha[2][2];
    {
      wait_k(0);
      int acc[kNS];
      wgmma::fence();
      qk_tile(acc, 0);
      wgmma::commit();
      float sc[kGroups];
      tile_scales(0, sc);
      wgmma::wait<0>();
      if (issuer && 2 < n_tiles) load_k(2);
      softmax(0, acc, sc, alpha[0], pa[0]);
    }
    // Iteration t: Q·Kᵀ of tile t + 1 and P·V of tile t. The loop is unrolled by two, so that
    // the buffer index (cur) is a constant and P's two register sets stay registers; the last
    // tile's P·V is peeled off, so that no wgmma of the loop sits behind a branch.
    auto iteration = [&](const int tile, auto cur_c) {
      constexpr int cur = decltype(cur_c)::value;
      int acc[kNS];
      if constexpr (!TWO_LEVEL) rescale(alpha[cur]);
      wait_k(tile + 1);
      wait_v(tile);
      wgmma::fence();
      qk_tile(acc, cur ^ 1);
      wgmma::commit();
      issue_pv(pa[cur], v_smem + cur * L::v_tile);
      wgmma::commit();
      float sc[kGroups];
      tile_scales(tile + 1, sc);
      wgmma::wait<1>();  // the scores; P·V may still run
      wgmma::fence_operand(acc);
      if (issuer && tile + 3 < n_tiles) load_k(tile + 3);
      softmax(tile + 1, acc, sc, alpha[cur ^ 1], pa[cur ^ 1]);
      finish_pv(alpha[cur]);
      if (issuer && tile + 2 < n_tiles) load_v(tile + 2);
    };
    auto last = [&](const int tile, auto cur_c) {
      constexpr int cur = decltype(cur_c)::value;
      if constexpr (!TWO_LEVEL) rescale(alpha[cur]);
      wait_v(tile);
      wgmma::fence();
      issue_pv(pa[cur], v_smem + cur * L::v_tile);
      wgmma::commit();
      finish_pv(alpha[cur]);
    };
    using Zero = std::integral_constant<int, 0>;
    using One = std::integral_constant<int, 1>;
    int tile = 0;
    while (tile + 1 < n_tiles) {
      iteration(tile++, Zero{});
      if (tile + 1 >= n_tiles) break;
      iteration(tile++, One{});
    }
    if (tile & 1) last(tile, One{});
    else last(tile, Zero{});
  }

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
void launch(const AttnParams& p, int B, const CUtensorMap& q_map, const CUtensorMap& k_map,
            const CUtensorMap& v_map, cudaStream_t stream) {
  auto kernel = attention_wgmma_kernel<D_PAD, CAUSAL, TWO_LEVEL, SAGE_WGMMA_PIPELINE != 0>;
  constexpr int smem = WgSmem<D_PAD>::bytes;
  if (smem > 48 * 1024) {
    SAGE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  }
  dim3 grid((p.Nq + kRows - 1) / kRows, p.Hq, B);
  kernel<<<grid, kThreads, smem, stream>>>(p, q_map, k_map, v_map);
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
  // q8 [B * Hq, nq_pad, D_PAD] in 64-row boxes, k8 [B * Hkv, nk_pad, D_PAD] in 128-key boxes
  // (keys past the padding read as zeros), v8 [B * Hkv, D_PAD, nk_pad] in boxes of 128 keys.
  const uint64_t d_pad = k8.size(3), nk_pad = k8.size(2), bhk = B * k8.size(1);
  const CUtensorMap q_map = tma::byte_tile_map(q8.data_ptr(), d_pad, q8.size(2), B * Hq, d_pad, kRows, op);
  const CUtensorMap k_map = tma::byte_tile_map(k8.data_ptr(), d_pad, nk_pad, bhk, d_pad, kTileK, op);
  const CUtensorMap v_map = tma::byte_tile_map(v8.data_ptr(), nk_pad, d_pad, bhk, kTileK, d_pad, op);
  dispatch_shape(k8.size(3), causal, [&](auto d_pad_c, auto causal_c) {
    constexpr int kD = decltype(d_pad_c)::value;
    constexpr bool kCausal = decltype(causal_c)::value;
    if (pv_mode == kPvF8AccF32F32) launch<kD, kCausal, true>(p, static_cast<int>(B), q_map, k_map, v_map, stream);
    else launch<kD, kCausal, false>(p, static_cast<int>(B), q_map, k_map, v_map, stream);
  });
  return {out, lse};
}

}  // namespace sageattention
