// INT8 Q·Kᵀ attention with FP16/BF16 or FP8 (e4m3) P·V on mma.sync tensor cores (sm80+; the
// FP8 instantiations sm89+). One template, instantiated by attn_fp16.cu and attn_fp8.cu.
//
// Work split: a block of kWarps warps owns kWarps * 16 * MT consecutive query rows of one
// (batch, head); each warp owns 16 * MT rows (MT m16 tiles) and walks all key tiles of 64 keys, keeping its
// Q fragments, the output accumulator and the softmax state in registers. K (and V) tiles go
// through shared memory, double-buffered with cp.async: the next K tile loads while this
// tile's scores are computed, the next V tile while P·V runs.
//
// Inputs (produced by quant.cu / quant_v_fp8.cu, see sageattention/granularity.py):
//   Q as the caller gave it (fp16/bf16, raw_q), which each warp quantizes into its registers
//     (q_fragments.cuh), or quant_int8's q8 int8 [B, Hq, nq_pad, D_PAD] with q_scale fp32
//     (per_warp: one per 32 rows; per_thread: 8 per 32 rows, row r uses (r / 32) * 8 + r % 8);
//     either way the scales carry sm_scale * log2(e);
//   k8 int8 [B, Hkv, nk_pad, D_PAD] (K minus its channel mean), k_scale fp32 (per_warp: one per
//     64 keys; per_thread: 4 per 64 keys, key r uses (r / 64) * 4 + (r % 8) / 2);
//   FP16 path: V as given ([B, Hkv, Nk, D] with any 16-byte-aligned strides, unit channel
//     stride); FP8 path: v8 e4m3 [B, Hkv, D_PAD, nk_pad] (transposed; inside every 16 keys the
//     key order is permuted, see quant_v_fp8.cu) and v_scale fp32 [B, Hkv, D_PAD].
// With these layouts the thread that holds a score element also holds its Q and K scale: a
// thread's accumulator rows are g and g + 8 of its warp's 16 rows (same r % 8, same 32-row
// group) and its columns 2t, 2t + 1 of every 8-key tile (same (r % 8) / 2).
//
// Scores are in base 2 (log2(e) is folded into Q's scale); the online softmax keeps the row
// max m and the row sum l in fp32; a row that has seen no key yet keeps m = -inf and
// contributes zeros. Causal masking is top-left aligned (query i sees keys j <= i), as in SDPA.
#pragma once


#include <cfloat>
#include <climits>
#include <type_traits>

#include "ptx.cuh"
#include "q_fragments.cuh"
#include "torch_api.h"

// m16 row tiles per warp for D 64 and 128 (overridable for measurements, docs/perf-notes.md).
#ifndef SAGE_M_TILES_64
#define SAGE_M_TILES_64 2
#endif
#ifndef SAGE_M_TILES_128
#define SAGE_M_TILES_128 2
#endif

namespace sageattention {

constexpr int kCtaK = 64;   // keys per tile (granularity.K_BLOCK)
#ifndef SAGE_WARPS
#define SAGE_WARPS 4
#endif
constexpr int kWarps = SAGE_WARPS;  // warps per block
constexpr int kQPad = 128;  // q8 rows are padded to a multiple of this (the largest block)
// m16 row tiles per warp: two halve the shared-memory reads per MMA (each K / V fragment
// feeds both), at the cost of registers (docs/perf-notes.md).
template <int D_PAD>
constexpr int kMTiles = D_PAD == 64 ? SAGE_M_TILES_64 : SAGE_M_TILES_128;
template <int D_PAD>
constexpr int kCtaQ = kWarps * 16 * kMTiles<D_PAD>;
// q8 is padded to kQPad rows: a block's rows (and its Q tile copy) must stay inside it.
static_assert(kQPad % kCtaQ<64> == 0 && kQPad % kCtaQ<128> == 0,
              "a block's query rows must divide the q8 padding (kQPad)");
constexpr float kFp8PScale = 448.f;  // P in [0, 1] is multiplied by this before e4m3 rounding

// P·V variants (the op's pv_mode argument; sageattention/cuda_forward.py names them).
enum PvMode : int {
  kPvF16AccF32 = 0,  // fp16/bf16 MMA accumulating in fp32
  kPvF16AccF16 = 1,  // fp16 MMA accumulating in fp16 for one 64-key tile, then added to fp32
  kPvF8AccF32 = 2,   // e4m3 MMA accumulating straight into the fp32 output registers
  kPvF8AccF32F32 = 3,  // e4m3 MMA into a per-tile fp32 accumulator, added to the output
  kPvF8AccF16 = 4,   // e4m3 MMA accumulating in fp16 per tile (V range narrowed), then fp32
};

constexpr bool is_fp8(int pv) { return pv >= kPvF8AccF32; }

// The copies of the key-tile step (attention_kernel's `step`).
enum StepKind : int { kStepPlain = 0, kStepBounds = 1, kStepMask = 2, kStepBits = 3 };

struct AttnParams {
  // Q: raw_q.data set = the kernel quantizes Q itself (q_fragments.cuh); otherwise q8 and
  // q_scale are quant_int8's output.
  RawQ raw_q;
  const int8_t* q8;
  const float* q_scale;
  const int8_t* k8;
  const float* k_scale;
  const void* v;
  const float* v_scale;  // FP8 only
  void* out;
  float* lse;  // nullptr unless requested; [B, Hq, Nq]
  int64_t v_sb, v_sh, v_sn;  // FP16 path: V strides in elements
  int64_t o_sb, o_sh, o_sn;  // output strides in elements
  int Hq, Hkv, Nq, Nk, D, nq_pad, nk_pad;
  bool per_thread;  // scale granularity of Q and K
  bool out_bf16;
  // Masked calls: the key-tile lists of sageattention/triton/block_map.py for this kernel's
  // tiles (kCtaQ query rows, kCtaK keys), [.., query tile, 2, n_kb + 1] int32 (the full list,
  // then the partial one, each led by its length) with element strides per batch, query head
  // and query tile (0 where the mask broadcasts), and the mask itself ([B, Hq, Nq, Nk] element
  // strides, 0 where it broadcasts). lists == nullptr: no mask.
  const int* lists;
  int64_t l_sb, l_sh, l_sm;
  int n_kb;
  const void* mask;
  int64_t m_sb, m_sh, m_sm, m_sn;
  int mask_kind;  // MaskKind
  int mask_access;  // MaskAccess (float masks)
  // The mask as block_map.py's visibility bits: per query row and key tile four int16, the
  // t-th holding thread t's 16 keys (bit 2 * j + c: key 8 * j + 2 * t + c), with element
  // strides (in int16) per batch, query head and query row (0 where they broadcast). A bool
  // mask is read only through these; a float mask's partial tiles use them unless their list
  // entry carries kFloatTile (nullptr: no bits, every partial tile element by element).
  const int16_t* mask_bits;
  int64_t mb_sb, mb_sh, mb_sm;
};

// attn_mask dtypes of a masked call (the op's mask argument).
enum MaskKind : int { kMaskBool = 1, kMaskF32 = 2, kMaskF16 = 3, kMaskBF16 = 4 };

// The mask's contribution to a base-2 score: 0 or -inf for a bool mask, the additive mask
// times log2(e) otherwise (NaN and +inf pass through: such a row comes out NaN, as in SDPA).
constexpr float kLog2e = 1.4426950408889634f;
__device__ __forceinline__ float mask_bias(float v) { return v * kLog2e; }
__device__ __forceinline__ float mask_bias(__half v) { return __half2float(v) * kLog2e; }
__device__ __forceinline__ float mask_bias(__nv_bfloat16 v) { return __bfloat162float(v) * kLog2e; }
// The biases of two adjacent keys from one aligned load (MaskAccess kMaskPairs).
__device__ __forceinline__ float2 mask_bias2(const float* v) {
  const float2 x = *reinterpret_cast<const float2*>(v);
  return make_float2(x.x * kLog2e, x.y * kLog2e);
}
__device__ __forceinline__ float2 mask_bias2(const __half* v) {
  const float2 x = __half22float2(*reinterpret_cast<const __half2*>(v));
  return make_float2(x.x * kLog2e, x.y * kLog2e);
}
__device__ __forceinline__ float2 mask_bias2(const __nv_bfloat16* v) {
  const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(v));
  return make_float2(x.x * kLog2e, x.y * kLog2e);
}

