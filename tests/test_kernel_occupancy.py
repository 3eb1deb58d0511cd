"""Blocks per SM of the mma.sync attention kernels on the ~100 KB cards they are for.

The development GPUs (H100/H200: 228 KB of shared memory per SM) hide a kernel whose shared
memory cuts its blocks per SM on RTX 30/40/50 cards (sm86/89/120: 100 KB per SM, 1 KB reserved
per block): keeping Q's tile in shared memory would have halved the FP8 kernel's blocks there
(docs/perf-notes.md row 27). This compiles a host program against csrc/attention.cuh (nvcc, no
GPU) that prints each kernel's dynamic shared memory, and checks the paths `sageattn` runs on
those cards against the blocks per SM their registers allow.
"""
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension as cpp
from build_env import NEEDS_BUILD, tools

ROOT = Path(__file__).resolve().parents[1]
pytestmark = NEEDS_BUILD

CONSUMER_SMEM_PER_SM = 100 * 1024  # sm86, sm89, sm120 (CUDA programming guide, per-arch limits)
RESERVED_PER_BLOCK = 1024

PROGRAM = r"""
#include <cstdio>
#include "attention.cuh"
using namespace sageattention;
template <int D, int PV> void row(const char* name) {
  std::printf("%s %d %d\n", name, D, SmemLayout<D, PV>::bytes);
}
int main() {
  row<64, kPvF16AccF32>("fp16"); row<128, kPvF16AccF32>("fp16");
  row<64, kPvF8AccF16>("fp8"); row<128, kPvF8AccF16>("fp8");
  std::printf("min_blocks 64 %d\nmin_blocks 128 %d\n", kMinBlocks<64>, kMinBlocks<128>);
  return 0;
}
"""


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smem")
    (tmp / "smem.cu").write_text(PROGRAM)
    lib = Path(torch.__file__).parent / "lib"
    cmd = [tools.find("nvcc"), "-std=c++17", f"-I{ROOT / 'csrc'}",
           *(f"-I{p}" for p in cpp.include_paths()),
           # The stable-ABI flavour of torch_api.h, as setup.py builds it.
           "-DUSE_CUDA=1", "-DSAGE_STABLE_ABI", "-DTORCH_STABLE_ONLY",
           "-DTORCH_TARGET_VERSION=0x020a000000000000", "-arch=sm_80",
           "-o", str(tmp / "smem"), str(tmp / "smem.cu"),
           f"-L{lib}", "-ltorch_cpu", "-lc10", f"-Xlinker=-rpath={lib}"]
    env = {k: v for k, v in os.environ.items() if k != "NVCC_APPEND_FLAGS"}  # the default build
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = subprocess.run([str(tmp / "smem")], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    table = {}
    for line in out.splitlines():
        name, d, value = line.split()
        table[name, int(d)] = int(value)
    return table


def blocks_by_smem(smem: int) -> int:
    return CONSUMER_SMEM_PER_SM // (smem + RESERVED_PER_BLOCK)


def test_sageattn_paths_keep_their_blocks_per_sm_on_100kb_cards(layout):
    # sm89 / sm120: sageattn runs FP8 P·V. D=128 needs 255 registers (two blocks of 128 threads
    # fit the 64 K registers); D=64 is capped to kMinBlocks blocks by its launch bounds.
    assert blocks_by_smem(layout["fp8", 128]) >= 2, layout
    assert blocks_by_smem(layout["fp8", 64]) >= layout["min_blocks", 64], layout
    # The explicit FP16 P·V call at D=64 (KJNodes' fp16_cuda mode) keeps its three blocks.
    assert blocks_by_smem(layout["fp16", 64]) >= layout["min_blocks", 64], layout


def test_fp16_d128_fits_two_blocks_on_these_cards(layout):
    # One V buffer for FP16 P·V (docs/perf-notes.md row 32): 35 KB per block, two blocks per SM
    # on these cards, where two V buffers (53 KB) fit one; 255 registers allow two as well.
    assert layout["fp16", 128] == 35840
    assert blocks_by_smem(layout["fp16", 128]) == 2
