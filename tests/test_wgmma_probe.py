"""The wgmma conventions of csrc/sm90/wgmma.cuh on the GPU itself: benchmarks/wgmma_probe.cu
(fragment and accumulator layouts, descriptors, swizzle, V's key order) against exact host
results. Marked `gpu`; runs on an sm_90 GPU where nvcc is found, skips elsewhere."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import tools

pytestmark = pytest.mark.gpu


def test_wgmma_conventions_on_the_gpu(tmp_path):
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs an sm_90 GPU (H100/H200)")
    nvcc = tools.find("nvcc")
    if nvcc is None:
        pytest.skip("needs nvcc to build the probe")
    exe = tmp_path / "wgmma_probe"
    subprocess.run([nvcc, "-gencode=arch=compute_90a,code=sm_90a", f"-I{ROOT / 'csrc'}", "-o",
                    str(exe), str(ROOT / "benchmarks" / "wgmma_probe.cu")], check=True,
                   timeout=600, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc = subprocess.run([str(exe)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and "probe passed" in proc.stdout, proc.stdout
    assert proc.stdout.count(": ok") == 4, proc.stdout
