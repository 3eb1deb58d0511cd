"""INT8 quantization of Q or K (with optional mean subtraction) and FP8 quantization of V.

Outputs are padded so the attention kernel can load whole tiles without masks:
- int8 tensor ``[B, H, N_pad, D_pad]`` contiguous, rows >= N and columns >= D are zero;
- float32 scales ``[B, H, n_groups]`` in the layout of :mod:`sageattention.granularity`,
  multiplied by ``scale_mult`` (``sm_scale * log2(e)`` for Q, 1 for K).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common


@triton.jit
def _load_tile(X, MEAN, stride_xb, stride_xh, stride_xn, stride_xd, stride_mb, stride_mh,
               N, D, TILE: tl.constexpr, D_PAD: tl.constexpr, HAS_MEAN: tl.constexpr):
    """The program's [TILE, D_PAD] tile of x[b, h] (grid: row tiles, heads, batch) in fp32,
    zero outside [N, D], with the channel mean subtracted when HAS_MEAN."""
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    rows = tl.program_id(0) * TILE + tl.arange(0, TILE)
    cols = tl.arange(0, D_PAD)
    inside = (rows < N)[:, None] & (cols < D)[None, :]
    x = tl.load(X + b * stride_xb + h * stride_xh + rows[:, None].to(tl.int64) * stride_xn
                + cols[None, :] * stride_xd, mask=inside, other=0.0).to(tl.float32)
    if HAS_MEAN:
        mean = tl.load(MEAN + b * stride_mb + h * stride_mh + cols, mask=cols < D, other=0.0)
        x = tl.where(inside, x - mean[None, :], 0.0)
    return b, h, rows, cols, x


@triton.jit
def _quant_int8_kernel(
    X, MEAN, Y, S,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_mb, stride_mh,
    stride_yb, stride_yh, stride_yn,
    stride_sb, stride_sh,
    N, D, scale_mult,
    TILE: tl.constexpr, D_PAD: tl.constexpr, MODE: tl.constexpr, HAS_MEAN: tl.constexpr,
    PER_ROW: tl.constexpr,
):
    b, h, rows, cols, x = _load_tile(X, MEAN, stride_xb, stride_xh, stride_xn, stride_xd,
                                     stride_mb, stride_mh, N, D, TILE, D_PAD, HAS_MEAN)
    # A non-finite value must not set its group's scale (the other rows would quantize to 0):
    # it counts as 0 here, and with PER_ROW its row's scale is NaN, which makes every score of
    # that key NaN in the attention kernel (SDPA's NaN-in, NaN-out).
    x, bad = _common.finite_rows(x)
    y, amax = _common.quantize_rows(x, TILE, MODE)
    tl.store(Y + b * stride_yb + h * stride_yh + rows[:, None].to(tl.int64) * stride_yn
             + cols[None, :], y)
    scale = amax * (scale_mult / 127.0)
    if PER_ROW:
        tl.store(S + b * stride_sb + h * stride_sh + rows, tl.where(bad, float("nan"), scale))
    else:
        # Several rows of one group write the same value to the same slot: harmless.
        tl.store(S + b * stride_sb + h * stride_sh + _common.group_id(rows, MODE, TILE), scale)


def pad_to(n: int, m: int) -> int:
    return -(-n // m) * m


def quantize_int8(x: torch.Tensor, mode: int, tile: int, d_pad: int, n_pad: int,
                  mean: torch.Tensor | None = None, scale_mult: float = 1.0,
                  per_row: bool = False):
    """Quantize x [B, H, N, D] (any strides) to INT8.

    mean: optional float32 [B, H, D] subtracted from every row first (K smoothing).
    n_pad must be a multiple of ``tile``; tile a multiple of the group size of ``mode``.
    Scales: [B, H, n_groups] in granularity's layout, or with per_row [B, H, n_pad], each row's
    group scale, NaN for a row holding a NaN or an infinity (those values quantize to 0).
    """
    from ..granularity import n_groups

    B, H, N, D = x.shape
    assert n_pad % tile == 0 and n_pad >= N and d_pad >= D
    y = torch.empty((B, H, n_pad, d_pad), dtype=torch.int8, device=x.device)
    slots = n_pad if per_row else n_groups(n_pad, mode, tile)
    s = torch.empty((B, H, slots), dtype=torch.float32, device=x.device)
    m = mean if mean is not None else s  # placeholder pointer, unused when HAS_MEAN is False
    grid = (n_pad // tile, H, B)  # B and H each <= 65535 (CUDA grid y/z limit)
    _quant_int8_kernel[grid](
        x, m, y, s,
        *x.stride(),
        m.stride(0), m.stride(1),
        y.stride(0), y.stride(1), y.stride(2),
        s.stride(0), s.stride(1),
        N, D, float(scale_mult),
        TILE=tile, D_PAD=d_pad, MODE=mode, HAS_MEAN=mean is not None, PER_ROW=per_row,
        num_warps=4 if d_pad <= 128 else 8,
    )
    return y, s


@triton.jit
def _kv_stats_kernel(
    K, V, KM, VM, VS,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    H, N, D,
    TILE: tl.constexpr, D_PAD: tl.constexpr, SMOOTH_V: tl.constexpr, HAS_V: tl.constexpr,
):
    """One pass over K and V of one (batch, head): K's channel mean, V's channel mean (when
    SMOOTH_V) and V's FP8 scale max|v - mean| / 448 (when HAS_V). Replaces a chain of small
    torch ops whose launch cost dominated short sequences. K's non-finite values count as 0:
    the mean only shifts every score of a row alike, and one bad key must not make it NaN for
    all the others."""
    pid = tl.program_id(0)
    b = (pid // H).to(tl.int64)
    h = (pid % H).to(tl.int64)
    cols = tl.arange(0, D_PAD)
    col_ok = cols < D
    k_sum = tl.zeros((D_PAD,), dtype=tl.float32)
    v_sum = tl.zeros((D_PAD,), dtype=tl.float32)
    v_max = tl.full((D_PAD,), float("-inf"), dtype=tl.float32)
    v_min = tl.full((D_PAD,), float("inf"), dtype=tl.float32)
    for n0 in range(0, N, TILE):
        rows = (n0 + tl.arange(0, TILE)).to(tl.int64)
        inside = (rows < N)[:, None] & col_ok[None, :]
        k = tl.load(K + b * stride_kb + h * stride_kh + rows[:, None] * stride_kn
                    + cols[None, :] * stride_kd, mask=inside, other=0.0).to(tl.float32)
        k, _ = _common.finite_rows(k)
        k_sum += tl.sum(k, 0)
        if HAS_V:
            v = tl.load(V + b * stride_vb + h * stride_vh + rows[:, None] * stride_vn
                        + cols[None, :] * stride_vd, mask=inside, other=0.0).to(tl.float32)
            v_sum += tl.sum(v, 0)
            v_max = tl.maximum(v_max, tl.max(tl.where(inside, v, float("-inf")), 0))
            v_min = tl.minimum(v_min, tl.min(tl.where(inside, v, float("inf")), 0))
    slab = (b * H + h) * D
    tl.store(KM + slab + cols, k_sum / N, mask=col_ok)
    if HAS_V:
        if SMOOTH_V:
            v_mean = v_sum / N
            tl.store(VM + slab + cols, v_mean, mask=col_ok)
        else:
            v_mean = tl.zeros((D_PAD,), dtype=tl.float32)
        amax = tl.maximum(v_max - v_mean, v_mean - v_min)
        scale = tl.where(col_ok, tl.maximum(amax, 1e-30) / 448.0, 1.0)
        tl.store(VS + (b * H + h) * D_PAD + cols, scale)


def kv_stats(k: torch.Tensor, v: torch.Tensor, d_pad: int, smooth_v: bool = False):
    """K channel mean [B, H, D], V channel mean (or None) and V's FP8 scale [B, H, d_pad].

    The scale maps max|v - mean| of each channel onto 448, the e4m3 maximum (1 on padding).
    """
    B, H, N, D = k.shape
    km = torch.empty((B, H, D), dtype=torch.float32, device=k.device)
    vm = torch.empty((B, H, D), dtype=torch.float32, device=k.device) if smooth_v else km
    vs = torch.empty((B, H, d_pad), dtype=torch.float32, device=k.device)
    _kv_stats_kernel[(B * H,)](
        k, v, km, vm, vs, *k.stride(), *v.stride(), H, N, D,
        TILE=64 if d_pad <= 128 else 32, D_PAD=d_pad, SMOOTH_V=smooth_v, HAS_V=True,
        num_warps=4,
    )
    return km, (vm if smooth_v else None), vs


def k_mean(k: torch.Tensor) -> torch.Tensor:
    """K's channel mean over the sequence, float32 [B, H, D], non-finite values counted as 0."""
    B, H, N, D = k.shape
    km = torch.empty((B, H, D), dtype=torch.float32, device=k.device)
    d_pad = max(16, 1 << (D - 1).bit_length())
    _kv_stats_kernel[(B * H,)](
        k, k, km, km, km, *k.stride(), *k.stride(), H, N, D,
        TILE=64 if d_pad <= 128 else 32, D_PAD=d_pad, SMOOTH_V=False, HAS_V=False, num_warps=4,
    )
    return km


