"""The Triton kernels under TRITON_INTERPRET=1 on CPU tensors, against sageattention.reference.

Small shapes only (the interpreter is slow). Each case checks two things: the kernel matches
the quantized model closely (same algorithm), and it is close to exact fp64 attention.
"""
import pytest
import torch
from kernel_model import kernel_model as _model
from kernel_model import kernel_model_varlen

import sageattention as sa
from sageattention import granularity, reference
from sageattention.testing import make_qkv

pytestmark = pytest.mark.interpret


def _lse_close(lse, model_lse, q, k):
    """LSE equals the model's up to INT8 values that round the other way: with fp16 inputs,
    x * 127 / amax often lands within fp32 error of .5 and the interpreter breaks such ties
    in higher precision (about 1e-4 of the values). One flipped value moves a score, and at
    most the LSE, by one quantization step times the other operand: |q|max * |k|max / 127
    (per flipped Q or K value; k taken smoothed). Most rows agree to 1e-4."""
    d = (lse.double() - model_lse).abs()
    kf = k.float() - k.float().mean(dim=-2, keepdim=True)
    step = q.float().abs().max() * kf.abs().max() / 127 / q.shape[-1] ** 0.5
    assert d.median() < 1e-4 and d.max() < 2 * step, (d.median(), d.max(), step)


def _close_to_model(out, model, exact, model_tol=2e-3, exact_tol=0.03, min_cos=0.999):
    a = reference.accuracy(out, model)
    b = reference.accuracy(out, exact)
    assert a["finite"], "non-finite output"
    assert a["rel_l1"] < model_tol, f"kernel vs quantized model: {a}"
    assert b["rel_l1"] < exact_tol and b["cosine"] > min_cos, f"kernel vs fp64: {b}"


def test_quantize_int8_matches_reference(seed):
    from sageattention.triton.quant import quantize_int8

    x = torch.randn(2, 3, 150, 40, dtype=torch.float16).transpose(1, 2).contiguous().transpose(1, 2)
    mean = x.float().mean(dim=2)
    for mode in (granularity.MODE_TILE, granularity.MODE_THREAD_K):
        y, s = quantize_int8(x, mode, 64, 64, 192, mean=mean)
        ry, rs = reference.quantize_groups(x, mode, 64, 1.0, mean)
        assert torch.all(y[:, :, 150:] == 0) and torch.all(y[..., 40:] == 0)
        diff = (y[:, :, :150, :40].int() - ry).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
        gid = granularity.group_ids(150, mode, 64)
        assert torch.allclose(s[:, :, gid], rs, rtol=1e-6)


def test_quantize_v_fp8_round_trip(seed):
    from sageattention.triton.quant import kv_stats, quantize_v_fp8

    v = torch.randn(1, 2, 70, 48, dtype=torch.float16) * torch.linspace(0.1, 30, 48)
    k = torch.randn_like(v)
    km, vm, scale = kv_stats(k, v, 64, smooth_v=True)
    assert torch.allclose(km, k.float().mean(dim=2), atol=1e-5)
    assert torch.allclose(vm, v.float().mean(dim=2), atol=1e-4)
    want = (v.float() - vm[:, :, None]).abs().amax(dim=2) / 448
    assert torch.allclose(scale[..., :48], want, rtol=1e-6) and torch.all(scale[..., 48:] == 1)
    _, _, scale = kv_stats(k, v, 64)
    y = quantize_v_fp8(v, 64, 128, scale)
    assert y.shape == (1, 2, 64, 128) and torch.all(y.float()[:, :, :, 70:] == 0)
    back = y.float()[:, :, :48, :70].transpose(-1, -2) * scale[:, :, None, :48]
    err = (back - v.float()).abs() / v.float().abs().amax(dim=2, keepdim=True)
    # e4m3 keeps 3 mantissa bits (<= 3.6% of the channel max). The interpreter's float -> e4m3
    # conversion mis-rounds values that carry into the next exponent (127.8 -> 64), so only
    # most elements are held to the bound here; tests/test_gpu.py checks every element.
    assert (err < 0.037).float().mean() > 0.97


