"""NaN in, NaN out: a non-finite input must show in the output where torch SDPA shows it, never
be turned into plausible numbers that hide the caller's bug; finite inputs never give NaN.

Runs under TRITON_INTERPRET=1 on the CPU and on a GPU (the same cases). Rows are compared with
SDPA row by row on the Triton kernels. The compiled CUDA kernels quantize per scale group, so a
non-finite value makes its whole group non-finite there: every row SDPA makes NaN is NaN, and
rows sharing the group may be too (docs/api.md).
"""
import pytest
import torch
import torch.nn.functional as F

import sageattention as sa
from sageattention import cuda_forward
from sageattention.dispatch import default_plan

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
# The interpreter computes in numpy, which warns about the NaN it is asked to produce.
pytestmark = [pytest.mark.gpu if HAS_CUDA else pytest.mark.interpret,
              pytest.mark.filterwarnings("ignore:invalid value encountered")]

FUNCS = {
    "sageattn": sa.sageattn,
    "fp16_triton": sa.sageattn_qk_int8_pv_fp16_triton,
    "fp16_cuda": sa.sageattn_qk_int8_pv_fp16_cuda,
    "fp8_cuda": sa.sageattn_qk_int8_pv_fp8_cuda,
    "fp8_cuda_sm90": sa.sageattn_qk_int8_pv_fp8_cuda_sm90,  # the wgmma kernel on H100/H200
}


