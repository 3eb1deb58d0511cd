"""ComfyUI's use of sageattn (comfy/ldm/modules/attention.py, shared/FACTS.md): its import-time
probe decides whether masked calls reach us, and its call pattern must give SDPA's result.

sageattention.testing.ComfyLikeAttention follows the client's steps (written from the
documented behaviour, not copied; benchmarks/bench_clients.py times the same model): [B, N, H*D]
inputs viewed as NHD (or HND tensors with skip_reshape), a 2-D/3-D mask expanded to
[B, 1, Nq, Nk], sm_scale from its `scale` keyword, smooth_k=False, and PyTorch attention whenever
the probe says no or sageattn raises. The tests fail if that fallback ran: through the fallback,
a broken kernel would look accurate.
"""
import pytest
import torch
import torch.nn.functional as F

import sageattention as sa
from sageattention import reference
from sageattention.testing import ComfyLikeAttention, probe_supports_mask

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
pytestmark = pytest.mark.gpu if HAS_CUDA else pytest.mark.interpret


def test_the_probe_sees_our_mask_support():
    assert probe_supports_mask(sa.sageattn)

    def kwargs_only(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None,
                    return_lse=False, **kwargs):
        return q

    assert not probe_supports_mask(kwargs_only)  # what the probe made of the old signature


def _sdpa_reference(q, k, v, heads, mask, scale):
    b, _, inner = q.shape
    d = inner // heads
    qh, kh, vh = (t.view(b, -1, heads, d).transpose(1, 2).double() for t in (q, k, v))
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.double()
    if mask is not None and mask.ndim == 2:
        mask = mask[None, None]
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).reshape(b, -1, inner)


def _masks(b, nq, nk, kind):
    """Key padding (what a batched prompt gives) as bool or additive, [B, 1, Nq, Nk]."""
    lengths = torch.randint(nk // 2, nk + 1, (b,))
    keep = (torch.arange(nk)[None, :] < lengths[:, None])[:, None, None, :].expand(b, 1, nq, nk)
    keep = keep.to(DEVICE)
    if kind == "bool":
        return keep.contiguous()
    bias = torch.where(keep, 0.0, float("-inf")) + 0.5 * torch.randn(b, 1, nq, nk, device=DEVICE)
    return bias.to(torch.float16)


@pytest.mark.parametrize("kind", ["bool", "additive", "2d", None])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_comfyui_call_pattern_matches_sdpa(seed, kind, dtype):
    if dtype == torch.bfloat16 and not HAS_CUDA:
        pytest.skip("the Triton interpreter computes bfloat16 dots wrongly (fp16 covers the CPU); "
                    "bfloat16 runs on the GPU")
    b, heads, d = 2, 4, 64
    nq, nk = (300, 250) if HAS_CUDA else (90, 70)
    q = torch.randn(b, nq, heads * d, dtype=dtype, device=DEVICE)
    k, v = (torch.randn(b, nk, heads * d, dtype=dtype, device=DEVICE) for _ in range(2))
    if kind == "2d":
        mask = torch.randn(nq, nk, device=DEVICE).to(dtype)
    else:
        mask = _masks(b, nq, nk, kind) if kind else None
    scale = 0.9 / d ** 0.5
    attention = ComfyLikeAttention(sa.sageattn)
    out = attention(q, k, v, heads, mask=mask, scale=scale)
    assert attention.fallbacks == [], attention.fallbacks
    assert out.shape == q.shape and out.dtype == dtype
    acc = reference.accuracy(out, _sdpa_reference(q, k, v, heads, mask, scale))
    assert acc["finite"] and acc["cosine"] > 0.998 and acc["rel_l1"] < 0.05, acc


def test_comfyui_skip_reshape_pattern_with_a_mask(seed):
    b, heads, n, d = 1, 3, 80, 64
    q, k, v = (torch.randn(b, heads, n, d, dtype=torch.float16, device=DEVICE) for _ in range(3))
    mask = _masks(b, n, n, "bool")
    attention = ComfyLikeAttention(sa.sageattn)
    out = attention(q, k, v, heads, mask=mask, skip_reshape=True)
    assert attention.fallbacks == []
    flat = [t.transpose(1, 2).reshape(b, n, heads * d) for t in (q, k, v)]
    acc = reference.accuracy(out, _sdpa_reference(*flat, heads, mask, None))
    assert acc["cosine"] > 0.998 and acc["rel_l1"] < 0.05, acc
