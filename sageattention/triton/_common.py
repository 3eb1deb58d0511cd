"""Triton helpers shared by the quantization and attention kernels.

The group formulas mirror :mod:`sageattention.granularity` (documented there); the mode codes
are the same integers.
"""
import triton
import triton.language as tl

# MODE is one of sageattention.granularity's codes, written as literals below:
# 0 MODE_TILE, 1 MODE_WARP, 2 MODE_THREAD_Q, 3 MODE_THREAD_K (a test checks the codes).
# An all-zero group still needs a finite, non-zero scale.
AMAX_FLOOR = tl.constexpr(1e-30)


@triton.jit
def group_id(rows, MODE: tl.constexpr, TILE: tl.constexpr):
    """Scale slot of each row index (see sageattention.granularity)."""
    if MODE == 0:
        g = rows // TILE
    elif MODE == 1:
        g = rows // 32
    elif MODE == 2:
        g = (rows // 32) * 8 + rows % 8
    else:
        g = (rows // 64) * 4 + (rows % 8) // 2
    return g


@triton.jit
def finite_rows(x):
    """(x with NaN and +-inf replaced by 0, per-row flag: the row held such a value)."""
    ok = (x == x) & (tl.abs(x) < float("inf"))  # noqa: PLR0124 - x != x only for NaN
    bad = tl.min(ok.to(tl.int32), 1) == 0
    return tl.where(ok, x, 0.0), bad


@triton.jit
def group_absmax(row_amax, ROWS: tl.constexpr, MODE: tl.constexpr):
    """Per-row vector holding the max |x| of the row's group.

    ROWS is the tile height; a tile always holds whole groups (MODE_TILE: the whole tile;
    MODE_WARP / MODE_THREAD_Q: ROWS % 32 == 0; MODE_THREAD_K: ROWS % 64 == 0).
    """
    if MODE == 0:
        g = tl.max(row_amax, 0)
        out = tl.zeros_like(row_amax) + g
    elif MODE == 1:
        r = tl.reshape(row_amax, (ROWS // 32, 32))
        g = tl.max(r, 1)
        out = tl.reshape(tl.broadcast_to(g[:, None], (ROWS // 32, 32)), (ROWS,))
    elif MODE == 2:
        r = tl.reshape(row_amax, (ROWS // 32, 4, 8))
        g = tl.max(r, 1)
        out = tl.reshape(tl.broadcast_to(g[:, None, :], (ROWS // 32, 4, 8)), (ROWS,))
    else:
        r = tl.reshape(row_amax, (ROWS // 64, 8, 4, 2))
        g = tl.max(tl.max(r, 3), 1)
        out = tl.reshape(tl.broadcast_to(g[:, None, :, None], (ROWS // 64, 8, 4, 2)), (ROWS,))
    return out


@triton.jit
def quantize_rows(x, ROWS: tl.constexpr, MODE: tl.constexpr):
    """Symmetric INT8 quantization of a [ROWS, D] fp32 tile.

    Returns (int8 tile, per-row max|x| of the row's group). The scale is amax / 127; values are
    rounded half away from zero, the formula sageattention.reference uses too.
    """
    amax = group_absmax(tl.max(tl.abs(x), 1), ROWS, MODE)
    amax = tl.maximum(amax, AMAX_FLOOR)
    y = x * (127.0 / amax)[:, None]
    y = tl.where(y >= 0, y + 0.5, y - 0.5)
    y = tl.minimum(tl.maximum(y, -127.0), 127.0)
    return y.to(tl.int8), amax