// How the float mask step reads a row's mask values: with the key stride (any view), with
// compile-time offsets (unit key stride), or two adjacent keys per load (unit key stride, Nk
// and every other stride even, the data aligned to two elements: set_mask decides).
enum MaskAccess : int { kMaskStrided = 0, kMaskUnit = 1, kMaskPairs = 2 };

// Calls f(T{}, access) with T the element type of a float mask and access its MaskAccess
// (std::integral_constant).
template <typename F>
__device__ __forceinline__ void with_mask_type(const AttnParams& p, F&& f) {
  auto by_stride = [&](auto tag) {
    if (p.mask_access == kMaskPairs) f(tag, std::integral_constant<int, kMaskPairs>{});
    else if (p.mask_access == kMaskUnit) f(tag, std::integral_constant<int, kMaskUnit>{});
    else f(tag, std::integral_constant<int, kMaskStrided>{});
  };
  switch (p.mask_kind) {  // (bool masks arrive as bits: kStepBits)
    case kMaskF32: by_stride(float{}); break;
    case kMaskF16: by_stride(__half{}); break;
    default: by_stride(__nv_bfloat16{});
  }
}

// Where Q's INT8 fragments live during the key loop: in registers (32 per thread at D=128,
// 16 at D=64; the default), or in shared memory, read with one ldmatrix per k32 step and m16
// tile, which frees those registers (a measurement option, docs/perf-notes.md rows 21 and 27).
// Not the default: on the H200 it gained 0-8%, but Q's tile (10-18 KB per block) would cut the
// blocks per SM on the 100 KB cards these kernels are for (sm86/89/120): FP8 P·V at D=128 from
// 2 to 1, FP16 P·V at D=64 from 3 to 2.
#ifndef SAGE_Q_SMEM_64
#define SAGE_Q_SMEM_64 0
#endif
#ifndef SAGE_Q_SMEM_128
#define SAGE_Q_SMEM_128 0
#endif
template <int D_PAD>
constexpr bool kQInSmem = D_PAD == 64 ? SAGE_Q_SMEM_64 : SAGE_Q_SMEM_128;

// V tile buffers: 2 (the next V tile loads while this tile's P·V runs) or 1 (it loads after
// P·V, overlapping the next tile's Q·Kᵀ and softmax, as K's copy does). FP16 P·V uses one:
// at D=128 that takes the block from 53 to 35 KB, so the cards with ~100 KB of shared memory
// per SM (sm86/89/120) run two blocks per SM instead of one. Measured on the H200 with the
// carveout of such a card (SAGE_SMEM_CARVEOUT_PCT=43): fp16_cuda D=128 +31-42%; at the H200's
// own carveout within 2% of two buffers (docs/perf-notes.md row 32). FP8 P·V keeps two (39 KB,
// already two blocks per SM there; one buffer is not measured). SAGE_V_STAGES_FP16 /
// SAGE_V_STAGES_FP8 override them for measurements; SAGE_SMEM_CARVEOUT_PCT (a percentage of
// the maximum) sets the preferred shared-memory carveout, so that an H100/H200 (228 KB) can
// stand in for such a card's occupancy.
#ifndef SAGE_V_STAGES_FP16
#define SAGE_V_STAGES_FP16 1
#endif
#ifndef SAGE_V_STAGES_FP8
#define SAGE_V_STAGES_FP8 2
#endif
static_assert((SAGE_V_STAGES_FP16 == 1 || SAGE_V_STAGES_FP16 == 2) &&
              (SAGE_V_STAGES_FP8 == 1 || SAGE_V_STAGES_FP8 == 2), "V stages must be 1 or 2");
template <int PV>
constexpr int kVStages = is_fp8(PV) ? SAGE_V_STAGES_FP8 : SAGE_V_STAGES_FP16;

template <int D_PAD, int PV>
struct SmemLayout {
  static constexpr int k_stride = D_PAD + 16;  // bytes; +16 keeps ldmatrix rows conflict-free
  static constexpr int k_tile = kCtaK * k_stride;
  // FP16: [key][channel] halves, +8 halves per row; FP8: [channel][key] bytes, +16 per row.
  static constexpr int v_stride = is_fp8(PV) ? kCtaK + 16 : (D_PAD + 8) * 2;
  static constexpr int v_tile = is_fp8(PV) ? D_PAD * v_stride : kCtaK * v_stride;
  // Q's block tile (rows as K's), after the two K and the V stages, when kQInSmem.
  static constexpr int q_tile = kQInSmem<D_PAD> ? kCtaQ<D_PAD> * k_stride : 0;
  static constexpr int q_offset = 2 * k_tile + kVStages<PV> * v_tile;
  static constexpr int bytes = q_offset + q_tile;
};

// Adds an fp16 accumulator (the C fragment of an m16n8 MMA: two __half2) to the fp32 output
// fragment of the same tile: the per-tile accumulation modes end this way.
__device__ __forceinline__ void add_f16_acc(float (&o)[4], const uint32_t (&acc)[2]) {
  const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&acc[0]));
  const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&acc[1]));
  o[0] += lo.x;
  o[1] += lo.y;
  o[2] += hi.x;
  o[3] += hi.y;
}

// Tile loads. Every thread copies a fixed set of 16-byte chunks, chunk tid + 128 * it of the
// tile, so that after the unrolled loop the shared and global offsets of copy `it` are the
// first copy's plus constants: a handful of address instructions per tile instead of a loop
// with a division, a modulo and a 64-bit multiply per chunk (ncu: that loop was a quarter of
// the kernel's instructions, docs/perf-notes.md row 24).
template <int D_PAD, int PV>
__device__ __forceinline__ void load_k_tile(const AttnParams& p, uint32_t smem, int64_t bhk,
                                            int tile) {
  using L = SmemLayout<D_PAD, PV>;
  constexpr int kCpr = D_PAD / 16;                    // chunks per key row
  constexpr int kIters = kCtaK * kCpr / (kWarps * 32);
  constexpr int kRowStep = kWarps * 32 / kCpr;        // rows between two copies of a thread
  static_assert(kCtaK * kCpr % (kWarps * 32) == 0, "K tile chunks must split evenly");
  const int tid = threadIdx.x;
  // q8 / k8 rows are contiguous D_PAD bytes, so chunk i of the tile is at byte 16 * i.
  const int8_t* src = p.k8 + (bhk * p.nk_pad + static_cast<int64_t>(tile) * kCtaK) * D_PAD + tid * 16;
  const uint32_t dst = smem + (tid / kCpr) * L::k_stride + (tid % kCpr) * 16;
#pragma unroll
  for (int it = 0; it < kIters; ++it)
    ptx::cp_async_16_full(dst + it * kRowStep * L::k_stride, src + it * kWarps * 32 * 16);
}

