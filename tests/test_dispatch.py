"""Which path sageattn plans per compute capability (sageattention/dispatch.py), and when the
CUDA path declines a call (sageattention/cuda_forward.unsupported_reason). No GPU needed."""
import pytest
import torch

from sageattention import cuda_forward, dispatch

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("cc,d,want", [
    ((8, 0), 128, {"pv_fp8": False, "backend": "cuda", "pv_accum": "fp32"}),
    ((8, 6), 128, {"pv_fp8": False, "backend": "triton"}),
    ((8, 7), 64, {"pv_fp8": False, "backend": "triton"}),
    ((8, 9), 128, {"pv_fp8": True, "backend": "cuda", "pv_accum": "fp32+fp16",
                       "qk_quant_gran": "per_thread"}),
    ((12, 0), 128, {"pv_fp8": True, "backend": "cuda", "pv_accum": "fp32+fp16",
                        "qk_quant_gran": "per_warp"}),
    ((9, 0), 128, {"pv_fp8": True, "backend": "wgmma", "pv_accum": "fp32+fp32"}),
    ((9, 0), 64, {"pv_fp8": True, "backend": "wgmma", "pv_accum": "fp32+fp32"}),
])
def test_plan_per_capability(monkeypatch, cc, d, want):
    monkeypatch.setattr(dispatch, "_capability", lambda device: cc)
    plan = dispatch.default_plan(CUDA, d)
    for key, value in want.items():
        assert getattr(plan, key) == value, (cc, d, plan)


@pytest.mark.parametrize("d", [64, 128])
def test_small_calls_on_hopper_run_the_compiled_fp16_kernel(monkeypatch, d):
    monkeypatch.setattr(dispatch, "_capability", lambda device: (9, 0))
    small = dispatch.default_plan(CUDA, d, dispatch.SM90_COMPILED_MAX_SCORES)
    assert (small.backend, small.pv_fp8, small.pv_accum) == ("cuda", False, "fp32")
    mid = dispatch.default_plan(CUDA, d, dispatch.SM90_COMPILED_MAX_SCORES + 1)
    assert (mid.backend, mid.pv_fp8) == ("triton", d > 64)


@pytest.mark.parametrize("d", [64, 128])
def test_large_calls_on_hopper_run_the_wgmma_kernel(monkeypatch, d):
    monkeypatch.setattr(dispatch, "_capability", lambda device: (9, 0))
    below = dispatch.default_plan(CUDA, d, dispatch.SM90_WGMMA_MIN_SCORES - 1)
    assert below.backend == "triton" and below.pv_fp8 == (d > 64)
    large = dispatch.default_plan(CUDA, d, dispatch.SM90_WGMMA_MIN_SCORES)
    assert (large.backend, large.pv_fp8, large.pv_accum) == ("wgmma", True, "fp32+fp32")
    assert large == dispatch.default_plan(CUDA, d)  # no size given: a large call
    assert dispatch.SM90_COMPILED_MAX_SCORES < dispatch.SM90_WGMMA_MIN_SCORES


@pytest.mark.parametrize("cc", [(8, 0), (8, 6), (8, 9), (12, 0)])
def test_the_size_changes_the_plan_only_on_hopper(monkeypatch, cc):
    monkeypatch.setattr(dispatch, "_capability", lambda device: cc)
    assert dispatch.default_plan(CUDA, 128, 1) == dispatch.default_plan(CUDA, 128)


def test_sageattn_plans_from_the_call_size(monkeypatch):
    """sageattn hands the plan B·Hq·Nq·Nk of the validated [B, H, N, D] views, in either layout,
    and applies the caller's pv_accum_dtype only where it belongs to the planned precision."""
    from sageattention import core

    seen = []
    monkeypatch.setattr(core._checks, "interpreter_active", lambda: True)  # CPU tensors pass
    monkeypatch.setattr(dispatch, "_capability", lambda device: (9, 0))
    monkeypatch.setattr(core, "default_plan", lambda device, d, scores: (
        seen.append((d, scores)) or dispatch.default_plan(CUDA, d, scores)))
    monkeypatch.setattr(core, "attention", lambda *a: (_ for _ in ()).throw(
        RuntimeError(a[10:13])))  # pv_fp8, pv_accum, backend
    q, k = torch.zeros(2, 3, 40, 64), torch.zeros(2, 1, 24, 64)
    with pytest.raises(RuntimeError, match=r"False, 'fp16\+fp32', 'cuda'"):
        core.sageattn(q, k, k, pv_accum_dtype="fp16+fp32")
    with pytest.raises(RuntimeError, match=r"False, 'fp32', 'cuda'"):
        core.sageattn(q.transpose(1, 2), k.transpose(1, 2), k.transpose(1, 2),
                      tensor_layout="NHD", pv_accum_dtype="fp32+fp16")
    assert seen == [(64, 2 * 3 * 40 * 24)] * 2


def test_older_gpus_are_refused_with_a_reason(monkeypatch):
    monkeypatch.setattr(dispatch, "_capability", lambda device: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ValueError, match="sm_75.*scaled_dot_product_attention"):
        dispatch.default_plan(CUDA, 128)


