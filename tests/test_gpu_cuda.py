"""GPU tests of the compiled CUDA kernels (csrc/): every CUDA function x pv_accum_dtype x
qk_quant_gran x head dim x causal x layout, against fp64 attention and the Triton path.

Marked `gpu`. The kernels must be built (`python setup.py build_ext --inplace`); without them
these tests skip, unless SAGEATTENTION_REQUIRE_CUDA_EXT=1 (set by the device scripts), which
turns a missing extension into a failure. Every test checks that the CUDA kernel really ran
(a spy on sageattention.cuda_forward), so a silent fallback to Triton cannot pass for it.
"""
import os

import pytest
import torch
from gpu_inputs import large_qkv_or_skip
from kernel_model import kernel_model

import sageattention as sa
from sageattention import cuda_forward, ops, reference
from sageattention.testing import make_qkv

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def extension():
    if torch.cuda.is_available() and ops.load() is None:
        if os.environ.get("SAGEATTENTION_REQUIRE_CUDA_EXT", "0") not in ("", "0"):
            pytest.fail(f"compiled extension not loaded: {ops._state.reason}")
        pytest.skip(f"compiled extension not loaded: {ops._state.reason}")


@pytest.fixture
def spy(monkeypatch):
    """Counts calls that reached the compiled kernels, per pv_fp8."""
    calls = []
    real = cuda_forward.attention_forward

    def wrapped(*args, **kw):
        calls.append(kw["pv_fp8"])
        return real(*args, **kw)

    monkeypatch.setattr(cuda_forward, "attention_forward", wrapped)
    return calls


def _fp8():
    return ops.fp8_usable_on(torch.device("cuda"))


FP16_ACCUM = ("fp32", "fp16+fp32", "fp16")
FP8_ACCUM = ("fp32", "fp32+fp32", "fp32+fp16")


def _call(fn, accum, gran):
    if fn == "fp16":
        return lambda q, k, v, **kw: sa.sageattn_qk_int8_pv_fp16_cuda(
            q, k, v, pv_accum_dtype=accum, qk_quant_gran=gran, **kw)
    entry = sa.sageattn_qk_int8_pv_fp8_cuda if fn == "fp8" else sa.sageattn_qk_int8_pv_fp8_cuda_sm90
    return lambda q, k, v, **kw: entry(q, k, v, pv_accum_dtype=accum, qk_quant_gran=gran, **kw)


def _bounds(fp8, dtype, kind="randn"):
    rel, cos = (0.05, 0.998) if fp8 else (0.02, 0.9998)
    if dtype == torch.bfloat16:
        rel, cos = rel + 0.02, cos - 0.0005
    if kind == "big_tokens":
        rel, cos = rel + 0.1, cos - 0.015
    return rel, cos


def _check(out, exact, fp8, dtype, kind="randn", what="", triton=None):
    """Within the fixed bounds, or (where the input defeats any INT8 scheme, e.g. one sharp
    query row) no worse than the Triton kernel with the same quantization on the same input."""
    acc = reference.accuracy(out, exact)
    rel, cos = _bounds(fp8, dtype, kind)
    assert acc["finite"], f"{what}: non-finite output"
    if triton is not None and not (acc["rel_l1"] < rel and acc["cosine"] > cos):
        base = reference.accuracy(triton, exact)
        rel, cos = base["rel_l1"] * 1.1 + 0.005, base["cosine"] - 0.002
        what = f"{what} (Triton on the same input: {base})"
    assert acc["rel_l1"] < rel and acc["cosine"] > cos, f"{what} {kind} {dtype}: {acc}"
    return acc


def _triton(q, k, v, fp8, accum="fp32+fp32", gran="per_thread", layout="HND", causal=False,
            return_lse=False, smooth_v=False):
    """The Triton kernel with the same quantization as the CUDA call (the reference path)."""
    from sageattention import launch

    D = q.shape[-1]
    out, lse = launch.attention(q, k, v, None, D ** -0.5, layout, causal, True, smooth_v, gran,
                                fp8, accum if fp8 else "fp32", "triton", return_lse)
    return (out, lse) if return_lse else out


CASES = ([("fp16", a) for a in FP16_ACCUM] + [("fp8", a) for a in FP8_ACCUM]
         + [("sm90", "fp32+fp32"), ("sm90", "fp32")])


@pytest.mark.parametrize("fn,accum", CASES)
@pytest.mark.parametrize("gran", ["per_warp", "per_thread"])
@pytest.mark.parametrize("d", [64, 128, 40, 96])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_every_cuda_mode(seed, spy, fn, accum, gran, d, causal, layout):
    fp8 = fn != "fp16"
    if fp8 and not _fp8():
        pytest.skip("no FP8 unit for this GPU")
    dtype = torch.bfloat16 if (d == 96 and not causal) else torch.float16
    q, k, v = make_qkv(2, 4, 2, 333, 397, d, dtype=dtype, device="cuda", layout=layout)
    out, lse = _call(fn, accum, gran)(q, k, v, tensor_layout=layout, is_causal=causal,
                                      return_lse=True)
    assert spy == [fp8]
    assert out.shape == q.shape and out.dtype == dtype
    exact, exact_lse = reference.attention_fp64(q, k, v, tensor_layout=layout, is_causal=causal,
                                                return_lse=True)
    _check(out, exact, fp8, dtype, what=f"{fn} {accum} {gran}")
    assert lse.shape == (2, 4, 333) and (lse.cpu().double() - exact_lse).abs().max() < 0.1
    # Same quantization as the Triton path: both land equally close to each other.
    triton = (sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, tensor_layout=layout, is_causal=causal)
              if not fp8 else None)
    if triton is not None:
        assert reference.accuracy(out, triton)["rel_l1"] < 0.02


