// Declarations of the CUDA implementations registered in ops.cpp.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace sageattention {

// K [B, H, N, D] (fp16 / bf16 / fp32, any strides) -> (int8 [B, H, n_pad, d_pad],
// fp32 scales [B, H, groups], fp32 channel mean [B, H, D]); see quant_k.cu.
std::tuple<at::Tensor, at::Tensor, at::Tensor> quant_k_int8(const at::Tensor& k, int64_t mode,
                                                            int64_t n_pad, int64_t d_pad,
                                                            bool smooth);

}  // namespace sageattention
