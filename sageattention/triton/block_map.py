"""Which key tiles of a masked call need the mask: one pass over the mask, before attention.

For every (mask batch, mask head, query tile) this writes two lists of key-tile indices:

- *full*: every key of the tile is visible to every query row of the tile (mask true or 0,
  inside [0, Nk), causally visible). The attention kernel runs these tiles exactly as an
  unmasked call does and never reads the mask there.
- *partial*: some key is visible and some is not, or the tile holds a value that must reach
  the output unchanged (a NaN or +inf in a float mask, a non-finite key). These tiles load
  the mask and apply it element by element.

Tiles in neither list have no visible key and are skipped: their softmax weights are exactly
0, so skipping them changes nothing. Key padding, the common mask of ComfyUI and KJNodes,
becomes full tiles up to the padding, one partial tile at its edge, and no work behind it:
such a call costs the unmasked call on the unpadded keys plus this one read of the mask.

The lists are made for the broadcast shape of the mask: a [1, 1, Nq, Nk] mask is read once,
not once per head, and a mask that is the same for every query row has one set of lists for
all query tiles. Layout of the int32 buffer: [mask batch, mask head, query tile, 2, n_kb + 1]
where [..., 0, :] is the full list and [..., 1, :] the partial list, each starting with its
length.

The compiled kernels (64-key tiles) also take the mask as bits from this pass
(``with_bits``): one int64 per query row and key tile, bit set where the key is visible to the
row (mask true or not -inf, key below Nk and, causally, not after the row), in the order of the
kernel's score registers: bit 16 * t + 2 * j + c is key 8 * j + 2 * t + c of the tile, so
thread t of a row reads its 16 keys as one int16 and tests each with a constant (no per-score
load, index or bounds arithmetic in the kernel). Rows past Nq have no bit set. The bits are
exact for every partial tile of a bool mask and for a float mask's tiles holding only 0 and
-inf; a float mask's other partial tiles need its values, and with_bits marks their entries in
the partial list with FLOAT_TILE (bit 30 of the entry) for the kernel's element-wise step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

MAX_GRID_Y = 65535  # CUDA's limit on grid dimensions y and z (forward.py uses it too)
FLOAT_TILE = 1 << 30  # with_bits: a partial-list entry that needs the float mask's values


@dataclass(frozen=True)
class BlockLists:
    lists: torch.Tensor  # int32, layout in the module docstring
    stride_b: int  # element strides of lists for the attention kernel's (batch, head) index;
    stride_h: int  # 0 where the mask broadcasts over that dimension
    stride_m: int  # per query tile; 0 when every query row has the same mask (and no causality)
    n_kb: int  # key tiles per list (the capacity); a query tile's two lists take 2 * (n_kb + 1)
    # with_bits: int64 [mask batch, mask head, rows, n_kb], the visibility bits (module
    # docstring); rows is 1 when every query row has the same mask. None otherwise.
    bits: torch.Tensor | None = None


COMPACT_CHUNK = 1024  # key tiles one step of the compaction handles


@triton.jit
def _tile_kinds_kernel(
    MASK, KBAD, KINDS, BITS,
    stride_mb, stride_mh, stride_mm, stride_mn, stride_kbad,
    N_ROWS, HM, N_QB, N_Q, N_K, N_KB,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    MASK_KIND: tl.constexpr, IS_CAUSAL: tl.constexpr, WITH_BITS: tl.constexpr,
):
    """One program per (key tile, query tile, mask batch and head): every tile at once, so the
    pass runs at the memory's speed however few query tiles there are. Writes the tile's kind:
    0 empty, 1 full, 2 partial whose visible keys see 0 (bool: true), 3 other partial, and with
    WITH_BITS its rows' visibility bits (module docstring)."""
    kb = tl.program_id(0)
    row = tl.program_id(1) + tl.program_id(2) * tl.num_programs(1)  # (map, query tile)
    if row >= N_ROWS:
        return
    pid_m = row % N_QB
    bh = row // N_QB
    b = (bh // HM).to(tl.int64)
    h = (bh % HM).to(tl.int64)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = offs_m < N_Q
    # The attention kernel's causal loop ends at the tile holding the tile's last query row;
    # later tiles are never visited (nothing, not even a non-finite key, reaches the rows).
    if IS_CAUSAL:
        in_loop = kb * BLOCK_N < tl.minimum(N_K, start_m + BLOCK_M)
    else:
        in_loop = kb * BLOCK_N < N_K
    inside = row_ok[:, None] & (offs_n < N_K)[None, :] & in_loop
    m = tl.load(MASK + b * stride_mb + h * stride_mh + offs_m[:, None].to(tl.int64) * stride_mm
                + offs_n[None, :].to(tl.int64) * stride_mn, mask=inside)
    if MASK_KIND == 1:
        visible = m != 0
        plain = visible  # attended with weight exp(score): what the unmasked kernel does
    else:
        mf = m.to(tl.float32)
        visible = mf != float("-inf")  # NaN and +inf count: they must reach their row
        plain = mf == 0.0
    if IS_CAUSAL:
        seen = offs_n[None, :] <= offs_m[:, None]
        visible = visible & seen
        plain = plain & seen
    any_visible = tl.max((visible & inside).to(tl.int32)) > 0
    # Rows past Nq are computed and discarded by the kernel, so only real rows count.
    not_plain = tl.sum((row_ok[:, None] & ~(plain & inside)).to(tl.int32))
    full = (not_plain == 0) & ((kb + 1) * BLOCK_N <= N_K)
    # A non-finite key must make its rows NaN as in SDPA, even where the mask hides it.
    kbad = tl.load(KBAD + b * stride_kbad + kb)
    partial = ~full & in_loop & (any_visible | (kbad != kbad))  # noqa: PLR0124 - NaN test
    if MASK_KIND == 1:
        needs_values = False
    else:
        # A bias other than 0 on a score the tile attends to (NaN and +inf included).
        needs_values = tl.max((visible & inside & (mf != 0.0)).to(tl.int32)) > 0
    kind = tl.where(full, 1, tl.where(partial, tl.where(needs_values, 3, 2), 0))
    tl.store(KINDS + row.to(tl.int64) * N_KB + kb, kind.to(tl.int8))
    if WITH_BITS:
        n = tl.arange(0, BLOCK_N)
        pos = 16 * ((n % 8) // 2) + 2 * (n // 8) + n % 2  # the kernel's register order
        words = tl.sum((visible & inside).to(tl.int64) << pos[None, :].to(tl.int64), axis=1)
        # Rows of the map are (mask batch and head, query row); one row for all queries when
        # they share the mask (N_QB == 1 and the mask's row stride 0: row 0 stands for all).
        rows = bh.to(tl.int64) * (N_QB * BLOCK_M) + offs_m
        tl.store(BITS + rows * N_KB + kb, words)


@triton.jit
def _compact_kernel(KINDS, LISTS, N_ROWS, N_KB, CHUNK: tl.constexpr, MARK_FLOAT: tl.constexpr):
    """The full and the partial tiles of one query tile, in key order, each list led by its
    length; MARK_FLOAT: partial tiles that need the mask's values carry FLOAT_TILE."""
    row = (tl.program_id(0) + tl.program_id(1) * tl.num_programs(0)).to(tl.int64)
    if row >= N_ROWS:
        return
    kinds = KINDS + row * N_KB
    out = LISTS + row * (2 * (N_KB + 1))
    n_full = 0
    n_part = 0
    for c in range(0, N_KB, CHUNK):
        kb = c + tl.arange(0, CHUNK)
        kind = tl.load(kinds + kb, mask=kb < N_KB, other=0)
        full = kind == 1
        part = kind >= 2
        entry = kb
        if MARK_FLOAT:
            entry = tl.where(kind == 3, kb | 1073741824, kb)  # FLOAT_TILE
        tl.store(out + n_full + tl.cumsum(full.to(tl.int32), 0), kb, mask=full)
        tl.store(out + (N_KB + 1) + n_part + tl.cumsum(part.to(tl.int32), 0), entry, mask=part)
        n_full += tl.sum(full.to(tl.int32))
        n_part += tl.sum(part.to(tl.int32))
    tl.store(out, n_full)
    tl.store(out + (N_KB + 1), n_part)


def _grid_rows(n_rows: int) -> tuple:
    """(y, z) grid extents for n_rows programs (y is capped at CUDA's 65535)."""
    return min(n_rows, MAX_GRID_Y), triton.cdiv(n_rows, MAX_GRID_Y)


BITS_BLOCK_N = 64  # the key tile of the visibility bits: one int64 per row and tile


def block_lists(attn_mask: torch.Tensor, k_scales: torch.Tensor, *, block_m: int, block_n: int,
                is_causal: bool, scales_per_tile: int | None = None,
                with_bits: bool = False) -> BlockLists:
    """Lists for attn_mask ([B, H, Nq, Nk], a broadcast view) and the K scales of one attention
    call ([B, Hkv, S] contiguous, NaN for a non-finite key): one per key by default (the Triton
    path), or scales_per_tile consecutive ones per key tile of block_n keys (the CUDA path's
    group scales). with_bits: also the visibility bits, and FLOAT_TILE on the partial tiles of
    a float mask that need its values (block_n must be 64; for the compiled kernels)."""
    B, H, Nq, Nk = attn_mask.shape
    smb, smh, smm, smn = attn_mask.stride()
    bm = 1 if smb == 0 else B
    hm = 1 if smh == 0 else H
    # A mask that is the same for every query row (key padding given as [B, 1, 1, Nk], expanded)
    # has one set of lists for all query tiles, unless causality makes them differ.
    shared_rows = smm == 0 and not is_causal
    n_qb = 1 if shared_rows else triton.cdiv(Nq, block_m)
    n_kb = triton.cdiv(Nk, block_n)
    # One value per (batch, key tile), NaN where any head has a non-finite key there (amax
    # keeps NaN). Folding the heads (and the batch, for a mask shared by the batch) only sends
    # more tiles to the exact partial path.
    if attn_mask.numel() == 0:
        # No (batch, head) pair to run: the attention kernel launches no program either, and
        # an expanded view of nothing has no memory to read.
        lists = torch.zeros((1, 1, 1, 2, n_kb + 1), dtype=torch.int32, device=attn_mask.device)
        return BlockLists(lists, stride_b=0, stride_h=0, stride_m=0, n_kb=n_kb)
    per_tile = block_n if scales_per_tile is None else scales_per_tile
    kbad = k_scales.reshape(B, -1, k_scales.shape[-1] // per_tile, per_tile).amax(dim=(1, 3))
    if bm == 1:
        kbad = kbad.amax(dim=0, keepdim=True)
    n_rows = bm * hm * n_qb
    kinds = torch.empty((n_rows, n_kb), dtype=torch.int8, device=attn_mask.device)
    bits = None
    if with_bits:
        if block_n != BITS_BLOCK_N:
            raise ValueError(f"block_lists: bits need key tiles of {BITS_BLOCK_N}, not {block_n}")
        # Every row of every visited query tile is written (rows past Nq with no bit set).
        bits = torch.empty((bm, hm, n_qb * block_m, n_kb), dtype=torch.int64,
                           device=attn_mask.device)
    _tile_kinds_kernel[(n_kb, *_grid_rows(n_rows))](
        attn_mask, kbad, kinds, kinds if bits is None else bits, smb, smh, smm, smn,
        kbad.stride(0), n_rows, hm, n_qb, Nq, Nk, n_kb,
        BLOCK_M=block_m, BLOCK_N=block_n, MASK_KIND=1 if attn_mask.dtype == torch.bool else 2,
        IS_CAUSAL=bool(is_causal), WITH_BITS=bits is not None, num_warps=4,
    )
    if bits is not None and shared_rows:
        bits = bits[:, :, :1].contiguous()  # row 0 of the one query tile stands for every row
    lists = torch.empty((bm, hm, n_qb, 2, n_kb + 1), dtype=torch.int32, device=attn_mask.device)
    _compact_kernel[_grid_rows(n_rows)](kinds, lists, n_rows, n_kb, CHUNK=COMPACT_CHUNK,
                                        MARK_FLOAT=with_bits and attn_mask.dtype != torch.bool,
                                        num_warps=4)
    row = 2 * (n_kb + 1)
    return BlockLists(lists, stride_b=0 if bm == 1 else hm * n_qb * row,
                      stride_h=0 if hm == 1 else n_qb * row, stride_m=0 if shared_rows else row,
                      n_kb=n_kb, bits=bits)


__all__ = ["FLOAT_TILE", "BlockLists", "block_lists"]
