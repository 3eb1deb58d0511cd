"""Scale layouts of the INT8 quantization of Q and K.

One symmetric INT8 scale is shared by a *group* of rows (tokens). The group of row ``r`` (its
index inside the sequence, counted from 0) is given by the formulas below; scales are stored
in a float32 tensor ``[B, H, n_groups]`` indexed by that group id. The Triton kernels, the
future CUDA kernels and :mod:`sageattention.reference` all use exactly these formulas, so a
scale tensor produced by one can be read by the others.

========== ======================================= =====================================
granularity Q (rows of a query tile)             K (rows of a key tile)
========== ======================================= =====================================
per_block  ``r // BLOCK_M`` (the kernel's query     ``r // 64``
           tile, 128 rows unless the kernel says
           otherwise)
per_warp   ``r // 32`` (the rows one warp owns in   ``r // 64`` (a key tile is shared by
           the MMA kernels)                         all warps of the block)
per_thread ``(r // 32) * 8 + r % 8``: inside a      ``(r // 64) * 4 + (r % 8) // 2``:
           warp's 32 rows, the rows an m16n8k32     inside a 64-row key tile, the columns
           accumulator fragment gives one thread    (lane % 4) * 2 and +1 of every n8 tile
           (lane // 4, +8, +16, +24) share a scale  that one thread holds share a scale
========== ======================================= =====================================

The scale stored for Q already contains ``sm_scale * log2(e)``: the kernels compute scores in
base 2 and never multiply by ``sm_scale`` again.
"""
from __future__ import annotations

import torch

GRANULARITIES = ("per_block", "per_warp", "per_thread")

K_BLOCK = 64  # rows per key tile of the K scale layouts
WARP_ROWS = 32  # query rows per warp in the MMA kernels

# Integer codes shared with the Triton kernels (tl.constexpr arguments).
MODE_TILE = 0  # one scale per tile of TILE rows (per_block Q/K, per_warp K)
MODE_WARP = 1  # one scale per 32 rows (per_warp Q)
MODE_THREAD_Q = 2  # per_thread Q
MODE_THREAD_K = 3  # per_thread K


def q_mode(gran: str) -> int:
    return {"per_block": MODE_TILE, "per_warp": MODE_WARP, "per_thread": MODE_THREAD_Q}[gran]


def k_mode(gran: str) -> int:
    return {"per_block": MODE_TILE, "per_warp": MODE_TILE, "per_thread": MODE_THREAD_K}[gran]


def group_ids(n_rows: int, mode: int, tile: int, device=None) -> torch.Tensor:
    """Group id of every row 0..n_rows-1 (int64), the same formula the kernels use."""
    r = torch.arange(n_rows, device=device)
    if mode == MODE_TILE:
        return r // tile
    if mode == MODE_WARP:
        return r // WARP_ROWS
    if mode == MODE_THREAD_Q:
        return (r // WARP_ROWS) * 8 + r % 8
    if mode == MODE_THREAD_K:
        return (r // K_BLOCK) * 4 + (r % 8) // 2
    raise ValueError(f"unknown quantization mode {mode}")


def n_groups(n_rows: int, mode: int, tile: int) -> int:
    """Number of scale slots needed for n_rows rows (rows padded up to a whole tile)."""
    if mode == MODE_TILE:
        return -(-n_rows // tile)
    if mode == MODE_WARP:
        return -(-n_rows // WARP_ROWS)
    if mode == MODE_THREAD_Q:
        return -(-n_rows // WARP_ROWS) * 8
    if mode == MODE_THREAD_K:
        return -(-n_rows // K_BLOCK) * 4
    raise ValueError(f"unknown quantization mode {mode}")
