// Operator registration: schemas in TORCH_LIBRARY, CUDA implementations in TORCH_LIBRARY_IMPL.
// No pybind11 and no libtorch_python: Python reaches the ops through torch.ops.sageattention_C,
// and the module below only exists so that `import sageattention._C` loads this library. That
// keeps the extension inside CPython's limited API (one cp39-abi3 wheel per torch/CUDA row).
#include <Python.h>
#include <torch/library.h>

#include "quant_k.h"

TORCH_LIBRARY(sageattention_C, m) {
  m.def("quant_k_int8(Tensor k, int mode, int n_pad, int d_pad, bool smooth) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sageattention_C, CUDA, m) {
  m.impl("quant_k_int8", &sageattention::quant_k_int8);
}

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "sageattention CUDA kernels", -1,
                               nullptr};
  return PyModule_Create(&module);
}
