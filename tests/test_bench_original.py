"""benchmarks/original.py: the original's built package loads beside ours under its own name.

A stand-in package (same public names as the original's) replaces the real build, so this runs
without a GPU; what it checks is the loading rule the side-by-side benchmarks depend on.
"""
import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
original = importlib.import_module("original")

FAKE_INIT = '''
from .core import sageattn, sageattn_qk_int8_pv_fp16_cuda, sageattn_qk_int8_pv_fp8_cuda
'''
FAKE_CORE = '''
CALLS = []
def sageattn(q, k, v, **kw):
    CALLS.append(("sageattn", kw)); return "orig"
def sageattn_qk_int8_pv_fp16_cuda(q, k, v, **kw):
    CALLS.append(("fp16_cuda", kw)); return "orig"
def sageattn_qk_int8_pv_fp8_cuda(q, k, v, **kw):
    CALLS.append(("fp8_cuda", kw)); return "orig"
'''


@pytest.fixture
def fake_original(tmp_path, monkeypatch):
    pkg = tmp_path / "sageattention"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FAKE_INIT)
    (pkg / "core.py").write_text(FAKE_CORE)
    monkeypatch.setenv("SAGEATTN_ORIGINAL_SRC", str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("sageattention_original")]:
        monkeypatch.delitem(sys.modules, name)
    return tmp_path


def test_unset_means_no_original(monkeypatch):
    monkeypatch.delenv("SAGEATTN_ORIGINAL_SRC", raising=False)
    assert original.original_package() is None
    assert original.original_compiled() == {}


def test_loads_under_its_own_name_and_leaves_ours_alone(fake_original):
    import sageattention as ours

    fns = original.original_compiled()
    assert sorted(fns) == sorted(["original sageattn", "original fp16_cuda",
                                  "original fp16_cuda fp16+fp32", "original fp8_cuda",
                                  "original fp8_cuda fp32+fp32"])
    assert sys.modules["sageattention"] is ours  # ours was not replaced
    core = sys.modules["sageattention_original.core"]
    assert all(fn(1, 2, 3, True) == "orig" for fn in fns.values())
    # Each name runs the function and accumulation mode it says, with the causal flag passed on.
    assert ("fp16_cuda", {"is_causal": True, "pv_accum_dtype": "fp16+fp32"}) in core.CALLS
    assert ("fp8_cuda", {"is_causal": True, "pv_accum_dtype": "fp32+fp32"}) in core.CALLS
    assert ("fp8_cuda", {"is_causal": True, "pv_accum_dtype": "fp32+fp16"}) in core.CALLS
    assert ("sageattn", {"is_causal": True}) in core.CALLS
    assert original.original_package() is sys.modules["sageattention_original"]  # loaded once
