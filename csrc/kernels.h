// Declarations of the CUDA implementations registered in ops.cpp (unit _C) and ops_fp8.cpp
// (unit _C_fp8, archs with FP8 tensor cores only).
#pragma once

#include <tuple>

#include "torch_api.h"

namespace sageattention {

// x [B, H, N, D] (fp16 / bf16 / fp32, any strides) -> (int8 [B, H, n_pad, d_pad],
// fp32 scales [B, H, groups] (per_row: [B, H, n_pad]), fp32 channel mean [B, H, D]); see quant.cu.
std::tuple<Tensor, Tensor, Tensor> quant_int8(const Tensor& x, int64_t mode,
                                              int64_t n_pad, int64_t d_pad,
                                              bool smooth, double scale_mul, bool per_row);

// INT8 Q·Kᵀ + FP16/BF16 P·V -> (out [B, Hq, nq, D] or [B, nq, Hq, D] if nhd, lse); attn_fp16.cu.
// q is quant_int8's INT8 Q with its scales q_scale, or Q itself (float16 / bfloat16
// [B, Hq, nq, D], unit channel stride, 8-byte aligned rows; q_scale unused), which the kernel
// quantizes with the same arithmetic, its scales multiplied by q_scale_mul (q_fragments.cuh).
// A masked call passes the mask ([B, Hq, nq, Nk] view, bool or float) and the key-tile lists
// of sageattention/triton/block_map.py with their strides, and the mask's visibility bits from
// the same pass (mask_bits: required for a bool mask, optional for a float one); an unmasked
// one three empty tensors.
std::tuple<Tensor, Tensor> attn_int8_fp16(const Tensor& q, const Tensor& q_scale,
                                          const Tensor& k8, const Tensor& k_scale,
                                          const Tensor& v, int64_t nq, bool nhd,
                                          bool causal, bool per_thread, int64_t pv_mode,
                                          bool return_lse, double q_scale_mul,
                                          const Tensor& mask, const Tensor& lists,
                                          int64_t lists_sb, int64_t lists_sh,
                                          int64_t lists_sm, int64_t n_kb,
                                         const Tensor& mask_bits);

// v [B, H, N, D] -> (e4m3 bytes [B, H, d_pad, n_pad] transposed, scale [B, H, d_pad],
// mean [B, H, D]); quant_v_fp8.cu.
std::tuple<Tensor, Tensor, Tensor> quant_v_fp8(const Tensor& v, int64_t n_pad,
                                               int64_t d_pad, bool smooth,
                                               double max_value);

// INT8 Q·Kᵀ + FP8 P·V (q as for attn_int8_fp16); attn_fp8.cu.
std::tuple<Tensor, Tensor> attn_int8_fp8(const Tensor& q, const Tensor& q_scale,
                                         const Tensor& k8, const Tensor& k_scale,
                                         const Tensor& v8, const Tensor& v_scale,
                                         int64_t nq, int64_t nk, int64_t head_dim,
                                         bool nhd, bool causal, bool per_thread,
                                         int64_t pv_mode, bool return_lse, bool out_bf16,
                                         double q_scale_mul, const Tensor& mask,
                                         const Tensor& lists, int64_t lists_sb,
                                         int64_t lists_sh, int64_t lists_sm, int64_t n_kb,
                                         const Tensor& mask_bits);

bool fp8_f16_accum_compiled();

// INT8 Q·Kᵀ + FP8 P·V on Hopper's wgmma (unit _C_sm90, sm_90a only; sm90/attn_wgmma.cu):
// quant_int8's q8 (no raw Q), no mask; pv_mode 2 ("fp32") or 3 ("fp32+fp32").
std::tuple<Tensor, Tensor> attn_int8_fp8_sm90(const Tensor& q8, const Tensor& q_scale,
                                              const Tensor& k8, const Tensor& k_scale,
                                              const Tensor& v8, const Tensor& v_scale, int64_t nq,
                                              int64_t nk, int64_t head_dim, bool nhd, bool causal,
                                              bool per_thread, int64_t pv_mode, bool return_lse,
                                              bool out_bf16);

}  // namespace sageattention