@pytest.mark.parametrize("fn,accum", [("fp16", "fp32"), ("fp16", "fp16"), ("fp8", "fp32+fp32"),
                                      ("fp8", "fp32+fp16")])
@pytest.mark.parametrize("kind", ["outliers", "big_tokens"])
@pytest.mark.parametrize("shape", [(4, 2, 1000, 1000), (8, 2, 200, 777), (8, 4, 777, 200),
                                   (2, 1, 1, 65), (2, 2, 65, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_adversarial_gqa_and_ragged_lengths(seed, spy, fn, accum, kind, shape, causal):
    if fn == "fp8" and not _fp8():
        pytest.skip("no FP8 unit for this GPU")
    hq, hkv, nq, nk = shape
    q, k, v = make_qkv(1, hq, hkv, nq, nk, 128, kind=kind, device="cuda")
    out = _call(fn, accum, "per_thread")(q, k, v, is_causal=causal)
    assert spy == [fn == "fp8"]
    _check(out, reference.attention_fp64(q, k, v, is_causal=causal), fn == "fp8", q.dtype, kind,
           what=f"{fn} {accum}", triton=_triton(q, k, v, fn == "fp8", accum, causal=causal))


def _wgmma():
    return ops.sm90a_usable_on(torch.device("cuda"))


@pytest.fixture
def wgmma_spy(monkeypatch):
    """What cuda_forward.runs_wgmma answered, per call: True means the wgmma op ran."""
    answers = []
    real = cuda_forward.runs_wgmma

    def wrapped(*args, **kw):
        answers.append(real(*args, **kw))
        return answers[-1]

    monkeypatch.setattr(cuda_forward, "runs_wgmma", wrapped)
    return answers


@pytest.mark.parametrize("accum", ["fp32", "fp32+fp32"])
@pytest.mark.parametrize("kind", ["randn", "outliers", "big_tokens"])
@pytest.mark.parametrize("shape", [(4, 2, 1000, 1000), (8, 2, 200, 777), (8, 4, 777, 200),
                                   (2, 1, 1, 65), (2, 2, 65, 1), (2, 2, 64, 4096)])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_wgmma_kernel_on_hopper(seed, spy, wgmma_spy, accum, kind, shape, d, causal):
    """sageattn_qk_int8_pv_fp8_cuda_sm90 on an H100/H200 runs the wgmma kernel (unit _C_sm90):
    against fp64 attention and against the mma.sync FP8 kernel, which has the same quantization
    and arithmetic, output and LSE. With "fp32" (one accumulator over all key tiles) only the
    LSE is compared: Hopper's FP8 wgmma keeps fewer bits in its accumulator than the mma.sync
    path, which Hopper runs as FP16 MMAs, so on biased V (outliers) the two differ by a few
    percent while both stay within the fp64 bounds; "fp32+fp32" sums the tiles in fp32 and
    agrees within 2% (the wgmma kernel's tiles are 128 keys, the mma.sync kernel's 64, so each
    fp32 partial sum covers twice the keys of the FP8 accumulator: up to 1.4% seen on a single
    query row)."""
    if not _wgmma():
        pytest.skip("no sm_90a unit for this GPU (H100/H200 with a wheel built by nvcc >= 12.3)")
    hq, hkv, nq, nk = shape
    q, k, v = make_qkv(1, hq, hkv, nq, nk, d, kind=kind, device="cuda")
    out, lse = sa.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, is_causal=causal,
                                                    pv_accum_dtype=accum, return_lse=True)
    assert wgmma_spy == [True] and spy == [True]
    exact, exact_lse = reference.attention_fp64(q, k, v, is_causal=causal, return_lse=True)
    mma, mma_lse = sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, is_causal=causal, pv_accum_dtype=accum,
                                                   return_lse=True)
    _check(out, exact, True, q.dtype, kind, what=f"wgmma {accum}",
           triton=_triton(q, k, v, True, accum, causal=causal))
    if accum == "fp32+fp32":
        assert reference.accuracy(out, mma)["rel_l1"] < 0.02
    # The LSE: the mma.sync kernel's (same scores; the sums differ in order, and the wgmma
    # kernel's 128-key tiles move the running max in other steps, so the exponents' offsets
    # round differently: at the huge scores of big tokens, by a few 1e-3); against fp64 on
    # plain inputs (INT8 scores of big tokens move it by units, as in every INT8 kernel).
    assert (lse - mma_lse).abs().max() < (5e-3 if kind == "big_tokens" else 1e-3)
    if kind == "randn":
        assert (lse.cpu().double() - exact_lse).abs().max() < 0.1


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gran", ["per_warp", "per_thread"])
def test_wgmma_kernel_layouts_and_views(seed, wgmma_spy, layout, dtype, gran):
    if not _wgmma():
        pytest.skip("no sm_90a unit for this GPU (H100/H200 with a wheel built by nvcc >= 12.3)")
    base = torch.randn(2, 333, 3, 4, 96, device="cuda", dtype=dtype)
    q, k, v = base[:, :, 0], base[:, :, 1], base[:, :, 2]  # NHD views, row stride 3*4*96
    if layout == "HND":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = sa.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, tensor_layout=layout, qk_quant_gran=gran)
    assert wgmma_spy == [True] and out.shape == q.shape and out.dtype == dtype
    _check(out, reference.attention_fp64(q, k, v, tensor_layout=layout), True, dtype,
           what=f"wgmma {layout} {gran}")
    # A masked call and the fp16-accumulating mode run the mma.sync kernel instead.
    mask = torch.rand(2, 1, 333, 333, device="cuda") > 0.3
    sa.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, tensor_layout=layout, attn_mask=mask)
    sa.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, tensor_layout=layout, pv_accum_dtype="fp32+fp16")
    assert wgmma_spy == [True, False, False]


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_sageattn_runs_the_wgmma_kernel_for_large_calls_on_hopper(seed, monkeypatch, spy, wgmma_spy,
                                                                  d, causal):
    """sageattn's plan for a call of at least dispatch.SM90_WGMMA_MIN_SCORES scores (lowered
    here, so that fp64 can check it) is the wgmma kernel: the same bits as the explicit sm90
    entry point with "fp32+fp32"; a masked call of that size runs Triton's FP8 path instead."""
    if not _wgmma():
        pytest.skip("no sm_90a unit for this GPU (H100/H200 with a wheel built by nvcc >= 12.3)")
    from sageattention import dispatch

    monkeypatch.setattr(dispatch, "SM90_COMPILED_MAX_SCORES", 0)
    monkeypatch.setattr(dispatch, "SM90_WGMMA_MIN_SCORES", 1)
    q, k, v = make_qkv(2, 4, 2, 700, 900, d, kind="outliers", device="cuda")
    out = sa.sageattn(q, k, v, is_causal=causal)
    assert wgmma_spy and all(wgmma_spy) and spy == [True]  # asked by the plan and the forward
    explicit = sa.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, is_causal=causal,
                                                    pv_accum_dtype="fp32+fp32")
    assert torch.equal(out, explicit)
    exact = reference.attention_fp64(q, k, v, is_causal=causal)
    _check(out, exact, True, q.dtype, "outliers", what="sageattn on wgmma")
    mask = torch.rand(2, 1, 700, 900, device="cuda") > 0.3
    masked = sa.sageattn(q, k, v, attn_mask=mask)
    assert len(spy) == 2  # no compiled kernel ran: the mask took Triton
    _check(masked, reference.attention_fp64(q, k, v, attn_mask=mask), True, q.dtype, "outliers",
           what="masked sageattn of a large call")