template <int D_PAD, int PV, typename VT>
__device__ __forceinline__ void load_v_tile(const AttnParams& p, uint32_t smem, int64_t b,
                                            int64_t hk, int tile) {
  using L = SmemLayout<D_PAD, PV>;
  const int tid = threadIdx.x;
  if constexpr (is_fp8(PV)) {
    // v8 [.., D_PAD, nk_pad] is padded to nk_pad keys and D_PAD channels: every chunk is in
    // bounds. Rows are channels, 4 chunks of 16 keys each.
    constexpr int kCpr = kCtaK / 16;
    constexpr int kIters = D_PAD * kCpr / (kWarps * 32);
    static_assert(D_PAD * kCpr % (kWarps * 32) == 0, "V tile chunks must split evenly");
    constexpr int kRowStep = kWarps * 32 / kCpr;
    const uint8_t* src = static_cast<const uint8_t*>(p.v) +
                         ((b * p.Hkv + hk) * D_PAD + tid / kCpr) * static_cast<int64_t>(p.nk_pad) +
                         static_cast<int64_t>(tile) * kCtaK + (tid % kCpr) * 16;
    const int64_t step = static_cast<int64_t>(kRowStep) * p.nk_pad;
    const uint32_t dst = smem + (tid / kCpr) * L::v_stride + (tid % kCpr) * 16;
#pragma unroll
    for (int it = 0; it < kIters; ++it)
      ptx::cp_async_16_full(dst + it * kRowStep * L::v_stride, src + it * step);
  } else {
    // V as the user gave it: rows are keys (stride v_sn), 8 channels per chunk. Keys past Nk
    // and channels past D are zero-filled; a full tile of a head dim that needs no padding
    // (the common case) copies without predicates.
    constexpr int kCpr = D_PAD / 8;
    constexpr int kIters = kCtaK * kCpr / (kWarps * 32);
    static_assert(kCtaK * kCpr % (kWarps * 32) == 0, "V tile chunks must split evenly");
    constexpr int kRowStep = kWarps * 32 / kCpr;
    const int row0 = tid / kCpr, c = tid % kCpr;
    const int key0 = tile * kCtaK + row0;
    const VT* src = static_cast<const VT*>(p.v) + b * p.v_sb + hk * p.v_sh +
                    static_cast<int64_t>(key0) * p.v_sn + c * 8;
    const int64_t step = static_cast<int64_t>(kRowStep) * p.v_sn;
    const uint32_t dst = smem + row0 * L::v_stride + c * 16;
    if ((tile + 1) * kCtaK <= p.Nk && p.D == D_PAD) {
#pragma unroll
      for (int it = 0; it < kIters; ++it)
        ptx::cp_async_16_full(dst + it * kRowStep * L::v_stride, src + it * step);
    } else {
      const bool channel_ok = c * 8 < p.D;
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const bool ok = channel_ok && key0 + it * kRowStep < p.Nk;
        // An out-of-bounds chunk copies nothing from a valid address (the tile's base).
        ptx::cp_async_16_zfill(dst + it * kRowStep * L::v_stride,
                               ok ? static_cast<const void*>(src + it * step) : p.v, ok ? 16 : 0);
      }
    }
  }
}

// Blocks per SM the register allocation must allow (ptxas caps registers to fit them).
// D=64: capping registers at 168 for 3 blocks per SM costs ~128 bytes of spills and still
// gains 6-12% (docs/perf-notes.md); D=128 needs its 255.
#ifndef SAGE_MIN_BLOCKS_64
#define SAGE_MIN_BLOCKS_64 3
#endif
#ifndef SAGE_MIN_BLOCKS_128
#define SAGE_MIN_BLOCKS_128 1
#endif
template <int D_PAD>
constexpr int kMinBlocks = D_PAD == 64 ? SAGE_MIN_BLOCKS_64 : SAGE_MIN_BLOCKS_128;

