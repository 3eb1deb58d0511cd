// Operator registration of unit _C_sm90: the wgmma attention op whose schema ops.cpp defines.
// Built only for sm_90a (setup.py), whose code runs on sm_90 GPUs only (H100, H200); other
// GPUs never have it registered (sageattention/ops.py knows from _build_info).
#include <Python.h>
#include "kernels.h"
#include "registration.h"

SAGE_LIBRARY_IMPL(sageattention_C, CUDA, m) {
  m.impl("attn_int8_fp8_sm90", SAGE_KERNEL(sageattention::attn_int8_fp8_sm90));
}

extern "C" PyObject* PyInit__C_sm90(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_sm90",
                               "sageattention Hopper wgmma CUDA kernels", -1, nullptr};
  return PyModule_Create(&module);
}
