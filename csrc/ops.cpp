// Operator registration of unit _C: every schema of the library (TORCH_LIBRARY) and the CUDA
// implementations compiled for all archs (TORCH_LIBRARY_IMPL). The FP8 ops are implemented in
// unit _C_fp8 (ops_fp8.cpp), built only for archs with FP8 tensor cores, and the wgmma op in
// unit _C_sm90 (sm90/ops_sm90.cpp), built only for sm_90a.
// No pybind11 and no libtorch_python: Python reaches the ops through torch.ops.sageattention_C,
// and the module below only exists so that `import sageattention._C` loads this library. That
// keeps the extension inside CPython's limited API (one cp39-abi3 wheel per torch/CUDA row).
#include <Python.h>
#include "kernels.h"
#include "registration.h"

SAGE_LIBRARY(sageattention_C, m) {
  m.def("quant_int8(Tensor x, int mode, int n_pad, int d_pad, bool smooth, float scale_mul, "
        "bool per_row=False) -> (Tensor, Tensor, Tensor)");
  // q: quant_int8's INT8 Q (q_scale its scales), or float16/bfloat16 Q that the kernel
  // quantizes itself with scales times q_scale_mul; mask, lists and mask_bits: a masked call's
  // attn_mask, block_map.py's key-tile lists and the mask's bits, empty tensors for none
  // (kernels.h).
  m.def("attn_int8_fp16(Tensor q8, Tensor q_scale, Tensor k8, Tensor k_scale, Tensor v, int nq, "
        "bool nhd, bool causal, bool per_thread, int pv_mode, bool return_lse, "
        "float q_scale_mul, Tensor mask, Tensor lists, int lists_sb, int lists_sh, "
        "int lists_sm, int n_kb, Tensor mask_bits) -> (Tensor, Tensor)");
  m.def("quant_v_fp8(Tensor v, int n_pad, int d_pad, bool smooth, float max_value) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("attn_int8_fp8(Tensor q8, Tensor q_scale, Tensor k8, Tensor k_scale, Tensor v8, "
        "Tensor v_scale, int nq, int nk, int head_dim, bool nhd, bool causal, bool per_thread, "
        "int pv_mode, bool return_lse, bool out_bf16, float q_scale_mul, Tensor mask, "
        "Tensor lists, int lists_sb, int lists_sh, int lists_sm, int n_kb, Tensor mask_bits) "
        "-> (Tensor, Tensor)");
  // Implemented by unit _C_sm90 (sm_90a only): the wgmma kernel, unmasked calls.
  m.def("attn_int8_fp8_sm90(Tensor q8, Tensor q_scale, Tensor k8, Tensor k_scale, Tensor v8, "
        "Tensor v_scale, int nq, int nk, int head_dim, bool nhd, bool causal, bool per_thread, "
        "int pv_mode, bool return_lse, bool out_bf16) -> (Tensor, Tensor)");
}

SAGE_LIBRARY_IMPL(sageattention_C, CUDA, m) {
  m.impl("quant_int8", SAGE_KERNEL(sageattention::quant_int8));
  m.impl("attn_int8_fp16", SAGE_KERNEL(sageattention::attn_int8_fp16));
}

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "sageattention CUDA kernels", -1,
                               nullptr};
  return PyModule_Create(&module);
}