// MASKED: the call has an attn_mask and p.lists (a separate instantiation, so that the
// unmasked kernel carries none of the masked code).
template <int D_PAD, bool CAUSAL, int PV, typename VT, bool MASKED>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks<D_PAD>)
    attention_kernel(const AttnParams p) {
  using L = SmemLayout<D_PAD, PV>;
  constexpr int MT = kMTiles<D_PAD>;  // m16 tiles per warp
  constexpr int KC = D_PAD / 32;      // k32 steps of Q·Kᵀ
  constexpr int NT = D_PAD / 8;       // n8 tiles of the output
  constexpr int CTA_Q = kCtaQ<D_PAD>;
  // 16-bit P: row sums on the tensor cores (each thread then holds whole-row sums).
  constexpr bool kRowSumMma = !is_fp8(PV);
  extern __shared__ __align__(16) int8_t smem[];
  int8_t* k_smem = smem;
  int8_t* v_smem = smem + 2 * L::k_tile;
  const uint32_t k_smem_u32 = ptx::smem_addr(k_smem), v_smem_u32 = ptx::smem_addr(v_smem);
  // Each lane's ldmatrix row address in stage 0 of the K and V tiles; every fragment read adds
  // a compile-time offset (and the stage's), so no per-tile address arithmetic.
  const int mat = threadIdx.x % 32 / 8;
  const uint32_t k_lane = k_smem_u32 + (8 * (mat / 2) + threadIdx.x % 8) * L::k_stride + (mat % 2) * 16;
  const uint32_t v_lane =
      is_fp8(PV) ? v_smem_u32 + (8 * (mat / 2) + threadIdx.x % 8) * L::v_stride + (mat % 2) * 16
                 : v_smem_u32 + ((mat % 2) * 8 + threadIdx.x % 8) * L::v_stride + (mat / 2) * 16;

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  // Causal blocks with the most work start first.
  const int q_block = CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (p.Hq / p.Hkv);
  const int64_t bh = b * p.Hq + h, bhk = b * p.Hkv + hk;
  const int q0 = q_block * CTA_Q + warp * 16 * MT;  // first row of this warp

  // Q fragments stay in registers for the whole key loop, or in shared memory (kQInSmem).
  constexpr bool kQSmem = kQInSmem<D_PAD>;
  uint32_t qf[kQSmem ? 1 : MT][KC][4];
  const uint32_t q_smem_u32 = ptx::smem_addr(smem + L::q_offset);
  // Lane address of its ldmatrix row in this warp's first m16 tile (see ptx.cuh: matrices
  // rows 0-7 / 8-15 x bytes 0-15 / 16-31 are a0..a3 of the s8 A fragment).
  const uint32_t q_lane = q_smem_u32 + (warp * 16 * MT + (lane / 8) % 2 * 8 + lane % 8) * L::k_stride +
                          lane / 16 * 16;
  // A masked call visits the key tiles of its lists (full ones first), an unmasked one all.
  const int* full_list = nullptr;
  const int* part_list = nullptr;
  int n_full = 0, n_listed = 0;
  if constexpr (MASKED) {
    full_list = p.lists + b * p.l_sb + h * p.l_sh + q_block * p.l_sm;
    part_list = full_list + p.n_kb + 1;
    // Clamped, so that lists not made by block_map.py cannot send a load out of bounds.
    n_full = min(max(full_list[0], 0), p.n_kb);
    n_listed = n_full + min(max(part_list[0], 0), p.n_kb);
  }
  // List entries as block_map.py writes them: a partial tile that needs a float mask's values
  // carries kFloatTile (only where the call has bits: without, every partial tile does).
  constexpr int kFloatTile = 1 << 30;
  auto listed_entry = [&](int i) { return i < n_full ? full_list[1 + i] : part_list[1 + i - n_full]; };
  auto listed_tile = [&](int i) { return min(listed_entry(i) & (kFloatTile - 1), p.n_kb - 1); };
  // A float mask without bits (the caller passed none) needs its values in every partial tile.
  auto listed_float = [&](int i) {
    return p.mask_kind != kMaskBool && (p.mask_bits == nullptr || (listed_entry(i) & kFloatTile) != 0);
  };
  const int first_tile = !MASKED ? 0 : n_listed > 0 ? listed_tile(0) : -1;
  // The first K and V tiles are on their way while Q is loaded (and quantized).
  if (first_tile >= 0) load_k_tile<D_PAD, PV>(p, k_smem_u32, bhk, first_tile);
  if constexpr (kQSmem) {
    // The block's Q rows are contiguous: chunk i of the tile is byte 16 * i.
    constexpr int kCpr = D_PAD / 16;
    constexpr int kIters = CTA_Q * kCpr / (kWarps * 32);
    const int tid = threadIdx.x;
    const int8_t* src = p.q8 + (bh * p.nq_pad + q_block * CTA_Q) * D_PAD + tid * 16;
    const uint32_t dst = q_smem_u32 + (tid / kCpr) * L::k_stride + (tid % kCpr) * 16;
#pragma unroll
    for (int it = 0; it < kIters; ++it)
      ptx::cp_async_16_full(dst + it * (kWarps * 32 / kCpr) * L::k_stride,
                            src + it * kWarps * 32 * 16);
  }
  ptx::cp_async_commit();  // the first K tile (and Q's tile, kQSmem): the first group
  if (first_tile >= 0) load_v_tile<D_PAD, PV, VT>(p, v_smem_u32, b, hk, first_tile);
  ptx::cp_async_commit();
  // Every row a thread holds (g, g + 8, g + 16, g + 24 of its warp's 32) shares one scale:
  // quant_int8's, or the one the kernel computes while quantizing Q itself.
  float q_scale;
  if constexpr (kQSmem) {
    q_scale = p.per_thread ? p.q_scale[bh * (p.nq_pad / 32 * 8) + (q0 / 32) * 8 + g]
                           : p.q_scale[bh * (p.nq_pad / 32) + q0 / 32];
  } else if (MT == 2 && p.raw_q.data != nullptr) {  // (the host refuses raw Q otherwise)
    if constexpr (MT == 2) {
      q_scale = p.raw_q.bf16
                    ? quantize_q_fragments<__nv_bfloat16>(p.raw_q, b, h, q0, p.Nq, p.D, !p.per_thread, qf)
                    : quantize_q_fragments<__half>(p.raw_q, b, h, q0, p.Nq, p.D, !p.per_thread, qf);
    }
  } else {
    q_scale = p.per_thread ? p.q_scale[bh * (p.nq_pad / 32 * 8) + (q0 / 32) * 8 + g]
                           : p.q_scale[bh * (p.nq_pad / 32) + q0 / 32];
    const int8_t* q = p.q8 + (bh * p.nq_pad + q0) * D_PAD;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        const int8_t* r0 = q + (16 * mt + g) * D_PAD + kc * 32 + 4 * t;
        qf[mt][kc][0] = *reinterpret_cast<const uint32_t*>(r0);
        qf[mt][kc][1] = *reinterpret_cast<const uint32_t*>(r0 + 8 * D_PAD);
        qf[mt][kc][2] = *reinterpret_cast<const uint32_t*>(r0 + 16);
        qf[mt][kc][3] = *reinterpret_cast<const uint32_t*>(r0 + 8 * D_PAD + 16);
      }
  }
  const int k_scale_step = p.per_thread ? 4 : 1;  // scales per key tile
  const float* k_scale = p.k_scale + bhk * (p.nk_pad / kCtaK) * k_scale_step + (p.per_thread ? t : 0);
  float k_scale_cur = k_scale[max(first_tile, 0) * k_scale_step];

  float o[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int n = 0; n < NT; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;

  int n_tiles = (p.Nk + kCtaK - 1) / kCtaK;
  if (CAUSAL) {
    const int last_row = min((q_block + 1) * CTA_Q, p.Nq) - 1;
    n_tiles = min(n_tiles, last_row / kCtaK + 1);
  }

  // One key tile (the i-th visited; `next` is the tile after it, -1 for none). kind_c (a
  // compile-time constant) selects the copy: kStepPlain for tiles that need no mask in any row
  // of the block, kStepBounds to mask keys past Nk and, causally, keys after the row, and
  // kStepMask for a masked call's partial tiles, which also apply attn_mask element by element
  // in floats. The hot loop has no masking branches, predicates or selects
  // (docs/perf-notes.md row 25).
  auto step = [&](const int i, const int tile, const int next, auto kind_c) {
    constexpr int kKind = decltype(kind_c)::value;
    constexpr bool kBounds = kKind == kStepBounds;
    constexpr bool kBits = kKind == kStepBits;
    constexpr bool kMasked = kBounds || kBits;  // hidden scores as INT_MIN
    constexpr bool kElemMask = kKind == kStepMask;
    const int stage = i & 1;
    const bool has_next = next >= 0;
    // A bool mask's partial tile: thread t's visibility bits of its rows (g and g + 8 of each
    // m16 tile, low and high half), loaded before Q·Kᵀ so that the MMAs hide the latency.
    uint32_t vis[kBits ? MT : 1];
    if constexpr (kBits) {
      const int16_t* bits = p.mask_bits + b * p.mb_sb + h * p.mb_sh +
                            static_cast<int64_t>(q0 + g) * p.mb_sm + tile * 4 + t;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        vis[mt] = static_cast<uint16_t>(bits[(16 * mt) * p.mb_sm]) |
                  static_cast<uint32_t>(static_cast<uint16_t>(bits[(16 * mt + 8) * p.mb_sm])) << 16;
    }
    ptx::cp_async_wait<1>();  // this tile's K has landed (its V may still be in flight)
    __syncthreads();
    if (has_next) load_k_tile<D_PAD, PV>(p, k_smem_u32 + (stage ^ 1) * L::k_tile, bhk, next);
    ptx::cp_async_commit();
    // S = Q8 · K8ᵀ (int32), 8 tiles of 8 keys; each K fragment feeds all MT row tiles.
    int acc[MT][8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0;
    {
      const uint32_t ks = k_lane + stage * L::k_tile;
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        uint32_t qs[kQSmem ? MT : 1][4];  // this k32 step's Q fragments (kQSmem)
        if constexpr (kQSmem) {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) ptx::ldmatrix_x4(qs[mt], q_lane + 16 * mt * L::k_stride + kc * 32);
        }
#pragma unroll
        for (int j = 0; j < 8; j += 2) {
          uint32_t bf[4];
          ptx::ldmatrix_x4(bf, ks + 8 * j * L::k_stride + kc * 32);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const uint32_t(&a)[4] = kQSmem ? qs[kQSmem ? mt : 0] : qf[kQSmem ? 0 : mt][kc];
            ptx::mma_s8(acc[mt][j], a, bf[0], bf[1]);
            ptx::mma_s8(acc[mt][j + 1], a, bf[2], bf[3]);
          }
        }
      }
    }
    // The score is acc * sc. The scale's sign is that of sm_scale (K's scales are positive), the
    // same for the whole call: for a negative one acc and sc are negated, so that the row max
    // can be taken on the integers (full-rate integer max instead of a float max per score).
    float sc = q_scale * k_scale_cur;
    // The next tile's K scale is loaded now and used a tile later (a load issued right
    // before its use stalled every tile on the memory latency: ncu long-scoreboard stalls).
    if (has_next) k_scale_cur = k_scale[next * k_scale_step];
    if (sc < 0.f) {
      sc = -sc;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[mt][j][e] = -acc[mt][j][e];
    }
    // Mask keys past Nk and, causally, keys after the row, or (kBits) every key the bits hide,
    // which block_map.py folded in with those (INT_MIN never wins the max).
    const int key0 = tile * kCtaK;
    if constexpr (kMasked) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = key0 + 8 * j + 2 * t + (e & 1);
            const int row = q0 + 16 * mt + g + 8 * (e >> 1);
            const bool hide = kBits ? !(vis[kBits ? mt : 0] & (1u << (16 * (e >> 1) + 2 * j + (e & 1))))
                                    : key >= p.Nk || (CAUSAL && key > row);
            if (hide) acc[mt][j][e] = INT_MIN;
          }
    }
    // Online softmax (base 2). Reductions are trees: with two warps per scheduler, serial
    // chains of dependent max/add would leave the pipes idle (ncu: fixed-latency stalls).
    // |acc| <= 127 * 127 * 256 < 2^22, so acc + 1.5 * 2^23 read as a float is exactly
    // 1.5 * 2^23 + acc, and one FMA gives the exponent acc * sc - m (no quarter-rate I2F, no
    // separate subtraction). P leaves as the packed A fragments of the P·V MMA.
    constexpr int kPackedP = is_fp8(PV) ? 8 : 16;  // registers of packed P per m16 tile
    uint32_t pa[MT][kPackedP];
    float s[MT][8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float m_use[2], alpha[2];
      if constexpr (kElemMask) {
        // A masked call's partial tile: float scores plus the mask's bias (keys past Nk and,
        // causally, after the row are -inf, so that only the mask lets a NaN key through).
        // x = acc * sc + bias, the integer read as a float by the 1.5 * 2^23 bias as in the
        // other steps (no quarter-rate I2F); the max and exponent follow in floats.
        float x[8][4];
        const float x_off = -12582912.f * sc;
        with_mask_type(p, [&](auto tag, auto access_c) {
          using T = decltype(tag);
          constexpr int kAccess = decltype(access_c)::value;
          const T* base = static_cast<const T*>(p.mask) + b * p.m_sb + h * p.m_sh +
                          static_cast<int64_t>(key0 + 2 * t) * (kAccess != kMaskStrided ? 1 : p.m_sn);
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int row = q0 + 16 * mt + g + 8 * r;
            // The row's keys 8j + c (from key0 + 2t) below lim are inside [0, Nk) and,
            // causally, not after the row; a row past Nq has none (and reads nothing).
            const int lim = (row < p.Nq ? (CAUSAL ? min(p.Nk, row + 1) : p.Nk) : 0) - (key0 + 2 * t);
            const T* rp = base + static_cast<int64_t>(row) * p.m_sm;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
              float bias[2];
              if constexpr (kAccess == kMaskPairs) {
                // Nk even: the pair's second key is below Nk whenever its first is.
                const float2 bb = 8 * j < lim ? mask_bias2(rp + 8 * j) : make_float2(0.f, 0.f);
                bias[0] = bb.x, bias[1] = bb.y;
              } else {
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                  const int64_t off = kAccess == kMaskUnit ? 8 * j + c : static_cast<int64_t>(8 * j + c) * p.m_sn;
                  bias[c] = 8 * j + c < lim ? mask_bias(rp[off]) : 0.f;
                }
              }
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                const unsigned biased = static_cast<unsigned>(acc[mt][j][2 * r + c]) + 0x4B400000u;
                x[j][2 * r + c] = 8 * j + c < lim ? fmaf(__uint_as_float(biased), sc, x_off) + bias[c]
                                                  : -INFINITY;
              }
            }
          }
        });
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float mx[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) mx[j] = fmaxf(x[j][2 * r], x[j][2 * r + 1]);
#pragma unroll
          for (int w = 4; w > 0; w /= 2)
