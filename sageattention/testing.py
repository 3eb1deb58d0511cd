"""Input generators and client call models shared by the tests and the benchmark scripts.

``kind`` selects the distribution:
- "randn": standard normal q, k, v;
- "outliers": the adversarial case SageAttention targets: K with a large per-channel bias
  (8 * randn per channel, what smoothing removes), 4 query channels scaled x12, and a V bias;
- "big_tokens": a few tokens of q and k scaled x10 (large-magnitude tokens, sharp softmax).
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

KINDS = ("randn", "outliers", "big_tokens")


def make_qkv(B, Hq, Hkv, Nq, Nk, D, *, kind="randn", dtype=torch.float16, device="cpu",
             layout="HND", generator=None):
    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float32)

    q, k, v = randn(B, Hq, Nq, D), randn(B, Hkv, Nk, D), randn(B, Hkv, Nk, D)
    if kind == "outliers":
        k = k + 8.0 * randn(B, Hkv, 1, D)
        chans = torch.randperm(D, generator=generator)[:4]
        q[..., chans] *= 12.0
        v = v + 2.0 * randn(B, Hkv, 1, D)
    elif kind == "big_tokens":
        for t in (q, k):
            n = t.shape[2]
            idx = torch.randperm(n, generator=generator)[: max(1, n // 64)]
            t[:, :, idx] *= 10.0
    elif kind != "randn":
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = []
    for t in (q, k, v):
        t = t.to(dtype=dtype, device=device)
        if layout == "NHD":
            t = t.transpose(1, 2).contiguous()
        out.append(t)
    return tuple(out)


def probe_supports_mask(fn) -> bool:
    """What ComfyUI computes once at import: masked calls reach ``fn`` only if this is True."""
    return "attn_mask" in inspect.signature(fn).parameters


class ComfyLikeAttention:
    """ComfyUI's use of sageattn (comfy/ldm/modules/attention.py, shared/FACTS.md), written
    from its documented behaviour: [B, N, H*D] inputs viewed as NHD (or HND tensors with
    skip_reshape), a 2-D/3-D mask expanded to [B, 1, Nq, Nk], sm_scale from its ``scale``
    keyword, smooth_k=False, and PyTorch attention whenever the probe says no or the call
    raises. ``fallbacks`` records each time that PyTorch ran instead: through the fallback a
    broken kernel would look accurate (tests) or PyTorch's speed would be timed (benchmarks)."""

    def __init__(self, fn):
        self.fn = fn
        self.supports_mask = probe_supports_mask(fn)
        self.fallbacks = []

    def __call__(self, q, k, v, heads, mask=None, skip_reshape=False, scale=None):
        if skip_reshape:
            b, _, _, dim_head = q.shape
            layout = "HND"
        else:
            b, _, inner = q.shape
            dim_head = inner // heads
            q, k, v = (t.view(b, -1, heads, dim_head) for t in (q, k, v))
            layout = "NHD"
        if mask is not None:
            if mask.ndim == 2:
                mask = mask.unsqueeze(0)
            if mask.ndim == 3:
                mask = mask.unsqueeze(1)
        if mask is not None and not self.supports_mask:
            self.fallbacks.append("mask not supported")
            return self.pytorch(q, k, v, layout, mask, scale, b, heads, dim_head)
        kwargs = {"attn_mask": mask} if mask is not None else {}
        try:
            out = self.fn(q, k, v, is_causal=False, tensor_layout=layout, sm_scale=scale,
                          smooth_k=False, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the client logs any error and runs PyTorch
            self.fallbacks.append(repr(exc))
            return self.pytorch(q, k, v, layout, mask, scale, b, heads, dim_head)
        if layout == "HND":
            return out.transpose(1, 2).reshape(b, -1, heads * dim_head)
        return out.reshape(b, -1, heads * dim_head)

    @staticmethod
    def pytorch(q, k, v, layout, mask, scale, b, heads, dim_head):
        """The client's PyTorch attention (its fallback, and its default without sage)."""
        if layout == "NHD":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return out.transpose(1, 2).reshape(b, -1, heads * dim_head)
