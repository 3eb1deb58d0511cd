// Host side of INT8 Q·Kᵀ + FP8 e4m3 P·V (sageattn_qk_int8_pv_fp8_cuda[_sm90]); this unit is
// compiled only for archs with FP8 tensor cores (8.9, 9.0, 12.0: setup.py).
#include "attention.cuh"
#include "kernels.h"

namespace sageattention {

namespace {
template <int D_PAD, bool CAUSAL>
void dispatch_pv(const AttnParams& p, int B, int64_t pv_mode, cudaStream_t stream) {
  switch (pv_mode) {
    case kPvF8AccF32:
      launch_attention<D_PAD, CAUSAL, kPvF8AccF32, __half>(p, B, stream);
      break;
#if SAGE_FP8_F16_ACCUM
    case kPvF8AccF16:
      launch_attention<D_PAD, CAUSAL, kPvF8AccF16, __half>(p, B, stream);
      break;
#endif
    default:
      launch_attention<D_PAD, CAUSAL, kPvF8AccF32F32, __half>(p, B, stream);
  }
}
}  // namespace

bool fp8_f16_accum_compiled() { return SAGE_FP8_F16_ACCUM != 0; }

std::tuple<Tensor, Tensor> attn_int8_fp8(const Tensor& q, const Tensor& q_scale,
                                         const Tensor& k8, const Tensor& k_scale,
                                         const Tensor& v8, const Tensor& v_scale,
                                         int64_t nq, int64_t nk, int64_t head_dim,
                                         bool nhd, bool causal, bool per_thread,
                                         int64_t pv_mode, bool return_lse, bool out_bf16,
                                         double q_scale_mul, const Tensor& mask,
                                         const Tensor& lists, int64_t lists_sb,
                                         int64_t lists_sh, int64_t lists_sm, int64_t n_kb,
                                         const Tensor& mask_bits) {
  const char* op = "attn_int8_fp8";
  check_quantized(q, q_scale, k8, k_scale, nq, per_thread, op);
  SAGE_CHECK(pv_mode == kPvF8AccF32 || pv_mode == kPvF8AccF32F32 || pv_mode == kPvF8AccF16, op,
              ": pv_mode must be 2, 3 or 4");
  SAGE_CHECK(pv_mode != kPvF8AccF16 || SAGE_FP8_F16_ACCUM, op,
              ": this build has no fp16-accumulating FP8 MMA (needs nvcc >= 12.8); use pv_mode 3");
  const int64_t B = q.size(0), Hq = q.size(1), d_pad = k8.size(3);
  check_fp8_v(v8, v_scale, k8, nk, head_dim, op);
  SAGE_CHECK(!is_raw_q(q) || q.size(3) == head_dim, op, ": q's head dim must be head_dim");
  const DeviceGuard guard(k8);
  cudaStream_t stream = current_stream(k8);
  auto [out, lse] = allocate_outputs(k8, B, Hq, nq, head_dim, nhd,
                                     out_bf16 ? kBFloat16 : kHalf, return_lse);
  if (nq == 0 || B == 0 || Hq == 0) return {out, lse};
  AttnParams p = common_params(q, q_scale, k8, k_scale, out, lse, nq, nk, head_dim, nhd,
                               per_thread, out_bf16, q_scale_mul);
  p.v = v8.data_ptr();
  p.v_scale = ptr<float>(v_scale);
  set_mask(p, mask, lists, k8, B, lists_sb, lists_sh, lists_sm, n_kb, mask_bits, op);
  dispatch_shape(d_pad, causal, [&](auto d_pad_c, auto causal_c) {
    dispatch_pv<decltype(d_pad_c)::value, decltype(causal_c)::value>(p, B, pv_mode, stream);
  });
  return {out, lse};
}

}  // namespace sageattention
