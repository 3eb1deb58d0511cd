// Host side of INT8 Q·Kᵀ + FP16/BF16 P·V (sageattn_qk_int8_pv_fp16_cuda), all archs (sm80+).
#include "attention.cuh"
#include "kernels.h"

namespace sageattention {

namespace {
template <int D_PAD, bool CAUSAL>
void dispatch_pv(const AttnParams& p, int B, int64_t pv_mode, bool bf16, cudaStream_t stream) {
  if (bf16) {
    // There is no bf16-accumulating MMA: bf16 V always accumulates in fp32.
    launch_attention<D_PAD, CAUSAL, kPvF16AccF32, __nv_bfloat16>(p, B, stream);
  } else if (pv_mode == kPvF16AccF16) {
    launch_attention<D_PAD, CAUSAL, kPvF16AccF16, __half>(p, B, stream);
  } else {
    launch_attention<D_PAD, CAUSAL, kPvF16AccF32, __half>(p, B, stream);
  }
}
}  // namespace

std::tuple<Tensor, Tensor> attn_int8_fp16(const Tensor& q, const Tensor& q_scale,
                                          const Tensor& k8, const Tensor& k_scale,
                                          const Tensor& v, int64_t nq, bool nhd,
                                          bool causal, bool per_thread, int64_t pv_mode,
                                          bool return_lse, double q_scale_mul,
                                          const Tensor& mask, const Tensor& lists,
                                          int64_t lists_sb, int64_t lists_sh,
                                          int64_t lists_sm, int64_t n_kb,
                                          const Tensor& mask_bits) {
  const char* op = "attn_int8_fp16";
  check_quantized(q, q_scale, k8, k_scale, nq, per_thread, op);
  SAGE_CHECK(pv_mode == kPvF16AccF32 || pv_mode == kPvF16AccF16, op, ": pv_mode must be 0 or 1");
  SAGE_CHECK(v.is_cuda() && v.dim() == 4 && same_device(v, k8), op,
             ": v must be a CUDA tensor [B, Hkv, Nk, D] on k8's GPU");
  SAGE_CHECK(v.scalar_type() == kHalf || v.scalar_type() == kBFloat16, op,
              ": v must be float16 or bfloat16");
  const int64_t B = q.size(0), Hq = q.size(1), d_pad = k8.size(3);
  const int64_t Hkv = v.size(1), Nk = v.size(2), D = v.size(3);
  SAGE_CHECK(v.size(0) == B && k8.size(1) == Hkv && k8.size(2) >= Nk, op,
              ": v must match k8 in batch, heads and keys");
  SAGE_CHECK(D <= d_pad && D % 8 == 0 && d_pad - D < 64, op,
              ": head dim must be a multiple of 8 that pads to k8's");
  SAGE_CHECK(!is_raw_q(q) || q.size(3) == D, op, ": q and v must have the same head dim");
  SAGE_CHECK(v.stride(3) == 1 && v.stride(0) % 8 == 0 && v.stride(1) % 8 == 0 &&
                  v.stride(2) % 8 == 0 &&
                  reinterpret_cast<uintptr_t>(v.data_ptr()) % 16 == 0,
              op, ": v needs unit channel stride and 16-byte aligned rows");
  const DeviceGuard guard(k8);
  cudaStream_t stream = current_stream(k8);
  auto [out, lse] = allocate_outputs(v, B, Hq, nq, D, nhd, v.scalar_type(), return_lse);
  if (nq == 0 || B == 0 || Hq == 0) return {out, lse};
  SAGE_CHECK(Nk > 0, op, ": need at least one key");
  const bool bf16 = v.scalar_type() == kBFloat16;
  AttnParams p = common_params(q, q_scale, k8, k_scale, out, lse, nq, Nk, D, nhd, per_thread,
                               bf16, q_scale_mul);
  p.v = v.data_ptr();
  p.v_sb = v.stride(0), p.v_sh = v.stride(1), p.v_sn = v.stride(2);
  set_mask(p, mask, lists, k8, B, lists_sb, lists_sh, lists_sm, n_kb, mask_bits, op);
  dispatch_shape(d_pad, causal, [&](auto d_pad_c, auto causal_c) {
    dispatch_pv<decltype(d_pad_c)::value, decltype(causal_c)::value>(p, B, pv_mode, bf16, stream);
  });
  return {out, lse};
}

}  // namespace sageattention