#pragma unroll
            for (int j = 0; j < w; ++j) mx[j] = fmaxf(mx[j], mx[j + w]);
          float row_max = fmaxf(mx[0], __shfl_xor_sync(0xffffffffu, mx[0], 1));
          row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 2));
          const float m_new = fmaxf(m[mt][r], row_max);
          m_use[r] = m_new == -INFINITY ? 0.f : m_new;
          alpha[r] = ptx::fast_exp2(m[mt][r] - m_use[r]);
          m[mt][r] = m_new;
        }
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][j][e] = ptx::fast_exp2(x[j][e] - m_use[e >> 1]);
      } else {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          int mx[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) mx[j] = max(acc[mt][j][2 * r], acc[mt][j][2 * r + 1]);
#pragma unroll
          for (int w = 4; w > 0; w /= 2)
#pragma unroll
            for (int j = 0; j < w; ++j) mx[j] = max(mx[j], mx[j + w]);
          // The 4 threads of a row hold columns with different K scales (per_thread): reduce
          // across them in floats.
          float row_max = mx[0] == INT_MIN ? -INFINITY : static_cast<float>(mx[0]) * sc;
          row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 1));
          row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 2));
          const float m_new = fmaxf(m[mt][r], row_max);
          m_use[r] = m_new == -INFINITY ? 0.f : m_new;  // no key seen yet: keep everything zero
          alpha[r] = ptx::fast_exp2(m[mt][r] - m_use[r]);
          m[mt][r] = m_new;
        }
        const float offset[2] = {-12582912.f * sc - m_use[0], -12582912.f * sc - m_use[1]};
        // A hidden score's exponent: -inf, but behind the bits (kBits) NaN where the scale is
        // (a non-finite key in the group), as a mask's bias on a NaN score is in SDPA and in
        // the float mask step. (A scale of 0, from sm_scale = 0 or two all-zero groups, is
        // finite: -inf.) Keys that causality hides stay -inf (below), as in the other steps.
        const float hidden = kBits && sc != sc ? sc : -INFINITY;
        // Two copies of the loop so that the integer scores die as the probabilities appear
        // (a separate masking pass would keep both alive: spills at D=128).
        if constexpr (kMasked) {
#pragma unroll
          for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const unsigned biased = static_cast<unsigned>(acc[mt][j][e]) + 0x4B400000u;
              const float x = fmaf(__uint_as_float(biased), sc, offset[e >> 1]);
              float h = hidden;
              if constexpr (kBits && CAUSAL) {
                // The bits fold causality in with the mask: tell them apart again here.
                const int key = key0 + 8 * j + 2 * t + (e & 1);
                const int row = q0 + 16 * mt + g + 8 * (e >> 1);
                if (key > row) h = -INFINITY;
              }
              s[mt][j][e] = ptx::fast_exp2(acc[mt][j][e] == INT_MIN ? h : x);
            }
        } else {
#pragma unroll
          for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const unsigned biased = static_cast<unsigned>(acc[mt][j][e]) + 0x4B400000u;
              s[mt][j][e] = ptx::fast_exp2(fmaf(__uint_as_float(biased), sc, offset[e >> 1]));
            }
        }
      }
      if constexpr (!kRowSumMma) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float sum[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) sum[j] = s[mt][j][2 * r] + s[mt][j][2 * r + 1];
#pragma unroll
          for (int w = 4; w > 0; w /= 2)