def test_wgmma_op_turns_bad_input_into_python_errors():
    # As test_compiled_ops_turn_bad_input_into_python_errors, for the sm_90a unit's op.
    if not _wgmma():
        pytest.skip("no sm_90a unit for this GPU (H100/H200 with a wheel built by nvcc >= 12.3)")
    C = torch.ops.sageattention_C
    x = torch.randn(1, 2, 64, 64, device="cuda", dtype=torch.float16)
    q8, q_scale, _ = C.quant_int8(x, 2, 128, 64, False, 1.0)
    k8, k_scale, _ = C.quant_int8(x, 3, 64, 64, True, 1.0)
    v8, v_scale, _ = C.quant_v_fp8(x, 64, 64, False, 448.0)
    args = (64, 64, 64, False, False, True)  # nq, nk, head_dim, nhd, causal, per_thread
    with pytest.raises(RuntimeError, match="attn_int8_fp8_sm90: q8 must be quant_int8's int8 Q"):
        C.attn_int8_fp8_sm90(x, q_scale, k8, k_scale, v8, v_scale, *args, 3, False, False)
    with pytest.raises(RuntimeError, match="attn_int8_fp8_sm90: pv_mode must be 2 or 3"):
        C.attn_int8_fp8_sm90(q8, q_scale, k8, k_scale, v8, v_scale, *args, 4, False, False)
    with pytest.raises(RuntimeError, match="attn_int8_fp8_sm90: v8 must be contiguous uint8"):
        C.attn_int8_fp8_sm90(q8, q_scale, k8, k_scale, v8[:, :1], v_scale, *args, 3, False, False)
    with pytest.raises(RuntimeError, match="attn_int8_fp8_sm90: need 0 < nk <= padded keys"):
        C.attn_int8_fp8_sm90(q8, q_scale, k8, k_scale, v8, v_scale, 64, 65, 64, False, False, True,
                             3, False, False)
    out, _ = C.attn_int8_fp8_sm90(q8, q_scale, k8, k_scale, v8, v_scale, *args, 3, False, False)
    torch.cuda.synchronize()
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_matches_the_quantized_model(seed, spy):
    q, k, v = make_qkv(1, 4, 2, 700, 900, 128, kind="outliers", device="cuda")
    for causal in (False, True):
        out = sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, is_causal=causal)
        model = kernel_model(q, k, v, is_causal=causal, block_n=64)
        assert reference.accuracy(out, model)["rel_l1"] < 2e-3
        if _fp8():
            out8 = sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, is_causal=causal,
                                                   pv_accum_dtype="fp32+fp32")
            model8 = kernel_model(q, k, v, is_causal=causal, pv="fp8", block_n=64)
            assert reference.accuracy(out8, model8)["rel_l1"] < 4e-3
    assert spy == ([False, True] * 2 if _fp8() else [False] * 2)


def test_anchor_accuracy_no_worse_than_the_original(seed, spy):
    # shared/ANCHORS.md, same shape: fp16_cuda 0.0111 / 0.99994, sageattn (fp8) 0.0376 / 0.99929.
    q, k, v = make_qkv(2, 8, 8, 2048, 2048, 128, device="cuda")
    exact = reference.attention_fp64(q, k, v)
    acc = reference.accuracy(sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v), exact)
    assert acc["rel_l1"] <= 0.0111 * 1.05 and acc["cosine"] >= 0.9999, acc
    if _fp8():
        for mode in ("fp32+fp32", "fp32+fp16"):
            acc = reference.accuracy(sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, pv_accum_dtype=mode),
                                     exact)
            assert acc["rel_l1"] <= 0.0376 * 1.05 and acc["cosine"] >= 0.9992, (mode, acc)
    assert len(spy) == (3 if _fp8() else 1)


