// The host-side tensor API the ops are written against, over one of two torch interfaces:
//   default          ATen (at::Tensor, TORCH_CHECK, c10 CUDA guards): the wheel is tied to the
//                    torch version it was built with (cpython / abi3 flavours);
//   SAGE_STABLE_ABI  the libtorch stable ABI (torch::stable::Tensor and the C shim), built with
//                    TORCH_STABLE_ONLY and TORCH_TARGET_VERSION: one binary for the target torch
//                    and every later one (the "stable" flavour of build_matrix.yaml).
// Only what the ops need is here: shape/stride/dtype queries, allocation on the input's device,
// the device guard and current stream, checks that raise a Python RuntimeError, and a dtype
// switch that hands kernels the CUDA element type (__half / __nv_bfloat16 / float) in both.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace sageattention::detail {

// Error messages are concatenated with std::to_string, never streamed: on a machine whose g++
// brings its own libstdc++, every TORCH_CHECK message that streamed a number segfaulted instead
// of raising (an iostream formats numbers through the locale's num_put facet; two libstdc++
// copies in one process is the likely cause). csrc/README.md, "Errors".
inline void append(std::string& s, const char* v) { s += v; }
inline void append(std::string& s, const std::string& v) { s += v; }
template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
void append(std::string& s, T v) {
  s += std::to_string(v);
}

template <typename... Args>
std::string message(const Args&... args) {
  std::string s;
  (append(s, args), ...);
  return s;
}

}  // namespace sageattention::detail

#ifdef SAGE_STABLE_ABI

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>
#include <torch/headeronly/util/shim_utils.h>

// std::runtime_error: the stable dispatcher turns it into a Python RuntimeError.
#define SAGE_FAIL(msg) throw std::runtime_error(msg)

namespace sageattention {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;

class DeviceGuard {
 public:
  explicit DeviceGuard(const Tensor& t) : guard_(t.get_device_index()) {}

 private:
  torch::stable::accelerator::DeviceGuard guard_;
};

inline cudaStream_t current_stream(const Tensor& t) {
  void* stream = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream));
  return static_cast<cudaStream_t>(stream);
}

// Uninitialized / zero-filled tensors of `dtype` on the device of `like`.
inline Tensor empty_on(const Tensor& like, std::initializer_list<int64_t> sizes,
                       ScalarType dtype) {
  const std::vector<int64_t> shape(sizes);
  return torch::stable::new_empty(like, shape, dtype);
}

inline Tensor zeros_on(const Tensor& like, std::initializer_list<int64_t> sizes,
                       ScalarType dtype) {
  const std::vector<int64_t> shape(sizes);
  return torch::stable::new_zeros(like, shape, dtype);
}

inline void zero_fill(Tensor& t) { torch::stable::zero_(t); }

}  // namespace sageattention

#else  // ATen

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that one needs cuSPARSE headers

// c10::Error (a Python RuntimeError) carrying only the finished message.
#define SAGE_FAIL(msg) TORCH_CHECK(false, msg)

namespace sageattention {

using Tensor = at::Tensor;
using ScalarType = at::ScalarType;

class DeviceGuard {
 public:
  explicit DeviceGuard(const Tensor& t) : guard_(t.device()) {}

 private:
  c10::cuda::CUDAGuard guard_;
};

inline cudaStream_t current_stream(const Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.get_device()).stream();
}

inline Tensor empty_on(const Tensor& like, std::initializer_list<int64_t> sizes,
                       ScalarType dtype) {
  return at::empty(sizes, like.options().dtype(dtype));
}

inline Tensor zeros_on(const Tensor& like, std::initializer_list<int64_t> sizes,
                       ScalarType dtype) {
  return at::zeros(sizes, like.options().dtype(dtype));
}

inline void zero_fill(Tensor& t) { t.zero_(); }

}  // namespace sageattention

#endif  // SAGE_STABLE_ABI

// Raises a Python RuntimeError with the arguments concatenated when cond is false.
#define SAGE_CHECK(cond, ...)                                        \
  do {                                                               \
    if (!(cond)) SAGE_FAIL(::sageattention::detail::message(__VA_ARGS__)); \
  } while (0)

namespace sageattention {

constexpr ScalarType kHalf = ScalarType::Half;
constexpr ScalarType kBFloat16 = ScalarType::BFloat16;
constexpr ScalarType kFloat = ScalarType::Float;
constexpr ScalarType kInt8 = ScalarType::Char;
constexpr ScalarType kUInt8 = ScalarType::Byte;
constexpr ScalarType kBool = ScalarType::Bool;

// Whether two CUDA tensors are on the same GPU.
inline bool same_device(const Tensor& a, const Tensor& b) {
  return static_cast<int64_t>(a.get_device()) == static_cast<int64_t>(b.get_device());
}

template <typename T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

// Calls f(T{}) with T the CUDA element type of `dtype`: float, __half or __nv_bfloat16.
template <typename F>
void dispatch_float_types(ScalarType dtype, const char* op, F&& f) {
  switch (dtype) {
    case ScalarType::Float: f(float{}); break;
    case ScalarType::Half: f(__half{}); break;
    case ScalarType::BFloat16: f(__nv_bfloat16{}); break;
    default: SAGE_CHECK(false, op, ": input must be float16, bfloat16 or float32");
  }
}

}  // namespace sageattention

#define SAGE_CUDA_CHECK(expr)                                                           \
  do {                                                                                  \
    const cudaError_t sage_err_ = (expr);                                               \
    SAGE_CHECK(sage_err_ == cudaSuccess, "CUDA error: ", cudaGetErrorString(sage_err_)); \
  } while (0)

#define SAGE_LAUNCH_CHECK() SAGE_CUDA_CHECK(cudaGetLastError())