#pragma unroll
            for (int j = 0; j < w; ++j) sum[j] += sum[j + w];
          l[mt][r] = l[mt][r] * alpha[r] + sum[0];
        }
      }
      if constexpr (is_fp8(PV)) {
        // e4m3 A fragment of k32 step ks: a0 row g keys (tile 4ks: 2t, 2t+1; tile 4ks+1: 2t,
        // 2t+1), a1 the same for row g + 8, a2 / a3 the same from tiles 4ks+2 and 4ks+3.
#pragma unroll
        for (int ks = 0; ks < 2; ++ks)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int j = 4 * ks + 2 * (i / 2), e = 2 * (i % 2);
            pa[mt][4 * ks + i] = ptx::pack4_e4m3(
                s[mt][j][e] * kFp8PScale, s[mt][j][e + 1] * kFp8PScale,
                s[mt][j + 1][e] * kFp8PScale, s[mt][j + 1][e + 1] * kFp8PScale);
          }
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          pa[mt][2 * j] = ptx::pack2<VT>(s[mt][j][0], s[mt][j][1]);
          pa[mt][2 * j + 1] = ptx::pack2<VT>(s[mt][j][2], s[mt][j][3]);
        }
        // Row sums of the packed P on the tensor cores: P · ones puts the sum of row g (of
        // g + 8) over the tile's 64 keys into c0 and c1 (c2 and c3) of every thread of the row,
        // 4 MMAs instead of ~60 dependent adds and the final cross-thread reduction; it sums
        // the rounded P that the P·V MMA multiplies, so numerator and denominator agree.
        float rs[4] = {0.f, 0.f, 0.f, 0.f};
        const uint32_t ones = ptx::pack2<VT>(1.f, 1.f);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const uint32_t a[4] = {pa[mt][4 * kk], pa[mt][4 * kk + 1], pa[mt][4 * kk + 2],
                                 pa[mt][4 * kk + 3]};
          ptx::mma_16bit_f32<VT>(rs, a, ones, ones);
        }
        l[mt][0] = l[mt][0] * alpha[0] + rs[0];
        l[mt][1] = l[mt][1] * alpha[1] + rs[2];
      }
      // Once the running max settles (most tiles of a long row) no row of the warp moves.
      if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          o[mt][n][0] *= alpha[0];
          o[mt][n][1] *= alpha[0];
          o[mt][n][2] *= alpha[1];
          o[mt][n][3] *= alpha[1];
        }
      }
    }

    if (has_next) ptx::cp_async_wait<1>();  // this tile's V has landed
    else ptx::cp_async_wait<0>();
    __syncthreads();
    if constexpr (kVStages<PV> == 2) {
      if (has_next) load_v_tile<D_PAD, PV, VT>(p, v_smem_u32 + (stage ^ 1) * L::v_tile, b, hk, next);
      ptx::cp_async_commit();
    }
    const uint32_t vs = v_lane + (kVStages<PV> == 2 ? stage : 0) * L::v_tile;

    // O += P · V. The loop runs over pairs of n8 output tiles outside and the key steps inside,
    // so the modes that accumulate one key tile separately (fp16 accumulators, two-level FP8)
    // need temporaries for one pair of output tiles only, not for the whole row.
    if constexpr (!is_fp8(PV)) {
      // 4 steps of 16 keys; P's accumulator layout is the A fragment layout.
      constexpr bool f16_acc = PV == kPvF16AccF16 && std::is_same<VT, __half>::value;
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        uint32_t oh[MT][2][2];
        if constexpr (f16_acc) {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) oh[mt][0][0] = oh[mt][0][1] = oh[mt][1][0] = oh[mt][1][1] = 0u;
        }
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          uint32_t bf[4];
          ptx::ldmatrix_x4_trans(bf, vs + 16 * kk * L::v_stride + n * 16);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            // Score tiles 2kk and 2kk+1 are the k16 A fragment.
            const uint32_t a[4] = {pa[mt][4 * kk], pa[mt][4 * kk + 1], pa[mt][4 * kk + 2],
                                   pa[mt][4 * kk + 3]};
            if constexpr (f16_acc) {
              ptx::mma_f16_f16(oh[mt][0], a, bf[0], bf[1]);
              ptx::mma_f16_f16(oh[mt][1], a, bf[2], bf[3]);
            } else {
              ptx::mma_16bit_f32<VT>(o[mt][n], a, bf[0], bf[1]);
              ptx::mma_16bit_f32<VT>(o[mt][n + 1], a, bf[2], bf[3]);
            }
          }
        }
        if constexpr (f16_acc) {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int u = 0; u < 2; ++u) add_f16_acc(o[mt][n + u], oh[mt][u]);
        }
      }
    } else {
#ifndef SAGE_NO_FP8_MMA
      // (P * 448 in e4m3) · V8 over 2 steps of 32 keys. A thread's P columns are 2t, 2t+1 of
      // each 8-key tile, while the e4m3 A fragment wants 4 consecutive k: quant_v_fp8.cu stores
      // V's keys in the matching order, so P is packed without any shuffle.
      constexpr bool two_level = PV == kPvF8AccF32F32;
      constexpr bool f16_acc = PV == kPvF8AccF16;
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        float ob[MT][2][4];
        uint32_t oh[MT][2][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            if constexpr (two_level) ob[mt][u][0] = ob[mt][u][1] = ob[mt][u][2] = ob[mt][u][3] = 0.f;
            if constexpr (f16_acc) oh[mt][u][0] = oh[mt][u][1] = 0u;
          }
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
          uint32_t bf[4];
          ptx::ldmatrix_x4(bf, vs + 8 * n * L::v_stride + 32 * ks);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const uint32_t a[4] = {pa[mt][4 * ks], pa[mt][4 * ks + 1], pa[mt][4 * ks + 2],
                                   pa[mt][4 * ks + 3]};
            if constexpr (f16_acc) {
#if SAGE_FP8_F16_ACCUM
              ptx::mma_e4m3_f16(oh[mt][0], a, bf[0], bf[1]);
              ptx::mma_e4m3_f16(oh[mt][1], a, bf[2], bf[3]);
#endif
            } else if constexpr (two_level) {
              ptx::mma_e4m3_f32(ob[mt][0], a, bf[0], bf[1]);
              ptx::mma_e4m3_f32(ob[mt][1], a, bf[2], bf[3]);
            } else {
              ptx::mma_e4m3_f32(o[mt][n], a, bf[0], bf[1]);
              ptx::mma_e4m3_f32(o[mt][n + 1], a, bf[2], bf[3]);
            }
          }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            if constexpr (f16_acc) {
              add_f16_acc(o[mt][n + u], oh[mt][u]);
            } else if constexpr (two_level) {
#pragma unroll
              for (int e = 0; e < 4; ++e) o[mt][n + u][e] += ob[mt][u][e];
            }
          }
      }
#endif
    }
    if constexpr (kVStages<PV> == 1) {
      // One V buffer: the next tile's V may overwrite it once every warp's P·V has read it.
      // (The commit order stays K(t+1), V(t+1) per tile, so the waits above are unchanged.)
      if (has_next) {
        __syncthreads();
        load_v_tile<D_PAD, PV, VT>(p, v_smem_u32, b, hk, next);
      }
      ptx::cp_async_commit();
    }
  };
  // Tiles that need no mask in any row of the block: all keys below Nk and, causally, every
  // key at or before the block's first row.
  int n_unmasked = p.Nk / kCtaK;
  if (CAUSAL) n_unmasked = min(n_unmasked, (q_block * CTA_Q + 1) / kCtaK);
  n_unmasked = min(n_unmasked, n_tiles);
  using Plain = std::integral_constant<int, kStepPlain>;
  using Bounds = std::integral_constant<int, kStepBounds>;
  using Mask = std::integral_constant<int, kStepMask>;
  using Bits = std::integral_constant<int, kStepBits>;
  if constexpr (!MASKED) {
    int tile = 0;
    for (; tile < n_unmasked; ++tile) step(tile, tile, tile + 1 < n_tiles ? tile + 1 : -1, Plain{});
    for (; tile < n_tiles; ++tile) step(tile, tile, tile + 1 < n_tiles ? tile + 1 : -1, Bounds{});
  } else {
    // The list entry after the next is read a tile ahead (a global load right before its use
    // would stall every tile).
    int cur = first_tile, next = n_listed > 1 ? listed_tile(1) : -1;
    int i = 0;
    for (; i < n_full; ++i) {
      const int after = i + 2 < n_listed ? listed_tile(i + 2) : -1;
      step(i, cur, next, Plain{});
      cur = next, next = after;
    }
    // Partial tiles through the bits, or element by element where they need a float mask's
    // values (a bool mask never does: its bits are exact).
    bool cur_float = i < n_listed && listed_float(i);
    bool next_float = i + 1 < n_listed && listed_float(i + 1);
    for (; i < n_listed; ++i) {
      const int after = i + 2 < n_listed ? listed_tile(i + 2) : -1;
      const bool after_float = i + 2 < n_listed && listed_float(i + 2);
      if (cur_float) step(i, cur, next, Mask{});
      else step(i, cur, next, Bits{});
      cur = next, next = after, cur_float = next_float, next_float = after_float;
    }
  }
  // A non-finite Q value makes its scale group's rows NaN, as its NaN scores do in an unmasked
  // call, also where a mask skipped every tile of the row.
  if (MASKED && q_scale != q_scale) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) l[mt][0] = l[mt][1] = q_scale;
  }

  // Normalize and store (rows past Nq and channels past D are padding).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float lr = l[mt][r];
      if constexpr (!kRowSumMma) {  // partial sums of the thread's columns
        lr += __shfl_xor_sync(0xffffffffu, lr, 1);
        lr += __shfl_xor_sync(0xffffffffu, lr, 2);
      }
      // No visible key: zeros. A NaN sum (a NaN scale: non-finite input) stays NaN.
      const float inv = lr == 0.f ? 0.f : 1.f / lr;
      const int row = q0 + 16 * mt + g + 8 * r;
      if (row >= p.Nq) continue;
      const int64_t base = b * p.o_sb + h * p.o_sh + static_cast<int64_t>(row) * p.o_sn;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int col = 8 * n + 2 * t;
        if (col >= p.D) continue;
        float x0 = o[mt][n][2 * r] * inv, x1 = o[mt][n][2 * r + 1] * inv;
        if constexpr (is_fp8(PV)) {
          const float* vsc = p.v_scale + bhk * D_PAD + col;
          x0 *= vsc[0] * (1.f / kFp8PScale);
          x1 *= vsc[1] * (1.f / kFp8PScale);
        }
        if (p.out_bf16) {
          *reinterpret_cast<uint32_t*>(static_cast<__nv_bfloat16*>(p.out) + base + col) =
              ptx::pack2<__nv_bfloat16>(x0, x1);
        } else {
          *reinterpret_cast<uint32_t*>(static_cast<__half*>(p.out) + base + col) =
              ptx::pack2<__half>(x0, x1);
        }
      }
      if (p.lse != nullptr && t == 0) {
        p.lse[bh * p.Nq + row] =
            lr == 0.f ? -INFINITY : (m[mt][r] + log2f(lr)) * 0.6931471805599453f;
      }
    }
}

