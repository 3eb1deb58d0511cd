// Hopper's tensor memory accelerator (TMA) for unit _C_sm90: tile copies from global to shared
// memory described by a tensor map, completed on an mbarrier.
//
// Why TMA: one thread issues a whole tile (16 KB at D=128) as one instruction, the copy engine
// writes it in the swizzled layout wgmma's descriptors read (csrc/sm90/wgmma.cuh), and rows
// past the end of a tensor come back as zeros; with cp.async every thread issued 16 copies per
// tile and the warpgroup met at two block barriers per tile (docs/perf-notes.md row 42).
//
// The tensor map is encoded on the host by the driver's cuTensorMapEncodeTiled, looked up
// through the CUDA runtime (cudaGetDriverEntryPoint*), so the extension does not link the
// driver library itself: it needs only a driver that has the entry point (any CUDA 12 driver).
#pragma once

#include <cuda.h>  // CUtensorMap and its enums (types only; no driver call is linked)
#include <cuda_runtime_api.h>
#include <cstdint>

#include "torch_api.h"

namespace sageattention {
namespace tma {

// --- device side ------------------------------------------------------------------------------

// An mbarrier expecting `count` arrivals per phase (here: the one thread that issues the copy).
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes initialised mbarriers visible to the copy engine (then a block barrier for the threads).
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Arrives on the barrier and adds `bytes` to the transaction count its phase waits for.
__device__ __forceinline__ void mbar_expect_bytes(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// Waits until the phase of parity `phase` has completed (its copies have landed and are visible).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t phase) {
  uint32_t done;
  do {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(phase)
        : "memory");
  } while (!done);
}
// Copies the box at coordinates (c0 innermost, c1, c2) of `map` to shared address dst (aligned
// as the map's swizzle requires), completing `bytes` of barrier bar's transaction count.
__device__ __forceinline__ void load_3d(uint32_t dst, const CUtensorMap& map, uint32_t bar, int c0,
                                        int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(&map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}
// Fetches the tensor map's descriptor ahead of its first use.
__device__ __forceinline__ void prefetch_map(const CUtensorMap& map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map)) : "memory");
}

// --- host side --------------------------------------------------------------------------------

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver's cuTensorMapEncodeTiled (its CUDA 12.0 ABI), looked up once; nullptr where the
// driver lacks it.
inline EncodeTiled encode_tiled() {
  static const EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault, &found);
#endif
    return err == cudaSuccess && found == cudaDriverEntryPointSuccess ? reinterpret_cast<EncodeTiled>(f)
                                                                      : nullptr;
  }();
  return fn;
}

// The map of a contiguous byte tensor [mats, rows, row_bytes] read in boxes of box_rows rows
// of box_bytes (64 or 128) from one matrix, swizzled as wgmma reads rows of box_bytes; what
// lies past the tensor's rows or row_bytes reads as zeros.
inline CUtensorMap byte_tile_map(const void* base, uint64_t row_bytes, uint64_t rows, uint64_t mats,
                                 uint32_t box_bytes, uint32_t box_rows, const char* op) {
  SAGE_CHECK(box_bytes == 64 || box_bytes == 128, op, ": TMA boxes must be 64 or 128 bytes wide");
  SAGE_CHECK(reinterpret_cast<uintptr_t>(base) % 16 == 0 && row_bytes % 16 == 0, op,
             ": quantized tensors must be 16-byte aligned (pass quant_int8's / quant_v_fp8's output)");
  const EncodeTiled encode = encode_tiled();
  SAGE_CHECK(encode != nullptr, op,
             ": the NVIDIA driver has no cuTensorMapEncodeTiled; update the driver (CUDA 12 or newer)");
  CUtensorMap map;
  const cuuint64_t dims[3] = {row_bytes, rows, mats};
  const cuuint64_t strides[2] = {row_bytes, row_bytes * rows};  // bytes, of dims 1 and 2
  const cuuint32_t box[3] = {box_bytes, box_rows, 1};
  const cuuint32_t steps[3] = {1, 1, 1};
  const CUresult res = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, const_cast<void*>(base), dims,
                              strides, box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              box_bytes == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  SAGE_CHECK(res == CUDA_SUCCESS, op, ": cuTensorMapEncodeTiled failed (CUresult ", static_cast<int>(res),
             ") for a [", mats, ", ", rows, ", ", row_bytes, "] byte tensor");
  return map;
}

}  // namespace tma
}  // namespace sageattention
