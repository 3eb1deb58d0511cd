"""Optional: the original SageAttention's Triton fp16 path, for side-by-side numbers.

Nothing of the original is part of this repository. Point SAGEATTN_ORIGINAL_SRC at a checkout
of thu-ml/SageAttention (any folder holding its ``sageattention/triton/*.py``); its three
stand-alone Triton modules are loaded from there. Returns None when the variable is unset.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def original_fp16_triton():
    """A callable (q, k, v, is_causal, tensor_layout) -> o, or None if not available."""
    src = os.environ.get("SAGEATTN_ORIGINAL_SRC")
    if not src:
        return None
    tdir = Path(src) / "sageattention" / "triton"
    quant = _load(tdir / "quant_per_block.py", "orig_quant_per_block")
    full = _load(tdir / "attn_qk_int8_per_block.py", "orig_attn_full")
    causal = _load(tdir / "attn_qk_int8_per_block_causal.py", "orig_attn_causal")

    def run(q, k, v, is_causal=False, tensor_layout="HND"):
        # What the original's sageattn_qk_int8_pv_fp16_triton does for D in {64, 128}.
        seq_dim = 1 if tensor_layout == "NHD" else 2
        km = k.mean(dim=seq_dim, keepdim=True)
        sm_scale = q.shape[-1] ** -0.5
        q8, qs, k8, ks = quant.per_block_int8(q, k, km=km, sm_scale=sm_scale,
                                              tensor_layout=tensor_layout)
        vv = v.to(torch.float16)  # the original runs P·V in fp16 for bf16 inputs too
        mod = causal if is_causal else full
        o, _ = mod.forward(q8, k8, vv, qs, ks, tensor_layout=tensor_layout, output_dtype=q.dtype)
        return o

    return run


def original_package():
    """The original's built package (its compiled modules next to its Python files), imported
    under the name ``sageattention_original`` so that it sits beside ours in one process; None
    when SAGEATTN_ORIGINAL_SRC is unset. Its ops live in the torch namespace "sageattention"
    under names ours never registers (ours: ``sageattention::attention`` and
    ``sageattention_C``)."""
    import sys

    src = os.environ.get("SAGEATTN_ORIGINAL_SRC")
    if not src:
        return None
    pkg = Path(src) / "sageattention"
    name = "sageattention_original"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def original_compiled():
    """The original's public calls, named as bench_attention.py names ours ("original " +
    name); empty when SAGEATTN_ORIGINAL_SRC is unset. Each is (q, k, v, is_causal) -> o."""
    pkg = original_package()
    if pkg is None:
        return {}
    return {
        "original sageattn": lambda q, k, v, c: pkg.sageattn(q, k, v, is_causal=c),
        "original fp16_cuda": lambda q, k, v, c: pkg.sageattn_qk_int8_pv_fp16_cuda(
            q, k, v, is_causal=c, pv_accum_dtype="fp32"),
        "original fp16_cuda fp16+fp32": lambda q, k, v, c: pkg.sageattn_qk_int8_pv_fp16_cuda(
            q, k, v, is_causal=c, pv_accum_dtype="fp16+fp32"),
        "original fp8_cuda": lambda q, k, v, c: pkg.sageattn_qk_int8_pv_fp8_cuda(
            q, k, v, is_causal=c, pv_accum_dtype="fp32+fp16"),
        "original fp8_cuda fp32+fp32": lambda q, k, v, c: pkg.sageattn_qk_int8_pv_fp8_cuda(
            q, k, v, is_causal=c, pv_accum_dtype="fp32+fp32"),
    }