// Launch one instantiation; the dynamic shared memory limit is raised where needed.
template <int D_PAD, bool CAUSAL, int PV, typename VT>
void launch_attention(const AttnParams& p, int B, cudaStream_t stream) {
  auto kernel = p.lists != nullptr ? attention_kernel<D_PAD, CAUSAL, PV, VT, true>
                                   : attention_kernel<D_PAD, CAUSAL, PV, VT, false>;
  constexpr int smem = SmemLayout<D_PAD, PV>::bytes;
  if (smem > 48 * 1024) {
    SAGE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  }
#ifdef SAGE_SMEM_CARVEOUT_PCT
  SAGE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       SAGE_SMEM_CARVEOUT_PCT));
#endif
  dim3 grid((p.Nq + kCtaQ<D_PAD> - 1) / kCtaQ<D_PAD>, p.Hq, B);
  kernel<<<grid, kWarps * 32, smem, stream>>>(p);
  SAGE_LAUNCH_CHECK();
}

// Whether the op was given Q itself (float16 / bfloat16, quantized by the kernel) rather than
// quant_int8's INT8 Q and scales.
inline bool is_raw_q(const Tensor& q) {
  return q.scalar_type() == kHalf || q.scalar_type() == kBFloat16;
}

// The kernel quantizes raw Q into registers only in the default build (Q's fragments in
// registers, two m16 tiles = one 32-row scale group per warp).
constexpr bool kRawQBuilt = !kQInSmem<64> && !kQInSmem<128> && kMTiles<64> == 2 && kMTiles<128> == 2;

// Checks shared by both ops (shapes and dtypes of Q and the quantized K).
inline void check_quantized(const Tensor& q, const Tensor& q_scale, const Tensor& k8,
                            const Tensor& k_scale, int64_t nq, bool per_thread,
                            const char* op) {
  SAGE_CHECK(q.is_cuda() && k8.is_cuda() && k_scale.is_cuda(), op,
             ": q, k8 and k_scale must be CUDA tensors");
  SAGE_CHECK(same_device(q, k8) && same_device(k_scale, k8), op,
             ": q, k8 and k_scale must be on the same GPU");
  SAGE_CHECK(k8.scalar_type() == kInt8 && (q.scalar_type() == kInt8 || is_raw_q(q)), op,
              ": q8 and k8 must be int8 (or q float16/bfloat16, quantized by the kernel)");
  SAGE_CHECK(q.dim() == 4 && k8.dim() == 4 && k8.is_contiguous(), op,
              ": q and k8 must be 4-d, k8 contiguous [B, H, N_pad, D_pad]");
  SAGE_CHECK(k_scale.scalar_type() == kFloat && k_scale.is_contiguous(), op,
              ": scales must be contiguous float32");
  const int64_t B = q.size(0), Hq = q.size(1), d_pad = k8.size(3);
  const int64_t Hkv = k8.size(1), nk_pad = k8.size(2);
  SAGE_CHECK(d_pad == 64 || d_pad == 128, op, ": padded head dim must be 64 or 128, got ", d_pad);
  SAGE_CHECK(k8.size(0) == B, op, ": k8 must match q in batch");
  SAGE_CHECK(Hkv > 0 && Hq % Hkv == 0, op, ": q heads must be a multiple of k heads");
  SAGE_CHECK(nk_pad % kCtaK == 0, op, ": k8 rows must be padded to a multiple of ", kCtaK);
  SAGE_CHECK(B <= 65535 && Hq <= 65535, op, ": batch and heads must each be <= 65535");
  SAGE_CHECK(k_scale.numel() == B * Hkv * (nk_pad / kCtaK) * (per_thread ? 4 : 1), op,
              ": k_scale has the wrong size for this granularity");
  if (is_raw_q(q)) {
    SAGE_CHECK(kRawQBuilt, op, ": this build keeps Q in shared memory or changes the warp's "
               "rows; pass quant_int8's output");
    SAGE_CHECK(q.size(2) == nq && q.size(3) <= d_pad && q.size(3) > d_pad - 64 &&
                   q.size(3) % 8 == 0,
               op, ": q must be [B, Hq, nq, D] with D a multiple of 8 that pads to k8's");
    SAGE_CHECK(q.stride(3) == 1 && q.stride(0) % 4 == 0 && q.stride(1) % 4 == 0 &&
                   q.stride(2) % 4 == 0 && reinterpret_cast<uintptr_t>(q.data_ptr()) % 8 == 0,
               op, ": q needs unit channel stride and 8-byte aligned rows (else quant_int8 it)");
    SAGE_CHECK(nq <= INT32_MAX, op, ": too many query rows");
    return;
  }
  const int64_t nq_pad = q.size(2);
  SAGE_CHECK(q.is_contiguous() && q.size(3) == d_pad, op,
             ": q8 must be contiguous [B, H, N_pad, D_pad] like k8");
  SAGE_CHECK(q_scale.scalar_type() == kFloat && q_scale.is_contiguous(), op,
              ": scales must be contiguous float32");
  SAGE_CHECK(q_scale.is_cuda() && same_device(q_scale, k8), op,
             ": q_scale must be on k8's GPU");
  SAGE_CHECK(nq_pad % kQPad == 0 && nq >= 0 && nq <= nq_pad, op,
              ": q8 rows must be padded to a multiple of ", kQPad, " covering nq");
  SAGE_CHECK(q_scale.numel() == B * Hq * (nq_pad / 32) * (per_thread ? 8 : 1), op,
              ": q_scale has the wrong size for this granularity");
}

// Checks of quant_v_fp8's output against k8 (both FP8 P·V ops).
inline void check_fp8_v(const Tensor& v8, const Tensor& v_scale, const Tensor& k8, int64_t nk,
                        int64_t head_dim, const char* op) {
  const int64_t B = k8.size(0), d_pad = k8.size(3), Hkv = k8.size(1), nk_pad = k8.size(2);
  SAGE_CHECK(v8.is_cuda() && v8.scalar_type() == kUInt8 && v8.is_contiguous() &&
                  v8.dim() == 4 && v8.size(0) == B && v8.size(1) == Hkv && v8.size(2) == d_pad &&
                  v8.size(3) == nk_pad,
              op, ": v8 must be contiguous uint8 [B, Hkv, D_pad, Nk_pad] (quant_v_fp8)");
  SAGE_CHECK(same_device(v8, k8) && v_scale.is_cuda() && same_device(v_scale, k8), op,
             ": v8 and v_scale must be on k8's GPU");
  SAGE_CHECK(v_scale.scalar_type() == kFloat && v_scale.is_contiguous() &&
                  v_scale.numel() == B * Hkv * d_pad,
              op, ": v_scale must be contiguous float32 [B, Hkv, D_pad]");
  SAGE_CHECK(nk > 0 && nk <= nk_pad, op, ": need 0 < nk <= padded keys");
  SAGE_CHECK(head_dim > 0 && head_dim <= d_pad && head_dim % 2 == 0, op,
              ": head_dim must be even and <= the padded head dim");
}

// The output [B, Hq, nq, D] (or [B, nq, Hq, D] with nhd) and the LSE [B, Hq, nq] (empty
// unless requested), on the device of `like`.
inline std::tuple<Tensor, Tensor> allocate_outputs(const Tensor& like, int64_t B, int64_t Hq,
                                                   int64_t nq, int64_t D, bool nhd,
                                                   ScalarType dtype, bool return_lse) {
  Tensor out = nhd ? empty_on(like, {B, nq, Hq, D}, dtype) : empty_on(like, {B, Hq, nq, D}, dtype);
  Tensor lse = empty_on(like, {return_lse ? B : 0, Hq, nq}, kFloat);
  return {out, lse};
}

