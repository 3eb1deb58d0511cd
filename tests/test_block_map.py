"""Masked calls: the key-tile lists of sageattention.triton.block_map and the attention that
uses them.

The lists are checked against a direct element-by-element classification; the attention
against fp64 attention and the quantized model, with the masks clients send (key padding per
batch, bool and additive, with causality, GQA, NHD) and with the values a skipped tile must not
hide (a non-finite key or Q row behind a fully masked tile). Runs under TRITON_INTERPRET=1 on
the CPU and on a GPU (the same cases).
"""
import pytest
import torch
from kernel_model import kernel_model

import sageattention as sa
from sageattention import reference
from sageattention.testing import make_qkv
from sageattention.triton.block_map import block_lists

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
pytestmark = [pytest.mark.gpu if HAS_CUDA else pytest.mark.interpret,
              pytest.mark.filterwarnings("ignore:invalid value encountered")]


def _expected_lists(mask, kbad, bm_, bn, causal):
    """{(b, h, query tile): (full tiles, partial tiles)}, element by element."""
    B, H, Nq, Nk = mask.shape
    bm = 1 if mask.stride(0) == 0 else B
    hm = 1 if mask.stride(1) == 0 else H
    m = mask[:bm, :hm].cpu()
    if m.dtype == torch.bool:
        visible, plain = m, m
    else:
        mf = m.float()
        visible, plain = mf != float("-inf"), mf == 0
    rows = torch.arange(Nq)[:, None]
    cols = torch.arange(Nk)[None, :]
    if causal:
        visible, plain = visible & (cols <= rows), plain & (cols <= rows)
    out = {}
    for b in range(bm):
        for h in range(hm):
            for qb in range(-(-Nq // bm_)):
                r0, r1 = qb * bm_, min(Nq, qb * bm_ + bm_)
                end = min(Nk, qb * bm_ + bm_) if causal else Nk
                full, part = [], []
                for kb in range(-(-end // bn)):
                    c0, c1 = kb * bn, min(Nk, kb * bn + bn)
                    vis = visible[b, h, r0:r1, c0:c1]
                    is_full = c0 + bn <= Nk and bool(plain[b, h, r0:r1, c0:c1].all())
                    if is_full:
                        full.append(kb)
                    elif vis.any() or bool(kbad[b if bm > 1 else 0, kb]):
                        part.append(kb)
                out[b, h, qb] = (full, part)
    return out


def _got_lists(bl, mask, bm_):
    B, H, Nq, _ = mask.shape
    bm = 1 if mask.stride(0) == 0 else B
    hm = 1 if mask.stride(1) == 0 else H
    lists = bl.lists.cpu()
    out = {}
    for b in range(bm):
        for h in range(hm):
            for qb in range(-(-Nq // bm_)):
                q = qb if bl.stride_m else 0  # one set for all query tiles
                f, p = lists[b, h, q, 0], lists[b, h, q, 1]
                out[b, h, qb] = (f[1:1 + f[0]].tolist(), p[1:1 + p[0]].tolist())
    return out


def _kbad_from(k_scales, B, bn, fold_batch):
    """Per (batch, key tile): does any head hold a non-finite key there (NaN scale)?"""
    n_pad = k_scales.shape[-1]
    bad = torch.isnan(k_scales.cpu().reshape(B, -1, n_pad // bn, bn)).any(dim=3).any(dim=1)
    return bad.any(0, keepdim=True) if fold_batch else bad


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["bool", "additive", "key_padding", "broadcast_rows"])
@pytest.mark.parametrize("tiles", [(64, 128), (128, 64), (64, 32)])
def test_lists_match_the_elementwise_classification(seed, causal, kind, tiles):
    bm_, bn = tiles
    B, H, Nq, Nk = 2, 3, 200, 300
    if kind == "bool":
        raw = torch.rand(B, H, Nq, Nk) > 0.02
        raw[0, 1, :, 64:192] = False  # whole tiles with nothing visible
        raw[1, 2, 70:140] = True
    elif kind == "additive":
        raw = torch.zeros(B, 1, Nq, Nk, dtype=torch.float16)
        raw[0, 0, :, 150:] = float("-inf")
        raw[1, 0, 10, 5] = 0.5  # a non-zero bias: partial, not full
        raw[1, 0, :, 200:260] = float("-inf")
        raw[1, 0, 150, 230] = float("nan")  # a NaN inside an otherwise empty tile: partial
        raw[0, 0, 199, 299] = float("inf")
    elif kind == "key_padding":
        lengths = torch.tensor([257, 128])
        raw = (torch.arange(Nk)[None, :] < lengths[:, None])[:, None, None, :]
    else:
        raw = torch.rand(1, H, 1, Nk) > 0.5  # shared by the batch, broadcast over queries
        raw[..., :130] = True
    mask = raw.to(DEVICE).expand(B, H, Nq, Nk)
    n_pad = -(-Nk // 128) * 128
    k_scales = torch.rand(B, 2, n_pad, device=DEVICE) + 0.1
    k_scales[1, 1, 233] = float("nan")  # a non-finite key: its tile is never skipped
    bl = block_lists(mask, k_scales, block_m=bm_, block_n=bn, is_causal=causal)
    kbad = _kbad_from(k_scales, B, bn, fold_batch=mask.stride(0) == 0)
    assert _got_lists(bl, mask, bm_) == _expected_lists(mask, kbad, bm_, bn, causal)


def _decode_bits(bits, Nq, Nk):
    """The visibility bits of block_lists(..., with_bits=True) as bool [bm, hm, Nq, Nk]: key
    8j + 2t + c of a 64-key tile is bit 16t + 2j + c of the row's int64 for that tile."""
    n = torch.arange(64)
    pos = 16 * ((n % 8) // 2) + 2 * (n // 8) + n % 2
    words = bits.cpu()[:, :, :, :, None]  # [bm, hm, rows, n_kb, 1]
    vis = ((words >> pos) & 1).bool()  # (>> on int64 is arithmetic: & 1 keeps one bit)
    vis = vis.flatten(3)[..., :Nk]
    return vis if vis.shape[2] == 1 else vis[:, :, :Nq]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["random", "per_batch_padding", "broadcast_rows", "additive",
                                  "bias"])
def test_visibility_bits_for_the_compiled_kernels(seed, causal, kind):
    # Bit per (row, key): mask true (float: not -inf), key below Nk and, causally, not after
    # the row; the padded rows of the last query tile have none. Checked against the mask
    # element by element, as are the FLOAT_TILE marks of a float mask's partial tiles.
    from sageattention.triton.block_map import FLOAT_TILE

    B, H, Nq, Nk = 2, 3, 200, 300
    if kind == "random":
        raw = torch.rand(B, H, Nq, Nk) > 0.5
    elif kind == "per_batch_padding":
        raw = (torch.arange(Nk)[None, :] < torch.tensor([257, 64])[:, None])[:, None, None, :]
    elif kind == "broadcast_rows":
        raw = torch.rand(1, 1, 1, Nk) > 0.3
    else:
        raw = torch.zeros(B, 1, Nq, Nk)
        raw[torch.rand(B, 1, Nq, Nk) > 0.6] = float("-inf")
        raw[:, :, :, 128:192] = 0.0  # full tiles
        if kind == "bias":  # values the bits cannot carry, in some tiles only
            raw[0, 0, 10, 70] = 0.5
            raw[1, 0, 150, 250] = float("nan")
            raw[1, 0, 190, 5] = float("inf")
        raw = raw.half()
    mask = raw.to(DEVICE).expand(B, H, Nq, Nk)
    k_scales = torch.rand(B, H, 320, device=DEVICE) + 0.1
    bl = block_lists(mask, k_scales, block_m=128, block_n=64, is_causal=causal,
                     scales_per_tile=1, with_bits=True)
    bm = 1 if mask.stride(0) == 0 else B
    hm = 1 if mask.stride(1) == 0 else H
    shared = mask.stride(2) == 0 and not causal  # one row of bits stands for all
    assert bl.bits.dtype == torch.int64 and bl.bits.is_contiguous()
    assert bl.bits.shape == (bm, hm, 1 if shared else 256, 5)
    m = mask[:bm, :hm].cpu()
    want = m if m.dtype == torch.bool else m != float("-inf")
    if causal:
        want = want & (torch.arange(Nk)[None, :] <= torch.arange(Nq)[:, None])
    got = _decode_bits(bl.bits, Nq, Nk)
    assert torch.equal(got, want[:, :, :1] if shared else want)
    if not shared:
        assert not bl.bits[:, :, Nq:].any()  # rows past Nq: nothing visible
    # Partial entries: FLOAT_TILE exactly where a visible score has a bias other than 0.
    lists = bl.lists.cpu()
    needs = want & (m.float() != 0) if m.dtype != torch.bool else torch.zeros_like(want)
    marked = 0
    for b in range(bm):
        for h in range(hm):
            for qb in range(lists.shape[2]):
                part = lists[b, h, qb, 1]
                for e in part[1:1 + part[0]].tolist():
                    kb = e & (FLOAT_TILE - 1)
                    rows = slice(qb * 128, qb * 128 + 128)
                    expect = bool(needs[b, h, rows, kb * 64:kb * 64 + 64].any())
                    assert bool(e & FLOAT_TILE) == expect, (b, h, qb, kb)
                    marked += expect
    assert (marked > 0) == (kind == "bias")


def test_no_bits_or_marks_unless_asked():
    mask = torch.zeros(1, 1, 64, 64, device=DEVICE)
    mask[..., 3, 5] = 0.5
    k_scales = torch.ones(1, 1, 128, device=DEVICE)
    for m in (mask, mask.bool()):
        bl = block_lists(m, k_scales, block_m=128, block_n=64, is_causal=False)
        part = bl.lists[0, 0, 0, 1].cpu()
        assert bl.bits is None and part[0] == 1 and part[1] == 0  # one partial tile, unmarked
    with pytest.raises(ValueError, match="bits need key tiles of 64"):
        block_lists(mask.bool(), k_scales, block_m=128, block_n=32, is_causal=False,
                    with_bits=True)


@pytest.mark.parametrize("per_tile", [1, 4])
def test_group_scales_of_the_cuda_path(seed, per_tile):
    # The CUDA kernels' K scales are per group (per_warp: one per 64-key tile; per_thread: 4):
    # the lists read a NaN group scale as a non-finite key of that tile, exactly as a NaN per-key
    # scale of the Triton path.
    B, H, Nq, Nk, bm_, bn = 2, 2, 260, 330, 128, 64
    mask = (torch.rand(B, 1, Nq, Nk) > 0.3).to(DEVICE).expand(B, H, Nq, Nk).clone()
    mask[:, :, :, 128:256] = False  # tiles 2 and 3: nothing visible
    n_tiles = -(-Nk // bn)
    groups = torch.rand(B, 1, n_tiles, per_tile, device=DEVICE) + 0.1
    groups[1, 0, 3, per_tile - 1] = float("nan")  # tile 3 of batch 1: partial, not skipped
    bl = block_lists(mask, groups.reshape(B, 1, -1), block_m=bm_, block_n=bn, is_causal=False,
                     scales_per_tile=per_tile)
    per_key = groups.repeat_interleave(bn // per_tile, dim=3).reshape(B, 1, -1)
    kbad = _kbad_from(per_key, B, bn, fold_batch=False)
    got = _got_lists(bl, mask, bm_)
    assert got == _expected_lists(mask, kbad, bm_, bn, False)
    assert all(3 in part for (b, _, _), (_, part) in got.items() if b == 1)
    assert not any(3 in part for (b, _, _), (_, part) in got.items() if b == 0)


def test_key_padding_lists_stop_at_the_padding():
    Nq, Nk, bm_, bn = 130, 1000, 64, 128
    lengths = [1000, 640, 300, 0]
    keep = torch.arange(Nk)[None, :] < torch.tensor(lengths)[:, None]
    mask = keep[:, None, None, :].to(DEVICE).expand(4, 8, Nq, Nk)
    k_scales = torch.ones(4, 8, 1024, device=DEVICE)
    bl = block_lists(mask, k_scales, block_m=bm_, block_n=bn, is_causal=False)
    # Read once per batch, not once per head; one set of lists for every query tile.
    assert bl.lists.shape[:3] == (4, 1, 1) and bl.stride_m == 0
    for (b, _, _), (full, part) in _got_lists(bl, mask, bm_).items():
        n = lengths[b]
        assert full == list(range(n // bn))
        assert part == ([n // bn] if n % bn else [])


def _check(out, q, k, v, mask, causal, layout, gran="per_thread"):
    exact = reference.attention_fp64(q.cpu(), k.cpu(), v.cpu(), attn_mask=mask.cpu(),
                                     is_causal=causal, tensor_layout=layout)
    model = kernel_model(q.cpu(), k.cpu(), v.cpu(), attn_mask=mask.cpu(), is_causal=causal,
                         tensor_layout=layout, q_gran=gran, k_gran=gran)
    a = reference.accuracy(out.cpu(), model)
    b = reference.accuracy(out.cpu(), exact)
    assert a["finite"], "non-finite output"
    assert a["rel_l1"] < 2e-3, f"kernel vs quantized model: {a}"
    assert b["rel_l1"] < 0.03 and b["cosine"] > 0.998, b


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("additive", [False, True])
def test_key_padding_per_batch(seed, causal, layout, additive):
    # GQA, Nq != Nk, lengths on and off the tile edges, one batch with every key masked.
    B, Hq, Hkv, Nq, Nk, D = 4, 4, 2, 150, 280, 64
    q, k, v = make_qkv(B, Hq, Hkv, Nq, Nk, D, layout=layout, device=DEVICE)
    lengths = torch.tensor([280, 128, 77, 0])
    keep = (torch.arange(Nk)[None, :] < lengths[:, None])[:, None, None, :].to(DEVICE)
    mask = torch.where(keep, 0.0, float("-inf")).to(torch.float16) if additive else keep
    for fn in (sa.sageattn, sa.sageattn_qk_int8_pv_fp16_triton):
        out, lse = fn(q, k, v, tensor_layout=layout, is_causal=causal, attn_mask=mask,
                      return_lse=True)
        oh = out.transpose(1, 2) if layout == "NHD" else out
        assert torch.all(oh[3] == 0) and torch.all(lse[3] == float("-inf"))
        _check(out[:3], q[:3], k[:3], v[:3], mask[:3], causal, layout)
        assert torch.isfinite(lse[:3]).all()


def test_key_padding_matches_the_unpadded_call(seed):
    # The padded keys are skipped, not attended with weight 0: the result is the unmasked
    # call on the first L keys (K's smoothing mean and scale groups aside).
    q, k, v = make_qkv(1, 2, 2, 100, 300, 64, device=DEVICE)
    L = 193
    keep = (torch.arange(300, device=DEVICE) < L)[None, None, None, :]
    masked = sa.sageattn(q, k, v, attn_mask=keep, smooth_k=False)
    plain = sa.sageattn(q, k[:, :, :L], v[:, :, :L], smooth_k=False)
    acc = reference.accuracy(masked.cpu(), plain.cpu())
    assert acc["rel_l1"] < 2e-3 and acc["cosine"] > 0.99999, acc


def test_fp8_pv_with_key_padding(seed):
    from sageattention.triton.forward import attention_forward

    q, k, v = make_qkv(2, 2, 1, 90, 200, 64, kind="outliers", device=DEVICE)
    keep = (torch.arange(200)[None, :] < torch.tensor([200, 70])[:, None])[:, None, None, :]
    mask = keep.to(DEVICE).expand(2, 2, 90, 200)
    out = torch.empty_like(q)
    attention_forward(q, k, v, out, sm_scale=0.125, pv_fp8=True, smooth_v=True, attn_mask=mask,
                      q_gran="per_thread", k_gran="per_thread")
    exact = reference.attention_fp64(q.cpu(), k.cpu(), v.cpu(), attn_mask=mask.cpu(),
                                     sm_scale=0.125)
    b = reference.accuracy(out.cpu(), exact)
    assert b["finite"] and b["rel_l1"] < 0.06 and b["cosine"] > 0.998, b


def test_skipped_tiles_keep_non_finite_keys_and_rows(seed):
    """A NaN key behind the padding still makes every row it reaches NaN (SDPA: a masked NaN
    score stays NaN), and a NaN Q row is NaN even when its every key is masked."""
    q, k, v = make_qkv(2, 2, 2, 80, 300, 64, device=DEVICE)
    keep = (torch.arange(300)[None, :] < torch.tensor([100, 300])[:, None])[:, None, None, :]
    keep = keep.to(DEVICE)
    k[0, 1, 250, 3] = float("nan")  # behind batch 0's padding, in a tile with no visible key
    out = sa.sageattn(q, k, v, attn_mask=keep)
    nan_rows = torch.isnan(out).any(-1).cpu()
    assert nan_rows[0, 1].all() and not nan_rows[0, 0].any() and not nan_rows[1].any()

    # Query rows 128.. see no key at all: their whole query tile (of every tile shape) is
    # skipped. Row 130 holds a NaN, row 131 is finite. The Triton kernels keep NaN to its row;
    # the compiled ones (sageattn on sm80/89/120 and for small calls on sm90) to its Q scale
    # group, rows of the same 128-row block (docs/api.md, non-finite inputs).
    q, k, v = make_qkv(1, 1, 1, 160, 300, 64, device=DEVICE)
    q[0, 0, 130, 0] = float("nan")
    keep = torch.ones(1, 1, 160, 300, dtype=torch.bool, device=DEVICE)
    keep[0, 0, 128:] = False
    for fn, row_exact in ((sa.sageattn_qk_int8_pv_fp16_triton, True),
                          (sa.sageattn_qk_int8_pv_fp16_cuda, False), (sa.sageattn, False)):
        out, lse = fn(q, k, v, attn_mask=keep, return_lse=True)
        assert torch.isnan(out[0, 0, 130]).all() and torch.isnan(lse[0, 0, 130]), fn.__name__
        assert torch.isfinite(out[0, 0, :128]).all(), fn.__name__
        rest, rest_lse = (torch.cat([t[0, 0, 128:130], t[0, 0, 131:]]) for t in (out, lse))
        nan_rows = torch.isnan(rest).all(-1)
        # A row is either untouched (zeros, LSE -inf) or wholly NaN, and only its group's.
        assert torch.all(rest[~nan_rows] == 0), fn.__name__
        assert torch.all(rest_lse[~nan_rows] == float("-inf")), fn.__name__
        assert torch.isnan(rest_lse[nan_rows]).all(), fn.__name__
        if row_exact:
            assert not nan_rows.any(), fn.__name__


@pytest.mark.parametrize("causal", [False, True])
def test_general_masks_still_exact(seed, causal):
    # Random masks (every tile partial), whole empty tiles, rows broadcast over queries.
    q, k, v = make_qkv(2, 2, 2, 130, 260, 64, device=DEVICE)
    for mask in (torch.rand(2, 2, 130, 260) > 0.5,
                 torch.rand(1, 2, 1, 260) > 0.3,
                 torch.cat([torch.zeros(130, 130, dtype=torch.bool),
                            torch.ones(130, 130, dtype=torch.bool)], dim=1)):
        mask = mask.to(DEVICE)
        mask[..., 0] = True  # no empty rows: the reference gives NaN there
        out = sa.sageattn(q, k, v, attn_mask=mask, is_causal=causal)
        _check(out, q, k, v, mask.expand(2, 2, 130, 260), causal, "HND")


def test_lists_longer_than_one_compaction_chunk():
    # More key tiles than one compaction step takes (block_map.COMPACT_CHUNK): the lists carry
    # their lengths from one step to the next.
    from sageattention.triton.block_map import COMPACT_CHUNK

    bn = 32
    Nk = (2 * COMPACT_CHUNK + 52) * bn
    keep = torch.rand(1, 1, 1, Nk) > 0.5
    for start in (0, COMPACT_CHUNK + 20, 2 * COMPACT_CHUNK + 3):
        keep[..., start * bn: (start + 10) * bn] = True  # full tiles in every step
    keep[..., COMPACT_CHUNK * bn: (COMPACT_CHUNK + 9) * bn] = False  # empty across the edge
    mask = keep.to(DEVICE).expand(1, 1, 1, Nk)
    k_scales = torch.ones(1, 1, -(-Nk // 128) * 128, device=DEVICE)
    bl = block_lists(mask, k_scales, block_m=64, block_n=bn, is_causal=False)
    kbad = _kbad_from(k_scales, 1, bn, fold_batch=True)
    assert _got_lists(bl, mask, 64) == _expected_lists(mask, kbad, 64, bn, False)


def test_empty_batch_with_a_mask():
    q = torch.randn(0, 2, 10, 64, dtype=torch.float16, device=DEVICE)
    for mask in (torch.ones(0, 2, 10, 10, dtype=torch.bool), torch.ones(10, 10, dtype=torch.bool)):
        out, lse = sa.sageattn(q, q, q, attn_mask=mask.to(DEVICE), return_lse=True)
        assert out.shape == q.shape and lse.shape == (0, 2, 10)