@pytest.mark.parametrize("d", [32, 64, 96])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_fp16_triton_entry_point(seed, d, causal, layout):
    q, k, v = make_qkv(1, 2, 2, 100, 100, d, layout=layout)
    out = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, tensor_layout=layout, is_causal=causal)
    assert out.shape == q.shape and out.dtype == q.dtype
    model = _model(q, k, v, tensor_layout=layout, is_causal=causal)
    exact = reference.attention_fp64(q, k, v, tensor_layout=layout, is_causal=causal)
    _close_to_model(out, model, exact)


@pytest.mark.parametrize("gran", ["per_block", "per_warp", "per_thread"])
@pytest.mark.parametrize("kind", ["randn", "outliers", "big_tokens"])
def test_granularities(seed, gran, kind):
    q, k, v = make_qkv(1, 2, 1, 130, 70, 64, kind=kind)
    if gran == "per_block":  # reachable through sageattn's keyword
        out, lse = sa.sageattn(q, k, v, qk_quant_gran=gran, return_lse=True)
    else:
        out, lse = sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, qk_quant_gran=gran, return_lse=True)
    model, mlse = _model(q, k, v, q_gran=gran, k_gran=gran, return_lse=True)
    exact, else_ = reference.attention_fp64(q, k, v, return_lse=True)
    # Tokens 10x larger than the rest share their INT8 group with ordinary tokens, which
    # then keep fewer significant bits: the known limit of per-group INT8.
    big = kind == "big_tokens"
    _close_to_model(out, model, exact, exact_tol=0.1 if big else 0.03, min_cos=0.99 if big else 0.999)
    _lse_close(lse, mlse, q, k)
    if kind == "randn":  # adversarial scores span tens of units: INT8 moves their LSE by ~1
        assert (lse.double() - else_).abs().max() < 0.05


@pytest.mark.parametrize("causal", [False, True])
def test_gqa_and_unequal_lengths_with_lse(seed, causal):
    for nq, nk in ((50, 130), (130, 50)):
        q, k, v = make_qkv(2, 4, 2, nq, nk, 64)
        out, lse = sa.sageattn(q, k, v, is_causal=causal, return_lse=True)
        model, mlse = _model(q, k, v, is_causal=causal, q_gran="per_thread",
                                               k_gran="per_thread", return_lse=True)
        exact, else_ = reference.attention_fp64(q, k, v, is_causal=causal, return_lse=True)
        _close_to_model(out, model, exact)
        assert lse.shape == (2, 4, nq) and lse.dtype == torch.float32
        _lse_close(lse, mlse, q, k)
        assert (lse.double() - else_).abs().max() < 0.05


def test_lse_nhd_uses_the_head_axis(seed):
    q, k, v = make_qkv(1, 3, 3, 40, 40, 64, layout="NHD")
    _, lse = sa.sageattn(q, k, v, tensor_layout="NHD", return_lse=True)
    _, else_ = reference.attention_fp64(q, k, v, tensor_layout="NHD", return_lse=True)
    assert lse.shape == (1, 3, 40) and (lse.double() - else_).abs().max() < 0.05


def test_fp32_inputs(seed):
    # bf16 is covered by tests/test_gpu.py: Triton 3.8's interpreter computes a bf16 tl.dot
    # wrongly (garbage of order 1e10), so a CPU run cannot check it.
    q, k, v = make_qkv(1, 2, 2, 64, 64, 64, dtype=torch.float32)
    out = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v)
    assert out.dtype == torch.float32
    acc = reference.accuracy(out, reference.attention_fp64(q, k, v))
    assert acc["cosine"] > 0.999 and acc["rel_l1"] < 0.03, acc


def test_head_dim_256(seed):
    q, k, v = make_qkv(1, 1, 1, 70, 70, 200)
    out = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, is_causal=True)
    model = _model(q, k, v, is_causal=True)
    _close_to_model(out, model, reference.attention_fp64(q, k, v, is_causal=True))