// The kernel parameters both ops fill alike (quantized Q and K, output layout, shapes); the
// caller adds V's pointer, strides and scales.
inline AttnParams common_params(const Tensor& q, const Tensor& q_scale, const Tensor& k8,
                                const Tensor& k_scale, const Tensor& out, const Tensor& lse,
                                int64_t nq, int64_t nk, int64_t D, bool nhd, bool per_thread,
                                bool out_bf16, double q_scale_mul) {
  const int64_t Hq = q.size(1);
  AttnParams p{};
  if (is_raw_q(q)) {
    p.raw_q = RawQ{q.data_ptr(), q.stride(0), q.stride(1), q.stride(2),
                   static_cast<float>(q_scale_mul), q.scalar_type() == kBFloat16};
  } else {
    p.q8 = ptr<int8_t>(q);
    p.q_scale = ptr<float>(q_scale);
    p.nq_pad = static_cast<int>(q.size(2));
  }
  p.k8 = ptr<int8_t>(k8);
  p.k_scale = ptr<float>(k_scale);
  p.out = out.data_ptr();
  p.lse = lse.numel() > 0 ? ptr<float>(lse) : nullptr;
  p.o_sb = nq * Hq * D, p.o_sh = nhd ? D : nq * D, p.o_sn = nhd ? Hq * D : D;
  p.Hq = static_cast<int>(Hq), p.Hkv = static_cast<int>(k8.size(1));
  p.Nq = static_cast<int>(nq), p.Nk = static_cast<int>(nk), p.D = static_cast<int>(D);
  p.nk_pad = static_cast<int>(k8.size(2));
  p.per_thread = per_thread;
  p.out_bf16 = out_bf16;
  return p;
}

// A masked call's mask and block_map.py's key-tile lists (both empty for an unmasked call),
// checked and put into p. The mask is [B, Hq, nq, Nk] with any strides (0 where it
// broadcasts); the lists int32 contiguous, indexed with the strides given (0 broadcasts).
inline void set_mask(AttnParams& p, const Tensor& mask, const Tensor& lists, const Tensor& like,
                     int64_t B,
                     int64_t lists_sb, int64_t lists_sh, int64_t lists_sm, int64_t n_kb,
                     const Tensor& mask_bits, const char* op) {
  if (mask.numel() == 0 && lists.numel() == 0) {
    SAGE_CHECK(mask_bits.numel() == 0, op, ": mask_bits without a mask");
    return;
  }
  // The lists are made for blocks of kQPad query rows (cuda_forward.BLOCK_M).
  SAGE_CHECK(kCtaQ<64> == kQPad && kCtaQ<128> == kQPad, op,
             ": this build's blocks are not ", kQPad, " query rows; masks need the default build");
  SAGE_CHECK(mask.is_cuda() && lists.is_cuda() && same_device(mask, like) &&
                 same_device(lists, like), op,
             ": mask and lists must be CUDA tensors on the GPU of the other inputs");
  SAGE_CHECK(mask.dim() == 4 && mask.size(0) == B && mask.size(1) == p.Hq &&
                 mask.size(2) == p.Nq && mask.size(3) == p.Nk,
             op, ": mask must be [B, Hq, nq, Nk] (an expanded view is fine)");
  const ScalarType dt = mask.scalar_type();
  SAGE_CHECK(dt == kBool || dt == kFloat || dt == kHalf || dt == kBFloat16, op,
             ": mask must be bool, float32, float16 or bfloat16");
  const int64_t n_qb = (p.Nq + kQPad - 1) / kQPad;
  SAGE_CHECK(lists.scalar_type() == ScalarType::Int && lists.is_contiguous(), op,
             ": lists must be contiguous int32 (sageattention/triton/block_map.py)");
  SAGE_CHECK(n_kb == (p.Nk + kCtaK - 1) / kCtaK && lists_sb >= 0 && lists_sh >= 0 &&
                 lists_sm >= 0,
             op, ": lists were made for other tiles (", kQPad, " queries, ", kCtaK, " keys)");
  // Every index the kernel can form must be inside the lists (they come from Python); each
  // stride is bounded first, so that the sum below cannot overflow.
  SAGE_CHECK(lists_sb <= lists.numel() && lists_sh <= lists.numel() && lists_sm <= lists.numel(),
             op, ": lists are too small for these strides");
  const int64_t last = (B - 1) * lists_sb + (p.Hq - 1) * lists_sh + (n_qb - 1) * lists_sm +
                       2 * (n_kb + 1);
  SAGE_CHECK(last <= lists.numel(), op, ": lists are too small for these strides");
  p.lists = ptr<int>(lists);
  p.l_sb = lists_sb, p.l_sh = lists_sh, p.l_sm = lists_sm;
  p.n_kb = static_cast<int>(n_kb);
  p.mask = mask.data_ptr();
  p.m_sb = mask.stride(0), p.m_sh = mask.stride(1), p.m_sm = mask.stride(2), p.m_sn = mask.stride(3);
  p.mask_kind = dt == kBool ? kMaskBool : dt == kFloat ? kMaskF32 : dt == kHalf ? kMaskF16 : kMaskBF16;
  // Two adjacent keys per load where every pair the kernel reads is aligned and inside a row.
  const uintptr_t pair_bytes = dt == kFloat ? 8 : 4;
  const bool unit = p.m_sn == 1;
  const bool pairs = unit && p.Nk % 2 == 0 && p.m_sb % 2 == 0 && p.m_sh % 2 == 0 &&
                     p.m_sm % 2 == 0 && reinterpret_cast<uintptr_t>(mask.data_ptr()) % pair_bytes == 0;
  p.mask_access = pairs ? kMaskPairs : unit ? kMaskUnit : kMaskStrided;
  // A bool mask reaches the kernel as block_map.py's visibility bits only; a float mask's bits
  // are optional (its partial tiles then all run element by element).
  SAGE_CHECK(dt != kBool || mask_bits.numel() > 0, op,
             ": a bool mask needs its mask_bits (block_lists(..., with_bits=True))");
  if (mask_bits.numel() == 0) return;
  const int64_t rows = n_qb * kQPad;
  SAGE_CHECK(mask_bits.is_cuda() && same_device(mask_bits, like) &&
                 mask_bits.scalar_type() == ScalarType::Long && mask_bits.is_contiguous() &&
                 mask_bits.dim() == 4 && mask_bits.size(3) == n_kb,
             op, ": mask_bits must be contiguous int64 [1 or B, 1 or Hq, 1 or ", rows, ", ", n_kb,
             "] on the GPU of the other inputs (sageattention/triton/block_map.py)");
  // The bits broadcast only where the lists do (both come from one pass over the mask).
  SAGE_CHECK((mask_bits.size(0) == B || (mask_bits.size(0) == 1 && lists_sb == 0)) &&
                 (mask_bits.size(1) == p.Hq || (mask_bits.size(1) == 1 && lists_sh == 0)) &&
                 (mask_bits.size(2) == rows || (mask_bits.size(2) == 1 && lists_sm == 0)),
             op, ": mask_bits must be contiguous int64 [1 or B, 1 or Hq, 1 or ", rows, ", ", n_kb,
             "], broadcast only where the lists are (sageattention/triton/block_map.py)");
  // Strides in int16 (each int64 is four threads' 16 bits); 0 where a dimension broadcasts.
  p.mask_bits = static_cast<const int16_t*>(mask_bits.data_ptr());
  p.mb_sb = mask_bits.size(0) == 1 ? 0 : 4 * mask_bits.stride(0);
  p.mb_sh = mask_bits.size(1) == 1 ? 0 : 4 * mask_bits.stride(1);
  p.mb_sm = mask_bits.size(2) == 1 ? 0 : 4 * mask_bits.stride(2);
}

// Calls launch(D_PAD, CAUSAL) with both as compile-time constants (std::integral_constant).
template <typename F>
void dispatch_shape(int64_t d_pad, bool causal, F&& launch) {
  using D64 = std::integral_constant<int, 64>;
  using D128 = std::integral_constant<int, 128>;
  using Causal = std::true_type;
  using Full = std::false_type;
  if (d_pad == 64) {
    causal ? launch(D64{}, Causal{}) : launch(D64{}, Full{});
  } else {
    causal ? launch(D128{}, Causal{}) : launch(D128{}, Full{});
  }
}

}  // namespace sageattention
