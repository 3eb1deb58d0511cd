"""The compiled extension builds here (nvcc, no GPU), loads, and registers its ops.

Builds csrc/ in a scratch copy with `python setup.py build_ext --inplace` for one arch (sm_80,
or TORCH_CUDA_ARCH_LIST), then checks in a fresh interpreter: sageattention.ops loads it, the
op schemas are registered, the fake implementations give shapes under FakeTensorMode, the
library needs no libtorch_python / pybind11 (abi3-ready), and _build_info records the build.
Skipped without nvcc or without a CUDA build of torch; SAGEATTENTION_SKIP_BUILD_TEST=1 skips it.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from build_env import NEEDS_BUILD

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels.build import stage_sources

pytestmark = NEEDS_BUILD


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    src = tmp_path_factory.mktemp("ext") / "repo"
    stage_sources(src)  # the checkout without build outputs (scripts/build_wheel.py)
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0"),
               MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    env.pop("SAGEATTENTION_SKIP_CUDA_BUILD", None)
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], check=False,
                          cwd=src, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "building sageattention._C" in proc.stdout
    return src


def _run(src, code):
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=src, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(src)))
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def test_library_is_abi3_and_python_free(built):
    libs = sorted((built / "sageattention").glob("_C*.so"))
    # sm_80 alone: the FP8 unit (sm_89+) is not built at all.
    assert [lib.name.split(".")[0] for lib in libs] == ["_C"], libs
    lib = libs[0]
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6):
        assert ".abi3." in lib.name
    needed = subprocess.run(["readelf", "-d", str(lib)], check=True, stdout=subprocess.PIPE,
                            text=True).stdout
    assert "libtorch_python" not in needed
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(lib)], check=True,
                               stdout=subprocess.PIPE, text=True).stdout
    assert "pybind11" not in undefined


def test_loader_schemas_and_fakes(built):
    out = _run(built, """
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from sageattention import ops
info = ops.build_info()
assert info.compiled_extension and info.cuda_archs, info
assert info.torch_version == torch.__version__.split('+')[0], info
assert ops.load() is not None, ops._state.reason
assert info.optional_paths.get('sm90a_archs') == (), info  # sm_80 alone: no sm_90a unit
for name in ('quant_int8', 'attn_int8_fp16', 'quant_v_fp8', 'attn_int8_fp8', 'attn_int8_fp8_sm90'):
    print(getattr(torch.ops.sageattention_C, name).default._schema)
from sageattention import cuda_forward
with FakeTensorMode():
    k = torch.empty(2, 4, 100, 96, dtype=torch.float16, device='cuda')
    k8, ks, km = torch.ops.sageattention_C.quant_int8(k, 3, 128, 128, True, 1.0)
    assert tuple(k8.shape) == (2, 4, 128, 128) and k8.dtype == torch.int8
    assert tuple(ks.shape) == (2, 4, 8) and tuple(km.shape) == (2, 4, 96)
    q = torch.empty(2, 100, 8, 96, dtype=torch.bfloat16, device='cuda')  # NHD, GQA
    for fp8 in (False, True):
        out, lse = cuda_forward.attention_forward(
            q, k.transpose(1, 2).bfloat16(), k.transpose(1, 2).bfloat16(), sm_scale=0.1,
            tensor_layout='NHD', is_causal=True, smooth_k=True, smooth_v=fp8,
            qk_quant_gran='per_warp', pv_fp8=fp8, pv_accum='fp32+fp32', return_lse=True)
        assert out.shape == q.shape and out.dtype == torch.bfloat16 and lse.shape == (2, 8, 100)
    q8, qs, _ = torch.ops.sageattention_C.quant_int8(q.transpose(1, 2), 2, 128, 128, False, 1.0)
    v8, vs, _ = torch.ops.sageattention_C.quant_v_fp8(k, 128, 128, False, 448.0)
    out, lse = torch.ops.sageattention_C.attn_int8_fp8_sm90(
        q8, qs, k8, ks, v8, vs, 100, 100, 96, True, False, True, 3, True, True)
    assert out.shape == q.shape and out.dtype == torch.bfloat16 and lse.shape == (2, 8, 100)
print('fp8 archs', info.optional_paths)
print('ok')
""")
    assert "sageattention_C::quant_int8(Tensor x" in out and out.strip().endswith("ok")
    assert "sageattention_C::attn_int8_fp8(Tensor q8" in out