def test_non_contiguous_views(seed):
    base = torch.randn(1, 80, 2, 3, 64, dtype=torch.float16)
    q, k, v = base[:, :, 0, :2], base[:, :, 1, :2], base[:, :, 1, 1:]  # NHD views with odd strides
    out = sa.sageattn(q, k, v, tensor_layout="NHD")
    exact = reference.attention_fp64(q, k, v, tensor_layout="NHD")
    model = _model(q, k, v, tensor_layout="NHD", q_gran="per_thread",
                                     k_gran="per_thread")
    _close_to_model(out, model, exact)


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "bool_2d"])
def test_attn_mask(seed, mask_kind):
    q, k, v = make_qkv(2, 2, 2, 70, 90, 64)
    if mask_kind == "additive":
        mask = (torch.randn(2, 1, 70, 90) * 2).to(torch.float16)
    else:
        shape = (70, 90) if mask_kind == "bool_2d" else (2, 2, 70, 90)
        mask = torch.rand(shape) > 0.4
        mask[..., 3] = True
    out = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, attn_mask=mask)
    model = _model(q, k, v, attn_mask=mask)
    _close_to_model(out, model, reference.attention_fp64(q, k, v, attn_mask=mask))
    # sageattn honours the mask too (the original ignores it)
    out2 = sa.sageattn(q, k, v, attn_mask=mask)
    _close_to_model(out2, _model(q, k, v, attn_mask=mask, q_gran="per_thread",
                                                   k_gran="per_thread"),
                    reference.attention_fp64(q, k, v, attn_mask=mask))


def test_fully_masked_row_gives_zeros_not_nan(seed):
    q, k, v = make_qkv(1, 1, 1, 40, 40, 64)
    mask = torch.ones(40, 40, dtype=torch.bool)
    mask[7] = False
    out, lse = sa.sageattn(q, k, v, attn_mask=mask, return_lse=True)
    assert torch.isfinite(out).all() and torch.all(out[0, 0, 7] == 0)
    assert lse[0, 0, 7] == float("-inf") and torch.isfinite(lse[0, 0, :7]).all()


def test_fp8_pv_kernel(seed):
    from sageattention.triton.forward import attention_forward

    for causal, smooth_v in ((False, False), (True, True)):
        q, k, v = make_qkv(1, 2, 1, 90, 90, 64, kind="outliers")
        out = torch.empty_like(q)
        attention_forward(q, k, v, out, sm_scale=0.125, is_causal=causal, pv_fp8=True,
                          smooth_v=smooth_v, q_gran="per_thread", k_gran="per_thread")
        model = _model(q, k, v, is_causal=causal, pv="fp8", smooth_v=smooth_v,
                                         sm_scale=0.125, q_gran="per_thread", k_gran="per_thread")
        exact = reference.attention_fp64(q, k, v, is_causal=causal, sm_scale=0.125)
        # The interpreter's float -> e4m3 rounding differs from torch's on a few values.
        _close_to_model(out, model, exact, model_tol=2e-2, exact_tol=0.06)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen(seed, causal):
    lens_q, lens_k = [5, 70, 0, 33], [9, 70, 4, 20]
    cq = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32)
    ck = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32)
    q = torch.randn(int(cq[-1]), 4, 64, dtype=torch.float16)
    k = torch.randn(int(ck[-1]), 2, 64, dtype=torch.float16)
    v = torch.randn(int(ck[-1]), 2, 64, dtype=torch.float16)
    out, lse = sa.sageattn_varlen(q, k, v, cq, ck, max(lens_q), max(lens_k), is_causal=causal,
                                  return_lse=True)
    model = kernel_model_varlen(q, k, v, cq, ck, is_causal=causal)
    exact, exact_lse = reference.attention_fp64_varlen(q, k, v, cq, ck, is_causal=causal,
                                                       return_lse=True)
    _close_to_model(out, model, exact)
    assert lse.shape == (4, int(cq[-1])) and (lse.double() - exact_lse).abs().max() < 0.05


def test_negative_and_zero_sm_scale(seed):
    q, k, v = make_qkv(1, 2, 2, 50, 50, 64)
    for scale in (-0.2, 0.0):
        out, lse = sa.sageattn(q, k, v, sm_scale=scale, return_lse=True)
        exact, exact_lse = reference.attention_fp64(q, k, v, sm_scale=scale, return_lse=True)
        assert reference.accuracy(out, exact)["rel_l1"] < 0.03
        assert (lse.double() - exact_lse).abs().max() < 0.05


