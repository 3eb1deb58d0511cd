// Checks the wgmma conventions of csrc/sm90/wgmma.cuh on an H100/H200 against host references:
// the INT8 m64n64k32 wgmma with A from registers (mma.sync's A fragment layout per warp) and K
// tiles of 128- and 64-byte rows in the 128B / 64B swizzle, stepped 32 bytes per k32 step; the
// e4m3 m64n128k32 / m64n64k32 wgmma with P from registers and V transposed in quant_v_fp8.cu's
// key order (64B swizzle); and the accumulator layout. Exact integer / small-value arithmetic,
// so any layout error shows as a mismatch. docs/perf-notes.md row 38 has the run.
//   nvcc -gencode=arch=compute_90a,code=sm_90a -I csrc -o /tmp/wgmma_probe benchmarks/wgmma_probe.cu
//   /tmp/wgmma_probe   # prints one line per case and exits 1 on any mismatch
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_fp8.h>

#include "sm90/wgmma.cuh"

using namespace sageattention;

// A fragment (mma.sync m16n8k32 8-bit layout) of rows 16w.., k-slice s (32 bytes): a[i] holds
// row g + 8 * (i & 1), bytes 16 * (i >> 1) + 4t .. +3.
__device__ void load_a(const uint8_t* A, int lda, int s, uint32_t (&a)[4]) {
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = 16 * w + g + 8 * (i & 1), k = 32 * s + 16 * (i >> 1) + 4 * t;
    uint32_t x; memcpy(&x, A + row * lda + k, 4); a[i] = x;
  }
}

// S = A (64 x KB bytes s8) * B^T (64 rows x KB bytes s8), B in smem K-major with swizzle rows of KB bytes.
template <int KB>
__global__ void s8_kernel(const uint8_t* A, const uint8_t* B, int* S) {
  __shared__ __align__(1024) uint8_t sb[64 * KB];
  for (int i = threadIdx.x; i < 64 * KB; i += blockDim.x) sb[wgmma::swizzled_offset<KB>(i)] = B[i];
  wgmma::fence_async_shared();
  __syncthreads();
  int d[32];
  for (int i = 0; i < 32; ++i) d[i] = 0;
  const uint32_t base = (uint32_t)__cvta_generic_to_shared(sb);
  uint32_t a[KB / 32][4];
  for (int s = 0; s < KB / 32; ++s) load_a(A, KB, s, a[s]);
  wgmma::fence();
  for (int s = 0; s < KB / 32; ++s) wgmma::mma_s8_n64(d, a[s], wgmma::tile_desc<KB>(base + 32 * s), s > 0);
  wgmma::commit();
  wgmma::wait<0>();
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  for (int j = 0; j < 8; ++j) for (int e = 0; e < 4; ++e) {
    const int row = 16 * w + g + 8 * (e >> 1), col = 8 * j + 2 * t + (e & 1);
    S[row * 64 + col] = d[4 * j + e];
  }
}

// O = P (64 x 64 keys e4m3, A from registers, keys permuted as the V pass does) * V
// with Vt (NOUT channels x 64 keys e4m3, K-major) in smem, 64B swizzle. P is given in stored order.
template <int NOUT>
__global__ void e4m3_kernel(const uint8_t* P, const uint8_t* Vt, float* O) {
  __shared__ __align__(1024) uint8_t sb[NOUT * 64];
  for (int i = threadIdx.x; i < NOUT * 64; i += blockDim.x) sb[wgmma::swizzled_offset<64>(i)] = Vt[i];
  wgmma::fence_async_shared();
  __syncthreads();
  float d[NOUT / 2];
  for (int i = 0; i < NOUT / 2; ++i) d[i] = 0.f;
  const uint32_t base = (uint32_t)__cvta_generic_to_shared(sb);
  uint32_t a[2][4];
  for (int s = 0; s < 2; ++s) load_a(P, 64, s, a[s]);
  wgmma::fence();
  for (int s = 0; s < 2; ++s) {
    const uint64_t desc = wgmma::tile_desc<64>(base + 32 * s);
    if constexpr (NOUT == 128) wgmma::mma_e4m3_n128(d, a[s], desc, s > 0);
    else wgmma::mma_e4m3_n64(d, a[s], desc, s > 0);
  }
  wgmma::commit();
  wgmma::wait<0>();
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  for (int j = 0; j < NOUT / 8; ++j) for (int e = 0; e < 4; ++e) {
    const int row = 16 * w + g + 8 * (e >> 1), col = 8 * j + 2 * t + (e & 1);
    O[row * NOUT + col] = d[4 * j + e];
  }
}

static float e4m3_to_float(uint8_t x) { __nv_fp8_e4m3 v; memcpy(&v, &x, 1); return float(v); }
static uint8_t float_to_e4m3(float f) { __nv_fp8_e4m3 v(f); uint8_t x; memcpy(&x, &v, 1); return x; }