def _runs_compiled(name, q, k, v, mask, layout):
    """Whether the call runs the compiled (per-group) kernels rather than Triton."""
    if not q.is_cuda or name == "fp16_triton":
        return False
    if name == "sageattn":
        n_axis = 1 if layout == "NHD" else 2
        plan = default_plan(q.device, q.shape[-1], q.numel() // q.shape[-1] * k.shape[n_axis])
        if plan.backend != "cuda":
            return False
        gran, fp8 = plan.qk_quant_gran, plan.pv_fp8
    else:
        gran, fp8 = "per_thread", name.startswith("fp8_cuda") and q.device.type == "cuda"
    return cuda_forward.unsupported_reason(q, k, v, attn_mask=mask, qk_quant_gran=gran,
                                           pv_fp8=fp8, tensor_layout=layout) is None


def _sdpa(q, k, v, mask=None, causal=False, layout="HND"):
    qh, kh, vh = (t.transpose(1, 2) if layout == "NHD" else t for t in (q, k, v))
    rep = qh.shape[1] // kh.shape[1]
    kh, vh = (t.repeat_interleave(rep, dim=1) for t in (kh, vh))
    out = F.scaled_dot_product_attention(qh.float(), kh.float(), vh.float(), attn_mask=(
        mask.float() if mask is not None and mask.dtype != torch.bool else mask), is_causal=causal)
    return out


def _nan_rows(out, layout="HND"):
    out = out.transpose(1, 2) if layout == "NHD" else out
    return torch.isnan(out.float()).any(-1).cpu()


def _inputs(B=2, Hq=4, Hkv=2, Nq=150, Nk=200, D=64, dtype=torch.float16, layout="HND"):
    shape_q, shape_k = (B, Hq, Nq, D), (B, Hkv, Nk, D)
    q, k, v = (torch.randn(s, dtype=dtype, device=DEVICE) for s in (shape_q, shape_k, shape_k))
    if layout == "NHD":
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    return q, k, v


def _poke(t, layout, b, h, n, d, value):
    if layout == "NHD":
        t[b, n, h, d] = value
    else:
        t[b, h, n, d] = value


def _compare(name, q, k, v, mask, causal, layout, exact=True, also_nan=None):
    """also_nan: [B, H, Nq] rows that must be NaN here whatever SDPA gives."""
    out = FUNCS[name](q, k, v, tensor_layout=layout, is_causal=causal, attn_mask=mask)
    want = _nan_rows(_sdpa(q, k, v, mask, causal, layout))
    if also_nan is not None:
        want |= also_nan
    got = _nan_rows(out, layout)
    assert want.any(), "the case must reach some row"
    missed = want & ~got
    assert not missed.any(), f"{name}: {int(missed.sum())} rows SDPA makes NaN are finite here"
    if exact and not _runs_compiled(name, q, k, v, mask, layout):
        extra = got & ~want
        assert not extra.any(), f"{name}: {int(extra.sum())} rows are NaN where SDPA is finite"
    # A NaN row is NaN in every channel (never a half-plausible row).
    out_h = (out.transpose(1, 2) if layout == "NHD" else out).float().cpu()
    assert torch.isnan(out_h[got]).all()


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_q_gives_nan_in_exactly_its_rows(seed, name, causal, layout, value):
    q, k, v = _inputs(layout=layout)
    poked = torch.zeros(2, 4, 150, dtype=torch.bool)
    for b, h, n, d in ((0, 1, 7, 3), (1, 3, 149, 0), (1, 0, 64, 63)):
        _poke(q, layout, b, h, n, d, value)
        poked[b, h, n] = True
    # A Q row holding -inf whose visible keys all have a positive value in that channel has
    # only -inf scores, which torch's CPU SDPA turns into a zero row (1 in 256 at row 7 with
    # causality); the contract here is NaN for every such row (docs/api.md).
    _compare(name, q, k, v, None, causal, layout, also_nan=poked)


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("smooth_k", [True, False])
def test_nan_in_k_reaches_the_rows_sdpa_reaches(seed, name, causal, smooth_k):
    # GQA (4 query heads on 2 KV heads), Nq != Nk, N not a multiple of any block.
    q, k, v = _inputs(Nq=150, Nk=200)
    k[0, 1, 120, 5] = float("nan")  # causal: rows >= 120 of query heads 2 and 3 of batch 0
    k[1, 0, 199, 0] = float("nan")  # the last key: only full attention reaches it
    out = FUNCS[name](q, k, v, is_causal=causal, smooth_k=smooth_k)
    want = _nan_rows(_sdpa(q, k, v, None, causal))
    got = _nan_rows(out)
    assert not (want & ~got).any()
    if not _runs_compiled(name, q, k, v, None, "HND"):
        assert torch.equal(got, want)
    # The other batch-heads never see the bad keys: finite everywhere.
    assert not got[0, :2].any() and not got[1, 2:].any()


@pytest.mark.parametrize("name", ["sageattn", "fp16_triton", "fp8_cuda"])
@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_nan_key_with_masks_matches_sdpa(seed, name, kind):
    q, k, v = _inputs(Nq=100, Nk=130)
    k[1, 0, 77, 9] = float("nan")
    keep = torch.rand(2, 1, 100, 130, device=DEVICE) > 0.3
    mask = keep if kind == "bool" else torch.where(keep, 0.0, float("-inf")).to(torch.float16)
    _compare(name, q, k, v, mask, False, "HND")


@pytest.mark.parametrize("name", ["sageattn", "fp16_cuda", "fp8_cuda"])
@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_causality_still_stops_a_nan_key_in_a_masked_call(seed, name, kind):
    # A masked causal call: the NaN key at 100 reaches rows >= 100 (the mask does not stop it),
    # but rows 0-63 see no key of its 64-key tile (which their 128-row query tile still
    # visits) and stay finite, in every step (the compiled kernels' bits fold causality in
    # with the mask).
    q, k, v = _inputs(B=1, Hq=2, Hkv=1, Nq=400, Nk=400)
    k[0, 0, 100, 7] = float("nan")
    keep = torch.rand(1, 1, 400, 400, device=DEVICE) > 0.3
    keep[..., 0] = True
    mask = keep if kind == "bool" else torch.zeros(keep.shape, device=DEVICE).masked_fill(
        ~keep, float("-inf")).half()
    out = FUNCS[name](q, k, v, is_causal=True, attn_mask=mask)
    nan_rows = _nan_rows(out)[0]
    assert nan_rows[:, 100:].all(), name
    assert not nan_rows[:, :64].any(), name


@pytest.mark.parametrize("name", ["sageattn", "fp16_cuda", "fp8_cuda"])
def test_a_zero_score_scale_keeps_masked_rows_finite(seed, name):
    # sm_scale=0 makes every score 0 (a uniform average over the visible keys); hidden keys
    # must stay hidden, not turn into NaN (-inf times a zero scale).
    q, k, v = _inputs(Nq=100, Nk=130)
    keep = torch.rand(2, 1, 100, 130, device=DEVICE) > 0.3
    keep[..., 0] = True
    out = FUNCS[name](q, k, v, attn_mask=keep, sm_scale=0.0)
    assert torch.isfinite(out).all(), name
    vv = v.repeat_interleave(2, dim=1).float()  # GQA: 4 query heads on 2 KV heads
    exact = (keep.float() / keep.float().sum(-1, keepdim=True)) @ vv
    assert (out.float() - exact).abs().max() < 0.05, name


@pytest.mark.parametrize("name", ["sageattn", "fp16_triton", "fp8_cuda"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_plus_inf_in_a_float_mask_gives_nan_in_its_row(seed, name, value):
    q, k, v = _inputs(Nq=100, Nk=130)
    mask = torch.randn(2, 1, 100, 130, device=DEVICE).to(torch.float16)
    mask[0, 0, 3, 17] = value
    mask[1, 0, 99, 129] = value
    mask[:, :, 50, :64] = float("-inf")  # -inf is a normal mask value: stays finite
    _compare(name, q, k, v, mask, False, "HND")


def test_infinite_key_reaches_at_least_the_rows_sdpa_reaches(seed):
    # SDPA ignores an infinite key in rows where its score is -inf and gives NaN where it is
    # +inf; here every row that reaches it is NaN (docs/api.md).
    q, k, v = _inputs()
    k[0, 0, 30, 2] = float("inf")
    out = sa.sageattn(q, k, v)
    want, got = _nan_rows(_sdpa(q, k, v)), _nan_rows(out)
    assert want.any() and not (want & ~got).any()
    assert not got[1].any() and not got[0, 2:].any()


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_lse_of_a_nan_row_is_nan(seed, name):
    q, k, v = _inputs()
    q[0, 0, 5, 0] = float("nan")
    out, lse = FUNCS[name](q, k, v, return_lse=True)
    assert torch.isnan(lse[0, 0, 5])
    finite_rows = ~_nan_rows(out)
    assert torch.isfinite(lse.cpu()[finite_rows]).all()


def test_varlen_nan_stays_in_its_sequence(seed):
    cu = torch.tensor([0, 70, 150], dtype=torch.int32, device=DEVICE)
    q, k, v = (torch.randn(150, 2, 64, dtype=torch.float16, device=DEVICE) for _ in range(3))
    k[100, 1, 4] = float("nan")  # sequence 1, head 1
    out = sa.sageattn_varlen(q, k, v, cu, cu, 80, 80)
    bad = torch.isnan(out.float()).any(-1).cpu()  # [tokens, heads]
    assert bad[70:, 1].all() and not bad[:70].any() and not bad[:, 0].any()


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_finite_inputs_never_give_nan(seed, name, dtype):
    q, k, v = _inputs(dtype=dtype)
    # Huge but finite tokens: fp16's largest values, and bf16 tokens of 1e6. Beyond about 1e8
    # (bf16 only) the kernels' exponent arithmetic overflows (docs/api.md, "Limits").
    big = 6e4 if dtype == torch.float16 else 1e6
    q[0, 0, :5] = big
    k[1, 1, 10:12] = -big
    keep = torch.rand(2, 1, 150, 200, device=DEVICE) > 0.5
    keep[:, :, 3] = False  # a fully masked row: zeros, not NaN
    for mask in (None, keep):
        out = FUNCS[name](q, k, v, attn_mask=mask)
        assert torch.isfinite(out.float()).all(), name