def test_smooth_v_and_v_bias(seed, spy):
    if not _fp8():
        pytest.skip("no FP8 unit for this GPU")
    q, k, v = make_qkv(2, 4, 4, 500, 600, 128, kind="outliers", device="cuda", layout="NHD")
    exact, exact_lse = reference.attention_fp64(q, k, v, tensor_layout="NHD", return_lse=True)
    for mode in FP8_ACCUM:
        out, lse = sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, tensor_layout="NHD", smooth_v=True,
                                                   pv_accum_dtype=mode, return_lse=True)
        _check(out, exact, True, q.dtype, "outliers", mode)
        # Scores of ~30 here: INT8 moves the LSE in proportion to them, as much as in Triton.
        err = (lse.cpu().double() - exact_lse).abs().max()
        _, triton_lse = _triton(q, k, v, True, mode, layout="NHD", return_lse=True, smooth_v=True)
        assert err <= 1.1 * (triton_lse.cpu().double() - exact_lse).abs().max() + 0.02, err
    assert spy == [True] * 3


def test_non_contiguous_views_and_unaligned_v(seed, spy):
    base = torch.randn(2, 300, 3, 6, 64, device="cuda", dtype=torch.bfloat16)
    q, k, v = base[:, :, 0], base[:, :, 1], base[:, :, 2]  # NHD views, row stride 3*6*64
    exact = reference.attention_fp64(q, k, v, tensor_layout="NHD")
    _check(sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, tensor_layout="NHD"), exact, False, q.dtype)
    assert spy == [False]
    # V starting 2 elements into its storage cannot be read with 16-byte copies: Triton runs.
    flat = torch.randn(2 * 4 * 100 * 64 + 2, device="cuda", dtype=torch.float16)
    v2 = flat[2:].view(2, 4, 100, 64)
    q2, k2 = make_qkv(2, 4, 4, 100, 100, 64, device="cuda")[:2]
    assert cuda_forward.unsupported_reason(q2, k2, v2, attn_mask=None, qk_quant_gran="per_thread",
                                           pv_fp8=False, tensor_layout="HND")
    _check(sa.sageattn_qk_int8_pv_fp16_cuda(q2, k2, v2), reference.attention_fp64(q2, k2, v2),
           False, q2.dtype)
    assert spy == [False]


def test_large_offsets():
    # > 2**31 elements per tensor: offsets overflow int32 unless computed in 64 bits.
    B, H, N, D = 1030, 64, 256, 128
    q, k, v = large_qkv_or_skip(B, H, N, D)
    cases = [(False, sa.sageattn_qk_int8_pv_fp16_cuda)]
    if _fp8():
        cases.append((True, sa.sageattn_qk_int8_pv_fp8_cuda))
    for fp8, fn in cases:
        out = fn(q, k, v)
        for b in (0, B - 1):
            exact = reference.attention_fp64(q[b:b + 1, -2:], k[b:b + 1, -2:], v[b:b + 1, -2:])
            _check(out[b:b + 1, -2:], exact, fp8, q.dtype)
        del out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("strided", [True, False])
def test_compiled_quantization_matches_the_model(seed, dtype, mode, strided):
    from sageattention import granularity

    base = torch.randn(2, 300, 4, 2, 96, device="cuda", dtype=dtype) * 3 + 5
    x = base[:, :, :, 0].transpose(1, 2)  # [B, H, N, D] view with odd strides (scalar loads)
    if not strided:
        x = x.contiguous()  # 16-byte loads
    smooth = mode in (0, 3)
    x8, xs, xm = torch.ops.sageattention_C.quant_int8(x, mode, 320, 128, smooth, 0.5)
    want_mean = x.float().mean(dim=2) if smooth else torch.zeros_like(xm)
    assert torch.allclose(xm, want_mean, atol=1e-3, rtol=1e-4)
    assert xs.shape == (2, 4, granularity.n_groups(320, mode, 64))
    m8, ms = reference.quantize_groups(x, mode, 64, 0.5, xm if smooth else None)
    rows_scale = xs.gather(2, granularity.group_ids(300, mode, 64, device="cuda").expand(2, 4, 300))
    assert torch.allclose(rows_scale, ms.cuda(), rtol=1e-5)
    differ = (x8[:, :, :300, :96].int() - m8.cuda()).abs()
    assert differ.max() <= 1 and (differ > 0).float().mean() < 1e-3  # rounding ties only
    assert torch.all(x8[:, :, 300:] == 0) and torch.all(x8[..., 96:] == 0)


def _forward(q, k, v, *, q_in_kernel, layout="HND", **kw):
    """cuda_forward.attention_forward with Q quantized by the attention kernel or by the
    separate quant_int8 pass."""
    saved = cuda_forward.QUANTIZE_Q_IN_KERNEL
    cuda_forward.QUANTIZE_Q_IN_KERNEL = q_in_kernel
    try:
        args = {"sm_scale": q.shape[-1] ** -0.5, "tensor_layout": layout, "is_causal": False,
                "smooth_k": True, "smooth_v": False, "qk_quant_gran": "per_thread",
                "pv_fp8": False, "pv_accum": "fp32", "return_lse": True}
        args.update(kw)
        return cuda_forward.attention_forward(q, k, v, **args)
    finally:
        cuda_forward.QUANTIZE_Q_IN_KERNEL = saved


@pytest.mark.parametrize("fn,accum", [("fp16", "fp32"), ("fp16", "fp16+fp32"), ("fp8", "fp32+fp32"),
                                      ("fp8", "fp32+fp16")])
