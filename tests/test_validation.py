"""Bad input gets a TypeError/ValueError naming the argument, before any kernel runs."""
import pytest
import torch

import sageattention as sa

pytestmark = pytest.mark.interpret  # CPU tensors are accepted only under the interpreter


def qkv(shape=(1, 2, 16, 64), dtype=torch.float16):
    return (torch.randn(shape, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("call,match,exc", [
    (lambda q, k, v: sa.sageattn(q.int(), k, v), "q has dtype torch.int32", TypeError),
    (lambda q, k, v: sa.sageattn(q, k.bfloat16(), v), "one dtype", TypeError),
    (lambda q, k, v: sa.sageattn(q[0], k, v), "q must have 4 dimensions", ValueError),
    (lambda q, k, v: sa.sageattn(q, k, v, tensor_layout="BHND"), "tensor_layout", ValueError),
    (lambda q, k, v: sa.sageattn(q, k[:, :1].expand(1, 1, 16, 64)[:, :, :8], v),
     "same shape", ValueError),
    (lambda q, k, v: sa.sageattn(q, k, v, sm_scale="big"), "sm_scale", TypeError),
    (lambda q, k, v: sa.sageattn(q, k, v, sm_scale=float("nan")), "sm_scale", ValueError),
    (lambda q, k, v: sa.sageattn("q", k, v), "q must be a torch.Tensor", TypeError),
    (lambda q, k, v: sa.sageattn(q, k, v, qk_quant_gran="per_token"), "qk_quant_gran", ValueError),
    (lambda q, k, v: sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, pv_accum_dtype="fp8"),
     "pv_accum_dtype", ValueError),
    (lambda q, k, v: sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, pv_accum_dtype="fp16"),
     "pv_accum_dtype", ValueError),
    (lambda q, k, v: sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, qk_quant_gran="per_block"),
     "qk_quant_gran", ValueError),
    (lambda q, k, v: sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, quantization_backend="numpy"),
     "quantization_backend", ValueError),
    (lambda q, k, v: sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, attn_mask=torch.ones(3, 3)),
     "attn_mask of shape", ValueError),
    (lambda q, k, v: sa.sageattn(q, k, v, attn_mask=torch.ones(16, 16, dtype=torch.int64)),
     "attn_mask must be bool", TypeError),
    (lambda q, k, v: sa.sageattn(q, k, v, attn_mask="causal"), "attn_mask must be a torch", TypeError),
    (lambda q, k, v: sa.sageattn(q, k, v, is_causal="yes"), "is_causal", TypeError),
])
def test_bad_arguments(call, match, exc):
    q, k, v = qkv()
    with pytest.raises(exc, match=match):
        call(q, k, v)


def test_head_dim_limits():
    q, k, v = qkv((1, 1, 8, 300))
    with pytest.raises(ValueError, match="head dim 300"):
        sa.sageattn(q, k, v)
    q, k, v = qkv((1, 1, 8, 64))
    with pytest.raises(ValueError, match="same head dim"):
        sa.sageattn(q, k[..., :32], v[..., :32])


def test_gqa_divisibility_and_batch():
    q = torch.randn(1, 3, 8, 64, dtype=torch.float16)
    kv = torch.randn(1, 2, 8, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="multiple of the number of key/value heads"):
        sa.sageattn(q, kv, kv)
    kv2 = torch.randn(2, 3, 8, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="batch size"):
        sa.sageattn(q, kv2, kv2)


def test_empty_keys():
    q = torch.randn(1, 1, 8, 64, dtype=torch.float16)
    kv = torch.randn(1, 1, 0, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="no tokens"):
        sa.sageattn(q, kv, kv)


def test_cpu_tensors_outside_the_interpreter_are_rejected(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = qkv()
    with pytest.raises(ValueError, match="must be CUDA tensors"):
        sa.sageattn(q, k, v)


def _varlen_inputs():
    q = torch.randn(10, 2, 64, dtype=torch.float16)
    return q, q.clone(), q.clone()


@pytest.mark.parametrize("cu,match,exc", [
    (torch.tensor([0, 4, 10], dtype=torch.float32), "int32 or int64", TypeError),
    (torch.tensor([1, 4, 10], dtype=torch.int32), "must start at 0", ValueError),
    (torch.tensor([0, 6, 4, 10], dtype=torch.int32), "non-decreasing", ValueError),
    (torch.tensor([0, 4, 12], dtype=torch.int32), "ends at 12", ValueError),
    (torch.tensor([[0, 4, 10]], dtype=torch.int32), "1-D", ValueError),
])
def test_varlen_cu_seqlens(cu, match, exc):
    q, k, v = _varlen_inputs()
    good = torch.tensor([0, 4, 10], dtype=torch.int32)
    with pytest.raises(exc, match=match):
        sa.sageattn_varlen(q, k, v, cu, good, 6, 6)


def test_varlen_max_seqlen_and_counts():
    q, k, v = _varlen_inputs()
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    with pytest.raises(ValueError, match="max_seqlen_q"):
        sa.sageattn_varlen(q, k, v, cu, cu, 5, 6)
    with pytest.raises(ValueError, match="same number of sequences"):
        sa.sageattn_varlen(q, k, v, cu, torch.tensor([0, 10], dtype=torch.int32), 6, 10)
    with pytest.raises(ValueError, match="no keys"):
        sa.sageattn_varlen(q, k, v, cu, torch.tensor([0, 0, 10], dtype=torch.int32), 6, 10)


def test_flags_follow_truthiness_like_the_original():
    import numpy as np

    q, k, v = qkv()
    base = sa.sageattn(q, k, v)
    assert torch.equal(sa.sageattn(q, k, v, is_causal=None), base)
    assert torch.equal(sa.sageattn(q, k, v, is_causal=np.bool_(False)), base)
    with pytest.raises(TypeError, match="is_causal"):
        sa.sageattn(q, k, v, is_causal=torch.ones(3, dtype=torch.bool))


def test_batch_beyond_the_grid_limit_is_a_clear_error():
    q = torch.randn(65536, 1, 1, 16, dtype=torch.float16)
    with pytest.raises(ValueError, match="split the batch"):
        sa.sageattn(q, q, q)


def test_varlen_rejects_a_mask():
    q, k, v = _varlen_inputs()
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    with pytest.raises(ValueError, match="no attn_mask"):
        sa.sageattn_varlen(q, k, v, cu, cu, 6, 6, attn_mask=torch.ones(10, 10, dtype=torch.bool))


def test_strided_last_dim_is_accepted():
    base = torch.randn(1, 2, 16, 128, dtype=torch.float16)
    q = base[..., ::2]  # last-dim stride 2
    out = sa.sageattn(q, q, q)
    assert out.shape == q.shape and torch.isfinite(out).all()