def test_sm_scale_and_sdpa_scale_keyword(seed):
    q, k, v = make_qkv(1, 1, 1, 32, 32, 64)
    exact = reference.attention_fp64(q, k, v, sm_scale=0.3)
    for out in (sa.sageattn(q, k, v, sm_scale=0.3), sa.sageattn(q, k, v, scale=0.3)):
        assert reference.accuracy(out, exact)["rel_l1"] < 0.03


def test_smooth_k_false_is_honoured_by_sageattn(seed):
    q, k, v = make_qkv(1, 2, 2, 64, 64, 64, kind="outliers")
    out = sa.sageattn(q, k, v, smooth_k=False)
    kw = {"q_gran": "per_thread", "k_gran": "per_thread"}
    to_rough = reference.accuracy(out, _model(q, k, v, smooth_k=False, **kw))["rel_l1"]
    to_smooth = reference.accuracy(out, _model(q, k, v, smooth_k=True, **kw))["rel_l1"]
    assert to_rough < 1e-2 and to_rough < to_smooth / 3, (to_rough, to_smooth)


def test_torch_compile_fullgraph_traces_sageattn(seed):
    # Dynamo must trace the whole call (checks, dispatch, quantization, attention) into one
    # graph: the kernels sit behind the custom op torch.ops.sageattention.attention.
    q, k, v = make_qkv(1, 2, 2, 40, 40, 64, layout="NHD")

    def f(q, k, v):
        return sa.sageattn(q, k, v, tensor_layout="NHD", is_causal=True, return_lse=True)

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    out, lse = torch.compile(f, fullgraph=True, backend=backend)(q, k, v)
    want, want_lse = f(q, k, v)
    assert torch.equal(out, want) and torch.equal(lse, want_lse)
    assert len(graphs) == 1 and "sageattention.attention" in graphs[0].code


def test_fake_implementation_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(2, 50, 4, 96, dtype=torch.bfloat16)  # NHD
        k = torch.empty(2, 70, 2, 96, dtype=torch.bfloat16)
        out, lse = torch.ops.sageattention.attention(
            q, k, k, None, 0.1, "NHD", False, True, False, "per_thread", False, "fp32+fp32", "triton",
            True)
    assert out.shape == q.shape and out.dtype == torch.bfloat16
    assert lse.shape == (2, 4, 50) and lse.dtype == torch.float32


def test_fp8_smooth_v_keeps_fully_masked_rows_zero(seed):
    from sageattention import launch

    q, k, v = make_qkv(1, 2, 2, 40, 40, 64, kind="outliers")
    mask = torch.ones(1, 2, 40, 40, dtype=torch.bool)
    mask[..., 5, :] = False
    out, _ = launch.attention(q, k, v, mask, 0.125, "HND", False, True, True, "per_thread", True,
                              "fp32+fp32", "triton", False)
    assert torch.all(out[:, :, 5] == 0) and torch.isfinite(out).all()
    assert out[:, :, 6].abs().sum() > 0


def test_varlen_reads_the_checked_cu_seqlens_not_a_strided_view(seed):
    q = torch.randn(40, 2, 64, dtype=torch.float16)
    strided = torch.tensor([0, 20, 40, 7], dtype=torch.int32)[::2]  # values [0, 40]
    dense = torch.tensor([0, 40], dtype=torch.int32)
    a = sa.sageattn_varlen(q, q, q, strided, strided, 40, 40)
    b = sa.sageattn_varlen(q, q, q, dense, dense, 40, 40)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_varlen_max_seqlen_accepts_integer_like_values():
    import numpy as np

    q = torch.randn(10, 2, 64, dtype=torch.float16)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    for m in (np.int64(6), torch.tensor(6), 6):
        assert sa.sageattn_varlen(q, q, q, cu, cu, m, m).shape == q.shape


def test_compile_with_parameters_that_require_grad(seed):
    # Inference kernels inside a model compiled with trainable parameters around them.
    q, k, v = make_qkv(1, 2, 2, 32, 32, 64, dtype=torch.float32)
    w = torch.nn.Parameter(torch.ones(64))

    def f(q, k, v):
        return sa.sageattn(q * w, k, v, unknown_flag=1)  # the warning must not break the graph

    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v)
    with torch.no_grad():
        want = sa.sageattn(q, k, v)
    assert torch.allclose(out.detach(), want)
