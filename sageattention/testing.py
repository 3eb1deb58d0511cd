"""Input generators shared by the tests and the accuracy script (benchmarks/accuracy.py).

``kind`` selects the distribution:
- "randn": standard normal q, k, v;
- "outliers": the adversarial case SageAttention targets: K with a large per-channel bias
  (8 * randn per channel, what smoothing removes), 4 query channels scaled x12, and a V bias;
- "big_tokens": a few tokens of q and k scaled x10 (large-magnitude tokens, sharp softmax).
"""
from __future__ import annotations

import torch

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
