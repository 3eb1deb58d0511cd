// Operator registration of unit _C_fp8: the CUDA implementations of the FP8 P·V ops whose
// schemas ops.cpp defines. Built only for archs with FP8 tensor cores (8.9, 9.0, 12.0), so a
// GPU without them never has these kernels registered (sageattention/ops.py knows from
// _build_info which archs this unit covers).
#include <Python.h>
#include "kernels.h"
#include "registration.h"

SAGE_LIBRARY_IMPL(sageattention_C, CUDA, m) {
  m.impl("quant_v_fp8", SAGE_KERNEL(sageattention::quant_v_fp8));
  m.impl("attn_int8_fp8", SAGE_KERNEL(sageattention::attn_int8_fp8));
}

extern "C" PyObject* PyInit__C_fp8(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_fp8",
                               "sageattention FP8 P.V CUDA kernels", -1, nullptr};
  return PyModule_Create(&module);
}