@triton.jit
def _quant_fp8_v_kernel(
    V, MEAN, SCALE, Y,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_mb, stride_mh,
    stride_sb, stride_sh,
    stride_yb, stride_yh, stride_yd,
    N, D,
    TILE: tl.constexpr, D_PAD: tl.constexpr, HAS_MEAN: tl.constexpr,
):
    b, h, rows, cols, v = _load_tile(V, MEAN, stride_vb, stride_vh, stride_vn, stride_vd,
                                     stride_mb, stride_mh, N, D, TILE, D_PAD, HAS_MEAN)
    scale = tl.load(SCALE + b * stride_sb + h * stride_sh + cols)  # max|v| / 448 per channel
    y = (v / scale[None, :]).to(tl.float8e4nv)
    # Stored transposed ([D_pad, N_pad]) so P @ V reads V with the reduction axis contiguous.
    tl.store(Y + b * stride_yb + h * stride_yh + cols[:, None].to(tl.int64) * stride_yd
             + rows[None, :].to(tl.int64), tl.trans(y))


def quantize_v_fp8(v: torch.Tensor, d_pad: int, n_pad: int, scale: torch.Tensor,
                   mean: torch.Tensor | None = None, tile: int = 64) -> torch.Tensor:
    """Per-channel FP8 (e4m3) quantization of V [B, H, N, D] for the FP8 P·V kernels.

    scale (float32 [B, H, d_pad]) and mean come from :func:`kv_stats`. Returns v_fp8
    [B, H, d_pad, n_pad] (transposed, zero padded) with v ~= v_fp8 * scale (+ mean).
    """
    B, H, N, D = v.shape
    y = torch.empty((B, H, d_pad, n_pad), dtype=torch.float8_e4m3fn, device=v.device)
    m = mean if mean is not None else scale
    _quant_fp8_v_kernel[(n_pad // tile, H, B)](
        v, m, scale, y,
        *v.stride(),
        m.stride(0), m.stride(1),
        scale.stride(0), scale.stride(1),
        y.stride(0), y.stride(1), y.stride(2),
        N, D, TILE=tile, D_PAD=d_pad, HAS_MEAN=mean is not None,
        num_warps=4,
    )
    return y
