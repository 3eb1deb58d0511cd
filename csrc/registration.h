// Operator registration macros over the two torch interfaces of torch_api.h: TORCH_LIBRARY with
// plain function pointers (ATen), or STABLE_TORCH_LIBRARY with boxed kernels (libtorch stable
// ABI). The schemas and kernel functions are the same in both.
#pragma once

#ifdef SAGE_STABLE_ABI
#include <torch/csrc/stable/library.h>
#define SAGE_LIBRARY(ns, m) STABLE_TORCH_LIBRARY(ns, m)
#define SAGE_LIBRARY_IMPL(ns, k, m) STABLE_TORCH_LIBRARY_IMPL(ns, k, m)
#define SAGE_KERNEL(fn) TORCH_BOX(&fn)
#else
#include <torch/library.h>
#define SAGE_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define SAGE_LIBRARY_IMPL(ns, k, m) TORCH_LIBRARY_IMPL(ns, k, m)
#define SAGE_KERNEL(fn) (&fn)
#endif