@pytest.mark.parametrize("pv_fp8,accum,want", [
    (False, "fp32", 0), (False, "fp16+fp32", 1), (False, "fp16", 1),
    (True, "fp32", 2), (True, "fp32+fp32", 3)])
def test_pv_modes(pv_fp8, accum, want):
    assert cuda_forward.pv_mode(pv_fp8, accum) == want


def test_fp16_accumulating_fp8_mode_needs_the_build(monkeypatch):
    from sageattention import ops

    monkeypatch.setattr(ops, "fp8_f16_accum_compiled", lambda: True)
    assert cuda_forward.pv_mode(True, "fp32+fp16") == 4
    monkeypatch.setattr(ops, "fp8_f16_accum_compiled", lambda: False)
    with pytest.warns(UserWarning, match="nvcc < 12.8"):
        assert cuda_forward.pv_mode(True, "fp32+fp16") == 3


def _reason(q, k=None, v=None, **kw):
    k = q if k is None else k
    v = k if v is None else v
    args = {"attn_mask": None, "qk_quant_gran": "per_thread", "pv_fp8": False, "tensor_layout": "HND"}
    args.update(kw)
    return cuda_forward.unsupported_reason(q, k, v, **args)


def test_cuda_path_declines_what_only_triton_implements():
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float16)
    assert "CUDA device" in _reason(q)  # CPU tensors never reach the compiled kernels
    from torch._subclasses.fake_tensor import FakeTensorMode  # CUDA tensors without a GPU

    with FakeTensorMode():
        q = torch.empty(1, 2, 8, 64, dtype=torch.float16, device="cuda")
        assert "float16/bfloat16" in _reason(q.float())
        assert "masks, not torch.float64" in _reason(q, attn_mask=q.double())
        assert "per_block" in _reason(q, qk_quant_gran="per_block")
        assert "head dim 60" in _reason(torch.empty(1, 2, 8, 60, dtype=torch.float16, device="cuda"))
        assert "head dim 256" in _reason(torch.empty(1, 2, 8, 256, dtype=torch.float16,
                                                     device="cuda"))
        empty_k = torch.empty(1, 2, 0, 64, dtype=torch.float16, device="cuda")
        assert "no keys" in _reason(q, empty_k)


def test_which_q_the_attention_kernel_loads_itself():
    # 8-byte chunks of four channels: unit channel stride, strides in multiples of 4 elements,
    # an 8-byte aligned start; anything else goes through the quantization pass first.
    base = torch.empty(2 * 3 * 50 * 64 + 8, dtype=torch.float16)
    q = base[:2 * 3 * 50 * 64].view(2, 3, 50, 64)
    assert cuda_forward.kernel_reads_q(q)
    assert cuda_forward.kernel_reads_q(q.transpose(1, 2).contiguous().transpose(1, 2))  # NHD
    assert cuda_forward.kernel_reads_q(base[4:4 + 2 * 3 * 50 * 64].view(2, 3, 50, 64))
    assert not cuda_forward.kernel_reads_q(base[2:2 + 2 * 3 * 50 * 64].view(2, 3, 50, 64))
    assert not cuda_forward.kernel_reads_q(q.transpose(2, 3).contiguous().transpose(2, 3))
    wide = torch.empty(2, 3, 50, 66, dtype=torch.float16)
    assert not cuda_forward.kernel_reads_q(wide[..., :64])  # row stride 66


@pytest.mark.parametrize("backend,wgmma_ok,masked,want", [
    ("wgmma", True, False, ("cuda", True)),
    ("wgmma", False, False, ("triton", None)),   # no sm_90a unit, or a mode it lacks
    ("wgmma", True, True, ("triton", None)),     # masked: runs_wgmma is asked and declines
    ("cuda_sm90", False, False, ("cuda", True)),  # the explicit entry point keeps mma.sync
    ("cuda", True, False, ("cuda", False)),
])
def test_the_wgmma_backend_falls_back_to_triton_not_to_mma_sync(monkeypatch, backend, wgmma_ok,
                                                                 masked, want):
    """Backend "wgmma" (sageattn on Hopper) runs the wgmma kernel where cuda_forward.runs_wgmma
    allows and Triton otherwise: on Hopper the mma.sync kernels are the slower path."""
    from sageattention import launch
    from sageattention.triton import forward as triton_forward

    ran = []
    monkeypatch.setattr(cuda_forward, "unsupported_reason", lambda *a, **kw: None)
    monkeypatch.setattr(cuda_forward, "runs_wgmma",
                        lambda q, *, pv_fp8, pv_accum, masked: wgmma_ok and not masked)

    def compiled(q, k, v, *, wgmma, return_lse, **kw):
        ran.append(("cuda", wgmma))
        return torch.zeros_like(q), torch.empty(0)

    def triton(q, k, v, out, **kw):
        ran.append(("triton", None))

    monkeypatch.setattr(cuda_forward, "attention_forward", compiled)
    monkeypatch.setattr(triton_forward, "attention_forward", triton)
    q = torch.zeros(1, 2, 8, 64)
    mask = torch.ones(1, 2, 8, 8, dtype=torch.bool) if masked else None
    launch._attention_impl(q, q, q, mask, 0.125, "HND", False, True, False, "per_thread", True,
                           "fp32+fp32", backend, False)
    assert ran == [want]