@pytest.mark.parametrize("gran", ["per_warp", "per_thread"])
@pytest.mark.parametrize("d", [64, 128, 40, 96])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_q_quantized_in_the_kernel_is_bit_identical_to_the_quantization_pass(seed, fn, accum,
                                                                             gran, d, layout):
    # The kernel's own quantization of Q (csrc/q_fragments.cuh) must give quant_int8's bytes and
    # scales, so the whole output and LSE are identical: ragged lengths, GQA, causal, bf16,
    # big tokens, and non-finite Q values (their scale group turns NaN in both).
    fp8 = fn == "fp8"
    if fp8 and not _fp8():
        pytest.skip("no FP8 unit for this GPU")
    for causal, dtype, kind in ((False, torch.float16, "randn"), (True, torch.bfloat16, "big_tokens")):
        q, k, v = make_qkv(2, 6, 2, 333, 397, d, dtype=dtype, kind=kind, device="cuda",
                           layout=layout)
        qh = q.transpose(1, 2) if layout == "NHD" else q
        qh[0, 1, 40, 3] = float("nan")  # a per_thread group of rows 32-63, or the warp's rows
        qh[1, 5, 330, 0] = float("inf")
        assert cuda_forward.kernel_reads_q(qh)
        kw = {"layout": layout, "is_causal": causal, "qk_quant_gran": gran, "pv_fp8": fp8,
              "pv_accum": accum}
        fused = _forward(q, k, v, q_in_kernel=True, **kw)
        pass_ = _forward(q, k, v, q_in_kernel=False, **kw)
        for a, b in zip(fused, pass_):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        out = fused[0]
        bad = out.isnan().any(dim=-1)  # [B, N, H] or [B, H, N]
        assert bad.any() and not bad.all()


def test_unaligned_q_takes_the_quantization_pass(seed, spy):
    # Q starting 2 elements into its storage cannot be loaded in 8-byte chunks: the call
    # quantizes it in a separate pass; the op itself refuses such a Q.
    flat = torch.randn(2 * 4 * 300 * 64 + 2, device="cuda", dtype=torch.float16)
    q = flat[2:].view(2, 4, 300, 64)
    k, v = make_qkv(2, 4, 4, 300, 300, 64, device="cuda")[1:]
    assert not cuda_forward.kernel_reads_q(q)
    _check(sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v), reference.attention_fp64(q, k, v), False,
           q.dtype)
    assert spy == [False]
    C = torch.ops.sageattention_C
    k8, k_scale, _ = C.quant_int8(k, 3, 320, 64, True, 1.0)
    none = torch.empty(0, device="cuda")
    no_mask = (none, none, 0, 0, 0, 0, none)
    with pytest.raises(RuntimeError, match="attn_int8_fp16: q needs unit channel stride and 8-byte"):
        C.attn_int8_fp16(q, none, k8, k_scale, v, 300, False, False, True, 0, False, 0.18,
                         *no_mask)
    with pytest.raises(RuntimeError, match="attn_int8_fp16: q and v must have the same head dim"):
        C.attn_int8_fp16(q[..., :56].contiguous(), none, k8, k_scale, v, 300, False, False, True,
                         0, False, 0.18, *no_mask)
    with pytest.raises(RuntimeError, match=r"attn_int8_fp16: q must be \[B, Hq, nq, D\]"):
        C.attn_int8_fp16(q.contiguous(), none, k8, k_scale, v, 200, False, False, True, 0, False,
                         0.18, *no_mask)


