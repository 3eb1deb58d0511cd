"""The CPU models themselves: exact attention against torch SDPA, quantization round trips."""
import math

import pytest
import torch
import torch.nn.functional as F

from sageattention import granularity, reference
from sageattention.testing import make_qkv


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("nq,nk", [(37, 37), (20, 45), (45, 20)])
def test_attention_fp64_matches_sdpa(seed, causal, nq, nk):
    q, k, v = make_qkv(2, 4, 2, nq, nk, 32, dtype=torch.float64)
    o, lse = reference.attention_fp64(q, k, v, is_causal=causal, return_lse=True)
    kr, vr = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    want = F.scaled_dot_product_attention(q, kr, vr, is_causal=causal)
    s = (q @ kr.transpose(-1, -2)) / math.sqrt(32)
    if causal:
        s = s.masked_fill(~torch.ones(nq, nk, dtype=torch.bool).tril(), float("-inf"))
    assert torch.allclose(o, want, atol=1e-10)
    assert torch.allclose(lse, torch.logsumexp(s, -1), atol=1e-10)


def test_attention_fp64_masks_and_nhd(seed):
    q, k, v = make_qkv(1, 2, 2, 16, 24, 16, dtype=torch.float64)
    mask = torch.rand(16, 24) > 0.3
    mask[:, 0] = True
    bias = torch.randn(1, 2, 16, 24, dtype=torch.float64)
    assert torch.allclose(reference.attention_fp64(q, k, v, attn_mask=mask),
                          F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-10)
    assert torch.allclose(reference.attention_fp64(q, k, v, attn_mask=bias),
                          F.scaled_dot_product_attention(q, k, v, attn_mask=bias), atol=1e-10)
    nhd = reference.attention_fp64(*(t.transpose(1, 2) for t in (q, k, v)), tensor_layout="NHD")
    assert torch.allclose(nhd.transpose(1, 2), reference.attention_fp64(q, k, v), atol=1e-12)


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = make_qkv(1, 1, 1, 4, 8, 16, dtype=torch.float64)
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[2] = False
    o, lse = reference.attention_fp64(q, k, v, attn_mask=mask, return_lse=True)
    assert torch.all(o[0, 0, 2] == 0) and lse[0, 0, 2] == float("-inf")
    assert torch.isfinite(o).all()


@pytest.mark.parametrize("mode,tile,size", [
    (granularity.MODE_TILE, 128, 128), (granularity.MODE_TILE, 64, 64),
    (granularity.MODE_WARP, 0, 32), (granularity.MODE_THREAD_Q, 0, 4),
    (granularity.MODE_THREAD_K, 0, 16)])
def test_group_sizes(mode, tile, size):
    ids = granularity.group_ids(256, mode, tile)
    counts = torch.bincount(ids)
    assert counts.numel() == granularity.n_groups(256, mode, tile)
    assert torch.all(counts == size)


def test_per_thread_groups_match_mma_fragments():
    # Q: inside a 32-row warp tile, rows lane//4 + {0, 8, 16, 24} belong to one thread.
    ids = granularity.group_ids(64, granularity.MODE_THREAD_Q, 0)
    assert ids[3] == ids[11] == ids[19] == ids[27] and ids[3] != ids[4] and ids[35] == ids[43]
    # K: inside a 64-row tile, columns (lane % 4) * 2 and +1 of every n8 tile.
    ids = granularity.group_ids(64, granularity.MODE_THREAD_K, 0)
    assert ids[2] == ids[3] == ids[10] == ids[58] and ids[2] != ids[4]


@pytest.mark.parametrize("gran", ["per_block", "per_warp", "per_thread"])
def test_quantize_groups_round_trip(seed, gran):
    x = torch.randn(2, 3, 100, 40) * torch.rand(2, 3, 100, 1) * 10
    for mode in (granularity.q_mode(gran), granularity.k_mode(gran)):
        y, s = reference.quantize_groups(x, mode, 64)
        assert y.abs().max() <= 127
        err = (y * s[..., None] - x).abs()
        assert torch.all(err <= s[..., None] * 0.5 * (1 + 1e-5) + 1e-6)


def test_quantize_groups_uses_all_of_int8_and_survives_zeros():
    x = torch.zeros(1, 1, 64, 8)
    x[0, 0, 5, 3] = -2.5
    y, s = reference.quantize_groups(x, granularity.MODE_TILE, 64)
    assert y[0, 0, 5, 3] == -127 and torch.isfinite(s).all() and (s > 0).all()
    y0, s0 = reference.quantize_groups(torch.zeros(1, 1, 64, 8), granularity.MODE_TILE, 64)
    assert torch.all(y0 == 0) and torch.isfinite(s0).all()


@pytest.mark.parametrize("kind", ["randn", "outliers"])
def test_sage_reference_is_close_to_exact(seed, kind):
    q, k, v = make_qkv(1, 2, 2, 96, 96, 64, kind=kind)
    exact = reference.attention_fp64(q, k, v)
    acc = reference.accuracy(reference.sage_reference(q, k, v), exact)
    assert acc["cosine"] > 0.999 and acc["rel_l1"] < 0.03
    acc8 = reference.accuracy(reference.sage_reference(q, k, v, pv="fp8"), exact)
    assert acc8["cosine"] > 0.998 and acc8["rel_l1"] < 0.06


def test_smoothing_is_what_makes_outliers_accurate(seed):
    q, k, v = make_qkv(1, 2, 2, 128, 128, 64, kind="outliers")
    exact = reference.attention_fp64(q, k, v)
    smooth = reference.accuracy(reference.sage_reference(q, k, v, smooth_k=True), exact)
    rough = reference.accuracy(reference.sage_reference(q, k, v, smooth_k=False), exact)
    assert smooth["rel_l1"] < rough["rel_l1"]


def test_kernel_mode_codes_match_the_python_layout():
    # The Triton helpers (sageattention/triton/_common.py) branch on these codes as literals.
    assert (granularity.MODE_TILE, granularity.MODE_WARP, granularity.MODE_THREAD_Q,
            granularity.MODE_THREAD_K) == (0, 1, 2, 3)
