"""The public API contract (shared/API.md): names, signatures, defaults, version, kwargs."""
import importlib.metadata
import inspect
import warnings

import pytest
import torch
from packaging.version import Version

import sageattention as sa

EMPTY = inspect.Parameter.empty
CONTRACT = {
    "sageattn": [("q", EMPTY), ("k", EMPTY), ("v", EMPTY), ("tensor_layout", "HND"),
                 ("is_causal", False), ("sm_scale", None), ("return_lse", False)],
    "sageattn_qk_int8_pv_fp16_triton": [
        ("q", EMPTY), ("k", EMPTY), ("v", EMPTY), ("tensor_layout", "HND"),
        ("quantization_backend", "triton"), ("is_causal", False), ("attn_mask", None),
        ("sm_scale", None), ("smooth_k", True), ("return_lse", False)],
    "sageattn_qk_int8_pv_fp16_cuda": [
        ("q", EMPTY), ("k", EMPTY), ("v", EMPTY), ("tensor_layout", "HND"), ("is_causal", False),
        ("qk_quant_gran", "per_thread"), ("sm_scale", None), ("pv_accum_dtype", "fp32"),
        ("smooth_k", True), ("smooth_v", False), ("return_lse", False)],
    "sageattn_qk_int8_pv_fp8_cuda": [
        ("q", EMPTY), ("k", EMPTY), ("v", EMPTY), ("tensor_layout", "HND"), ("is_causal", False),
        ("qk_quant_gran", "per_thread"), ("sm_scale", None), ("pv_accum_dtype", "fp32+fp16"),
        ("smooth_k", True), ("smooth_v", False), ("return_lse", False)],
    "sageattn_qk_int8_pv_fp8_cuda_sm90": [
        ("q", EMPTY), ("k", EMPTY), ("v", EMPTY), ("tensor_layout", "HND"), ("is_causal", False),
        ("qk_quant_gran", "per_thread"), ("sm_scale", None), ("pv_accum_dtype", "fp32+fp32"),
        ("smooth_k", True), ("return_lse", False)],
    "sageattn_varlen": [
        ("q", EMPTY), ("k", EMPTY), ("v", EMPTY), ("cu_seqlens_q", EMPTY), ("cu_seqlens_k", EMPTY),
        ("max_seqlen_q", EMPTY), ("max_seqlen_k", EMPTY), ("is_causal", False), ("sm_scale", None),
        ("smooth_k", True)],
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_signature_matches_the_2_2_0_api(name):
    params = list(inspect.signature(getattr(sa, name)).parameters.values())
    # The 2.2.0 parameters first, in order; sageattn adds attn_mask after them.
    assert [(p.name, p.default) for p in params[:len(CONTRACT[name])]] == CONTRACT[name]
    extra = [p.name for p in params[len(CONTRACT[name]):-1]]
    assert extra == (["attn_mask"] if name == "sageattn" else [])
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD


def test_version_is_pep440_and_new_enough_for_diffusers():
    assert Version(sa.__version__) >= Version("2.1.1")
    try:
        installed = importlib.metadata.version("sageattention")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("package not installed (source checkout)")
    assert installed == sa.__version__


def test_sageattn_names_attn_mask_so_comfyui_sends_masked_calls():
    # ComfyUI's import-time probe (shared/FACTS.md): masked calls go to PyTorch attention
    # unless the signature names attn_mask.
    params = inspect.signature(sa.sageattn).parameters
    assert "attn_mask" in params
    names = list(params)
    assert names.index("attn_mask") == names.index("return_lse") + 1
    assert params["attn_mask"].default is None
    assert list(params.values())[-1].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.interpret
def test_unknown_kwargs_warn_once_and_name_the_argument():
    from sageattention import _checks

    _checks._warned.clear()
    q = torch.randn(1, 1, 16, 64, dtype=torch.float16)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        sa.sageattn(q, q, q, flux_magic=3)
        sa.sageattn(q, q, q, flux_magic=3)
    msgs = [str(w.message) for w in rec if "flux_magic" in str(w.message)]
    assert len(msgs) == 1 and "sageattn" in msgs[0]


@pytest.mark.interpret
def test_dropout_is_warned_and_enable_gqa_accepted():
    from sageattention import _checks

    _checks._warned.clear()
    q = torch.randn(1, 2, 16, 64, dtype=torch.float16)
    k = torch.randn(1, 1, 16, 64, dtype=torch.float16)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = sa.sageattn(q, k, k, dropout_p=0.1, enable_gqa=True)
    assert out.shape == q.shape
    assert any("dropout_p" in str(w.message) for w in rec)
    assert not any("enable_gqa" in str(w.message) for w in rec)


@pytest.mark.interpret
def test_empty_query_returns_empty():
    q = torch.randn(1, 2, 0, 64, dtype=torch.float16)
    k = torch.randn(1, 2, 5, 64, dtype=torch.float16)
    out, lse = sa.sageattn(q, k, k, return_lse=True)
    assert out.shape == q.shape and lse.shape == (1, 2, 0)