template <int KB> static int run_s8() {
  const int n = 64 * KB;
  uint8_t *hA = (uint8_t*)malloc(n), *hB = (uint8_t*)malloc(n); int* hS = (int*)malloc(64 * 64 * 4);
  for (int i = 0; i < n; ++i) { hA[i] = (uint8_t)(int8_t)(rand() % 255 - 127); hB[i] = (uint8_t)(int8_t)(rand() % 255 - 127); }
  uint8_t *dA, *dB; int* dS;
  cudaMalloc(&dA, n); cudaMalloc(&dB, n); cudaMalloc(&dS, 64 * 64 * 4);
  cudaMemcpy(dA, hA, n, cudaMemcpyHostToDevice); cudaMemcpy(dB, hB, n, cudaMemcpyHostToDevice);
  cudaMemset(dS, 0, 64 * 64 * 4);
  s8_kernel<KB><<<1, 128>>>(dA, dB, dS);
  cudaError_t err = cudaDeviceSynchronize();
  cudaMemcpy(hS, dS, 64 * 64 * 4, cudaMemcpyDeviceToHost);
  int bad = 0;
  for (int r = 0; r < 64; ++r) for (int c = 0; c < 64; ++c) {
    int ref = 0;
    for (int k = 0; k < KB; ++k) ref += (int)(int8_t)hA[r * KB + k] * (int)(int8_t)hB[c * KB + k];
    if (ref != hS[r * 64 + c]) { if (bad < 3) printf("  s8 KB=%d mismatch r=%d c=%d got %d want %d\n", KB, r, c, hS[r * 64 + c], ref); ++bad; }
  }
  printf("s8 m64n64k32 RS, B swizzle rows %d B: %s (%d bad of 4096) err=%s\n", KB, bad ? "FAIL" : "ok", bad, cudaGetErrorString(err));
  cudaFree(dA); cudaFree(dB); cudaFree(dS); free(hA); free(hB); free(hS);
  return bad;
}

static int permuted_position(int key) { const int kk = key % 16; return (key / 16) * 16 + 4 * ((kk % 8) / 2) + 2 * (kk / 8) + kk % 2; }

template <int NOUT> static int run_e4m3() {
  // Logical P[64 rows][64 keys], V[64 keys][NOUT]; stored: Ps[row][permuted_position(key)] = P[row][key],
  // Vt[ch][permuted_position(key)] = V[key][ch]. The A fragment then holds, for thread t, the
  // keys of its score accumulator columns.
  float P[64][64], V[64][NOUT];
  uint8_t* Ps = (uint8_t*)malloc(64 * 64); uint8_t* Vt = (uint8_t*)malloc(NOUT * 64);
  for (int r = 0; r < 64; ++r) for (int k = 0; k < 64; ++k) { uint8_t x = float_to_e4m3((float)(rand() % 9 - 4) * 0.5f); P[r][k] = e4m3_to_float(x); Ps[r * 64 + permuted_position(k)] = x; }
  for (int k = 0; k < 64; ++k) for (int c = 0; c < NOUT; ++c) { uint8_t x = float_to_e4m3((float)(rand() % 9 - 4)); V[k][c] = e4m3_to_float(x); Vt[c * 64 + permuted_position(k)] = x; }
  uint8_t *dP, *dV; float* dO;
  cudaMalloc(&dP, 64 * 64); cudaMalloc(&dV, NOUT * 64); cudaMalloc(&dO, 64 * NOUT * 4);
  cudaMemcpy(dP, Ps, 64 * 64, cudaMemcpyHostToDevice); cudaMemcpy(dV, Vt, NOUT * 64, cudaMemcpyHostToDevice);
  e4m3_kernel<NOUT><<<1, 128>>>(dP, dV, dO);
  cudaError_t err = cudaDeviceSynchronize();
  float* hO = (float*)malloc(64 * NOUT * 4);
  cudaMemcpy(hO, dO, 64 * NOUT * 4, cudaMemcpyDeviceToHost);
  int bad = 0;
  for (int r = 0; r < 64; ++r) for (int c = 0; c < NOUT; ++c) {
    float ref = 0; for (int k = 0; k < 64; ++k) ref += P[r][k] * V[k][c];
    if (ref != hO[r * NOUT + c]) { if (bad < 3) printf("  e4m3 N=%d mismatch r=%d c=%d got %f want %f\n", NOUT, r, c, hO[r * NOUT + c], ref); ++bad; }
  }
  printf("e4m3 m64n%dk32 RS, Vt 64B swizzle, V pass key order: %s (%d bad) err=%s\n", NOUT, bad ? "FAIL" : "ok", bad, cudaGetErrorString(err));
  return bad;
}

int main() {
  srand(1);
  int bad = 0;
  bad += run_s8<128>(); bad += run_s8<64>();
  bad += run_e4m3<128>(); bad += run_e4m3<64>();
  printf("probe %s\n", bad ? "FAILED" : "passed");
  return bad != 0;
}