def _masks(B, H, Nq, Nk, device="cuda"):
    """The masks clients pass, by name: key padding (ComfyUI, KJNodes) as bool and additive,
    a per-head random bool mask, a float bias with finite and -inf values (fp16, bf16, fp32),
    and a mask that hides every key of some rows."""
    g = torch.Generator(device="cpu").manual_seed(7)
    keep = torch.ones(B, 1, 1, Nk, dtype=torch.bool)
    keep[0, ..., Nk - 70:] = False
    keep[-1, ..., Nk // 3:] = False
    random = torch.rand(B, H, Nq, Nk, generator=g) > 0.4
    bias = torch.randn(1, 1, Nq, Nk, generator=g) * 2
    bias[..., : Nk // 5] = float("-inf")
    # 0 / -inf where the bits carry the mask, biases in a few key tiles (run element by element).
    mixed = torch.zeros(B, 1, Nq, Nk).masked_fill(torch.rand(B, 1, Nq, Nk, generator=g) > 0.5,
                                                  float("-inf"))
    mixed[..., 64:80] = torch.randn(mixed[..., 64:80].shape, generator=g)
    mixed[..., Nk - 3] = 1.5
    empty_rows = torch.rand(B, 1, Nq, Nk, generator=g) > 0.5
    empty_rows[:, :, 5] = False
    empty_rows[:, :, Nq - 1] = False
    masks = {
        "padding-bool": keep,
        "padding-additive": torch.where(keep, 0.0, float("-inf")).half(),
        "padding-finmin": torch.where(keep, 0.0, torch.finfo(torch.float32).min),
        "random-per-head": random,
        "bias-fp16": bias.half(),
        "bias-bf16": bias.bfloat16(),
        "mixed-additive": mixed.half(),
        "empty-rows": empty_rows,
    }
    return {name: m.to(device) for name, m in masks.items()}


MASK_CASES = [("fp16", "fp32"), ("fp16", "fp16+fp32"), ("fp8", "fp32+fp32"), ("fp8", "fp32+fp16")]


@pytest.mark.parametrize("fn,accum", MASK_CASES)
@pytest.mark.parametrize("mask_name", list(_masks(1, 1, 8, 8, "cpu")))
@pytest.mark.parametrize("causal", [False, True])
def test_masked_calls_run_the_cuda_kernels(seed, spy, fn, accum, mask_name, causal):
    # GQA, Nq != Nk, neither a multiple of a tile, D=128 and D=96 (padded), NHD for half the
    # cases: against fp64 attention with the same mask, and as close to it as the Triton path.
    fp8 = fn == "fp8"
    if fp8 and not _fp8():
        pytest.skip("no FP8 unit for this GPU")
    d, layout = (96, "NHD") if causal else (128, "HND")
    dtype = torch.bfloat16 if mask_name == "bias-bf16" else torch.float16
    q, k, v = make_qkv(2, 4, 2, 333, 397, d, dtype=dtype, device="cuda", layout=layout)
    mask = _masks(2, 4, 333, 397)[mask_name]
    out, lse = _call(fn, accum, "per_thread")(q, k, v, tensor_layout=layout, is_causal=causal,
                                              attn_mask=mask, return_lse=True)
    assert spy == [fp8], "the masked call must run the CUDA kernels"
    exact, exact_lse = reference.attention_fp64(q, k, v, tensor_layout=layout, is_causal=causal,
                                                attn_mask=mask.cpu(), return_lse=True)
    empty = torch.isinf(exact_lse) & (exact_lse < 0)  # rows with no visible key
    if mask_name == "empty-rows" and not causal:
        assert empty.any()
    out_h = (out.transpose(1, 2) if layout == "NHD" else out).float().cpu()
    assert torch.all(out_h[empty] == 0), "a row with no visible key must be zeros"
    assert torch.all(torch.isneginf(lse.cpu()[empty]))
    _check(out, exact, fp8, dtype, what=f"{fn} {accum} {mask_name} causal={causal}")
    seen = ~empty
    assert (lse.cpu().double()[seen] - exact_lse[seen]).abs().max() < 0.1


@pytest.mark.parametrize("fn,accum", MASK_CASES)
def test_a_mask_that_hides_nothing_changes_nothing(seed, fn, accum):
    # Nk a multiple of the key tile and a mask with every key visible: every tile is full, so
    # the masked call runs exactly the unmasked kernel's steps: the same bits.
    if fn == "fp8" and not _fp8():
        pytest.skip("no FP8 unit for this GPU")
    q, k, v = make_qkv(2, 4, 4, 300, 384, 128, device="cuda")
    plain = _call(fn, accum, "per_warp")(q, k, v, return_lse=True)
    for mask in (torch.ones(300, 384, dtype=torch.bool, device="cuda"),
                 torch.zeros(2, 1, 1, 384, dtype=torch.float16, device="cuda")):
        masked = _call(fn, accum, "per_warp")(q, k, v, attn_mask=mask, return_lse=True)
        for a, b in zip(masked, plain):
            assert torch.equal(a, b)


def test_key_padding_skips_the_padded_tiles(seed, spy):
    # Key tiles behind the padding are skipped, not computed and discarded: with huge values in
    # K and V behind a bool padding mask at a tile edge, the output is bit for bit the call on
    # the visible keys alone (without K smoothing, whose mean would cover all keys).
    q, k, v = make_qkv(1, 8, 8, 600, 640, 128, device="cuda")
    k[:, :, 512:] = 3e4
    v[:, :, 512:] = -3e4
    keep = torch.zeros(1, 1, 1, 640, dtype=torch.bool, device="cuda")
    keep[..., :512] = True
    # (FP16 P·V: the FP8 path's V scale is a max over all keys, the padded ones too.)
    for accum in ("fp32", "fp16+fp32"):
        call = _call("fp16", accum, "per_thread")
        out = call(q, k, v, attn_mask=keep, smooth_k=False)
        assert torch.equal(out, call(q, k[:, :, :512], v[:, :, :512], smooth_k=False)), accum
    assert spy == [False] * 4


@pytest.mark.parametrize("fn,accum", [("fp16", "fp32"), ("fp8", "fp32+fp16")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_float_mask_reads(seed, spy, fn, accum, dtype, causal):
    # The float mask step reads a row two keys per load (Nk even, aligned), one key per load
    # (Nk odd; a view starting at an odd element) or with a key stride (a transposed view):
    # every access against fp64 attention with the same mask.
    if fn == "fp8" and not _fp8():
        pytest.skip("no FP8 unit for this GPU")
    for nk in (398, 397):
        q, k, v = make_qkv(2, 4, 4, 270, nk, 64, device="cuda")
        bias = torch.randn(2, 1, 270, nk + 1, device="cuda") * 2
        bias[..., ::3] = float("-inf")
        bias[..., 0] = 0.0
        bias = bias.to(dtype)
        views = {"contiguous": bias[..., :nk].contiguous(), "odd start": bias[..., 1:],
                 "key stride": bias[..., :nk].transpose(2, 3).contiguous().transpose(2, 3)}
        for name, mask in views.items():
            out = _call(fn, accum, "per_thread")(q, k, v, attn_mask=mask, is_causal=causal)
            exact = reference.attention_fp64(q, k, v, attn_mask=mask.cpu(), is_causal=causal)
            _check(out, exact, fn == "fp8", q.dtype, what=f"{fn} {dtype} Nk={nk} {name}")
    assert spy == [fn == "fp8"] * 6


@pytest.mark.parametrize("causal", [False, True])
def test_bool_padding_inside_a_tile_is_the_call_on_the_visible_keys(seed, spy, causal):
    # The partial tile of a bool mask runs on block_map.py's bits, hiding scores as the bounds
    # of a shorter call do: with zeros behind the padding (so that K's scale groups and V are
    # the same), the padded masked call gives the bits of the call on the 500 visible keys.
    q, k, v = make_qkv(1, 8, 8, 600, 640, 128, device="cuda")
    k[:, :, 500:] = 0
    v[:, :, 500:] = 0
    keep = torch.zeros(1, 1, 1, 640, dtype=torch.bool, device="cuda")
    keep[..., :500] = True
    for accum in ("fp32", "fp16+fp32"):
        call = _call("fp16", accum, "per_thread")
        out, lse = call(q, k, v, attn_mask=keep, smooth_k=False, is_causal=causal,
                        return_lse=True)
        want, want_lse = call(q, k[:, :, :500], v[:, :, :500], smooth_k=False, is_causal=causal,
                              return_lse=True)
        assert torch.equal(out, want) and torch.equal(lse, want_lse), accum
    assert spy == [False] * 4


@pytest.mark.parametrize("fn,accum", MASK_CASES)
def test_masked_lists_and_mask_checks_in_the_op(seed, fn, accum):
    # Direct calls: a mask of the wrong shape or dtype, and lists made for other tiles, are
    # refused with the op's name; lists with out-of-range entries cannot read out of bounds.
    from sageattention.triton.block_map import block_lists

    if fn == "fp8" and not _fp8():
        pytest.skip("no FP8 unit for this GPU")
    C = torch.ops.sageattention_C
    q, k, v = make_qkv(1, 2, 2, 200, 200, 64, device="cuda")
    k8, ks, _ = C.quant_int8(k, 3, 256, 64, True, 1.0)
    mask = (torch.rand(1, 1, 200, 200, device="cuda") > 0.5).expand(1, 2, 200, 200)
    bl = block_lists(mask, ks, block_m=128, block_n=64, is_causal=False, scales_per_tile=4,
                     with_bits=True)
    strides = (bl.stride_b, bl.stride_h, bl.stride_m, bl.n_kb)
    if fn == "fp16":
        def op(m, lists, st, bits=None):
            if bits is None:
                bits = bl.bits if m.dtype == torch.bool else ks[:0]
            return C.attn_int8_fp16(q, ks[:0], k8, ks, v, 200, False, False, True, 0, False,
                                    0.18, m, lists, *st, bits)
        name = "attn_int8_fp16"
    else:
        v8, vs, _ = C.quant_v_fp8(v, 256, 64, False, 448.0)

        def op(m, lists, st, bits=None):
            if bits is None:
                bits = bl.bits if m.dtype == torch.bool else ks[:0]
            return C.attn_int8_fp8(q, ks[:0], k8, ks, v8, vs, 200, 200, 64, False, False, True,
                                   3, False, False, 0.18, m, lists, *st, bits)
        name = "attn_int8_fp8"
    out, _ = op(mask, bl.lists, strides)
    want = reference.attention_fp64(q, k, v, attn_mask=mask.cpu(), sm_scale=0.18 / 1.4426950408889634)
    _check(out, want, fn == "fp8", q.dtype)
    with pytest.raises(RuntimeError, match=f"{name}: mask must be \\[B, Hq, nq, Nk\\]"):
        op(mask[..., :100], bl.lists, strides)
    with pytest.raises(RuntimeError, match=f"{name}: mask must be bool, float32, float16"):
        op(mask.double(), bl.lists, strides)
    with pytest.raises(RuntimeError, match=f"{name}: a bool mask needs its mask_bits"):
        op(mask, bl.lists, strides, bits=ks[:0])
    with pytest.raises(RuntimeError, match=f"{name}: mask_bits must be contiguous int64"):
        op(mask, bl.lists, strides, bits=bl.bits[..., :1])
    with pytest.raises(RuntimeError, match=f"{name}: mask_bits must be contiguous int64"):
        op(mask, bl.lists, strides, bits=bl.bits.int())
    with pytest.raises(RuntimeError, match=f"{name}: lists were made for other tiles"):
        op(mask, bl.lists, strides[:3] + (7,))
    with pytest.raises(RuntimeError, match=f"{name}: lists are too small"):
        op(mask, bl.lists, (bl.stride_b, bl.stride_h, 10**6, bl.n_kb))
    hostile = bl.lists.clone()
    hostile.view(-1)[::3] = 2**30
    hostile.view(-1)[1::3] = -(2**30)
    out, _ = op(mask, hostile, strides)  # wrong numbers, but no fault
    torch.cuda.synchronize()
    assert out.shape == q.shape
    # The same with a float mask and bits: the marks (bit 30, set by the values above on
    # entries of both lists) pick the element-wise step or the bits, both inside their data.
    additive = torch.zeros(mask.shape, device="cuda").masked_fill(~mask, float("-inf"))
    out, _ = op(additive, hostile, strides, bits=bl.bits)
    torch.cuda.synchronize()
    assert out.shape == q.shape


@pytest.mark.parametrize("smooth", [False, True])
def test_fp8_v_quantization_layout(seed, smooth):
    if not _fp8():
        pytest.skip("no FP8 unit for this GPU")
    v = (torch.randn(2, 3, 150, 80, device="cuda") * 4 + 1).half()
    for vmax in (448.0, 2.25):
        v8, scale, mean = torch.ops.sageattention_C.quant_v_fp8(v, 192, 128, smooth, vmax)
        assert v8.shape == (2, 3, 128, 192) and scale.shape == (2, 3, 128)
        vf = v.float() - (v.float().mean(dim=2, keepdim=True) if smooth else 0)
        want_scale = vf.abs().amax(dim=2) / vmax
        assert torch.allclose(scale[..., :80], want_scale, rtol=1e-5)
        assert torch.all(scale[..., 80:] == 0)
        if smooth:
            assert torch.allclose(mean, v.float().mean(dim=2), atol=1e-3)
        # Undo the key permutation: key kk of each 16 sits at 4*((kk%8)//2) + 2*(kk//8) + kk%2.
        kk = torch.arange(192, device="cuda")
        pos = (kk // 16) * 16 + 4 * ((kk % 16 % 8) // 2) + 2 * (kk % 16 // 8) + kk % 2
        vals = v8.view(torch.float8_e4m3fn).float()[..., pos].transpose(-1, -2)  # [B,H,keys,D]
        want = (vf / want_scale[:, :, None, :]).to(torch.float8_e4m3fn).float()
        got = vals[:, :, :150, :80]
        differ = got != want
        assert differ.float().mean() < 1e-3
        assert torch.all((got - want).abs()[differ] <= want.abs()[differ] / 8 + 1e-6)
        assert torch.all(vals[:, :, 150:] == 0) and torch.all(vals[..., 80:] == 0)


def test_torch_compile_fullgraph_with_cuda_kernels(seed, spy):
    q, k, v = make_qkv(2, 8, 8, 1000, 1000, 128, device="cuda", layout="NHD")

    fp8 = _fp8()

    def f(q, k, v):
        a = sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, tensor_layout="NHD", is_causal=True)
        if fp8:
            a = a + sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, tensor_layout="NHD")
        return a

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    assert torch.equal(compiled(q, k, v), f(q, k, v))
    assert len(spy) >= 2 and spy[0] is False


def test_compiled_ops_trace_under_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(2, 4, 100, 96, dtype=torch.float16, device="cuda")
        k = torch.empty(2, 2, 130, 96, dtype=torch.float16, device="cuda")
        out, lse = cuda_forward.attention_forward(
            q, k, k, sm_scale=0.1, tensor_layout="HND", is_causal=False, smooth_k=True,
            smooth_v=False, qk_quant_gran="per_thread", pv_fp8=False, pv_accum="fp32",
            return_lse=True)
    assert out.shape == q.shape and lse.shape == (2, 4, 100)


@pytest.mark.parametrize("sm_scale", [-0.1, 0.0, 0.3])
@pytest.mark.parametrize("causal", [False, True])
def test_any_sign_of_sm_scale(seed, spy, sm_scale, causal):
    # The kernel takes the row max on the integer scores, negating them for a negative scale.
    q, k, v = make_qkv(1, 4, 2, 300, 260, 64, device="cuda")
    exact = reference.attention_fp64(q, k, v, is_causal=causal, sm_scale=sm_scale)
    _check(sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, is_causal=causal, sm_scale=sm_scale),
           exact, False, q.dtype, what=f"sm_scale={sm_scale}")
    if _fp8():
        _check(sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, is_causal=causal, sm_scale=sm_scale),
               exact, True, q.dtype, what=f"fp8 sm_scale={sm_scale}")
    assert spy[0] is False and len(spy) == (2 if _fp8() else 1)


def test_compiled_ops_turn_bad_input_into_python_errors():
    # The checks inside the C++ ops (reached only by direct calls: the Python layer validates
    # first) must raise a RuntimeError naming the op and argument, in both ABI flavours (ATen's
    # c10::Error; the stable ABI's std::runtime_error through the boxed dispatcher), and leave
    # the process and the CUDA context usable.
    C = torch.ops.sageattention_C
    x = torch.randn(1, 2, 64, 64, device="cuda", dtype=torch.float16)
    with pytest.raises(RuntimeError, match=r"quant_int8: x must be \[B, H, N, D\]"):
        C.quant_int8(x[0], 0, 64, 64, True, 1.0)
    with pytest.raises(RuntimeError, match="quant_int8: mode must be 0..3"):
        C.quant_int8(x, 7, 64, 64, True, 1.0)
    with pytest.raises(RuntimeError, match="quant_int8: n_pad must be a multiple of 64"):
        C.quant_int8(x, 0, 100, 64, True, 1.0)
    with pytest.raises(RuntimeError, match="quant_int8: input must be float16, bfloat16 or float32"):
        C.quant_int8(x.to(torch.int32), 0, 64, 64, True, 1.0)
    q8, q_scale, _ = C.quant_int8(x, 2, 128, 64, False, 1.0)
    k8, k_scale, _ = C.quant_int8(x, 3, 64, 64, True, 1.0)
    none = torch.empty(0, device="cuda")
    no_mask = (1.0, none, none, 0, 0, 0, 0, none)
    with pytest.raises(RuntimeError, match="attn_int8_fp16: pv_mode must be 0 or 1"):
        C.attn_int8_fp16(q8, q_scale, k8, k_scale, x, 64, False, False, True, 5, False, *no_mask)
    with pytest.raises(RuntimeError, match="attn_int8_fp16: v must be float16 or bfloat16"):
        C.attn_int8_fp16(q8, q_scale, k8, k_scale, x.float(), 64, False, False, True, 0, False,
                         *no_mask)
    with pytest.raises(RuntimeError, match="attn_int8_fp16: q8 and k8 must be int8"):
        C.attn_int8_fp16(q_scale, q_scale, k8, k_scale, x, 64, False, False, True, 0, False,
                         *no_mask)
    out, _ = C.attn_int8_fp16(q8, q_scale, k8, k_scale, x, 64, False, False, True, 0, False,
                              *no_mask)
    torch.cuda.synchronize()
    assert out.shape == x.shape and torch.isfinite(out).all()
