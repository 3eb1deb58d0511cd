"""INT8 Q·Kᵀ attention with FP16 (or FP8 e4m3) P·V and an online base-2 softmax.

One program computes BLOCK_M query rows of one (batch, query head). Q is quantized to INT8
inside the kernel (the tile is loaded once anyway, so a separate quantization pass over Q
would only add traffic); K arrives pre-quantized and smoothed from ``quant.quantize_int8``.

Scores are ``(q_i8 · k_i8) * q_scale * k_scale`` in base-2 units (``sm_scale * log2 e`` is in
q_scale), so the softmax uses exp2 only. Masks follow torch SDPA: a bool mask keeps True
positions, a float mask is added to the scaled scores, and ``is_causal`` keeps key j for query
i when j <= i (top-left aligned, also when Nq != Nk). A row whose keys are all masked out
yields zeros and an LSE of -inf.

Non-finite inputs give NaN where torch SDPA gives NaN, never plausible numbers: a Q row holding
a NaN or an infinity yields a NaN row; a key holding one has a NaN scale (quant.quantize_int8),
so every row that reaches it (causality permitting; SDPA's masks do not stop a NaN score
either) is NaN; a NaN or +inf in a float mask makes its row NaN. The LSE of such rows is NaN.
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import _common

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
FP8_P_SCALE = tl.constexpr(448.0)  # P in [0, 1] is stored as P * 448, the e4m3 maximum


@triton.jit
def _attn_block(
    acc, l_i, m_i, q_i8, q_scale, offs_m, start_n, k_start, k_len, q_len,
    k_tile, KS, v_tile, m_rows,
    stride_vn, stride_mn,
    D,
    BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
    IS_CAUSAL: tl.constexpr, BOUNDS: tl.constexpr, MASK_KIND: tl.constexpr,
    PV_FP8: tl.constexpr, EVEN_D: tl.constexpr, FP8_ACC_EVERY: tl.constexpr,
):
    """One key block of the online softmax. BOUNDS: the block may hold keys >= k_len or,
    with IS_CAUSAL, keys after some query row: apply the element mask.

    k_tile / v_tile point at the tiles of key 0 (offsets computed once per program); each
    block adds one scalar, so the loop does no per-element 64-bit index arithmetic. m_rows
    points at key 0 of each query row of the mask: a [BLOCK_M, BLOCK_N] tile of 64-bit mask
    pointers kept across the loop would hold 64-128 registers per thread (the FP8 kernel
    spilled with it), so the masked blocks build theirs from the rows."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    tok0 = (k_start + start_n).to(tl.int64)  # first key of this block in the K/V buffers
    k = tl.load(k_tile + tok0 * D_PAD)
    k_scale = tl.load(KS + k_start + offs_n)  # one per key: its group's scale, NaN if non-finite
    # t = scores / q_scale. q_scale > 0 (the kernel moves a negative sm_scale into q_i8), so
    # the row max of the scores is q_scale * max(t) and the exponent q_scale * t - m is one
    # FMA per score instead of two multiplies and a subtraction.
    t = tl.dot(q_i8, tl.trans(k)).to(tl.float32) * k_scale[None, :]
    if MASK_KIND != 0:
        inside = (offs_m < q_len)[:, None] & (offs_n < k_len)[None, :]
        mvals = tl.load(m_rows[:, None] + offs_n[None, :].to(tl.int64) * stride_mn,
                        mask=inside)
        if MASK_KIND == 1:
            # A NaN score (a non-finite key) survives the mask, as in SDPA.
            t = tl.where((mvals != 0) | (t != t), t, float("-inf"))  # noqa: PLR0124 - NaN test
        else:
            # An additive mask is in score units: fold it in as (t * q_scale + bias) / q_scale.
            t = t + mvals.to(tl.float32) * LOG2E / q_scale[:, None]
    if BOUNDS:
        keep = (offs_n < k_len)[None, :]
        if IS_CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])
        t = tl.where(keep, t, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(t, 1) * q_scale)
    # A row with nothing visible so far keeps m = -inf; shift by 0 instead to avoid inf - inf.
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(t * q_scale[:, None] - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if PV_FP8:
        # V is stored transposed [D_pad, N_pad]; padded keys hold zeros.
        vt = tl.load(v_tile + tok0)
        p8 = (p * FP8_P_SCALE).to(tl.float8e4nv)
        if FP8_ACC_EVERY > 0:
            # Hopper's FP8 MMA accumulator keeps ~22 bits: add into FP32 every FP8_ACC_EVERY
            # products ("fp32+fp32"); 0 keeps the compiler's faster default ("fp32+fp16").
            acc = tl.dot(p8, tl.trans(vt), acc, max_num_imprecise_acc=FP8_ACC_EVERY)
        else:
            acc = tl.dot(p8, tl.trans(vt), acc)
    else:
        v_ptrs = v_tile + tok0 * stride_vn
        if BOUNDS or MASK_KIND != 0 or not EVEN_D:
            # Keys past the end must read as 0 (0 * garbage could be NaN).
            v = tl.load(v_ptrs, mask=(offs_n < k_len)[:, None] & (offs_d < D)[None, :], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_new


@triton.jit
def attention_kernel(
    Q, K8, KS, V, VS, O, LSE, KM, MASK, LISTS, CU_Q, CU_K,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_lb, stride_lh, stride_lm, N_KB,
    H, N_BH, KV_GROUP, N_Q, N_K, N_PAD, D, q_scale_mult, lse_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
    Q_MODE: tl.constexpr, IS_CAUSAL: tl.constexpr,
    MASK_KIND: tl.constexpr, PV_FP8: tl.constexpr, RETURN_LSE: tl.constexpr,
    HAS_KM: tl.constexpr, VARLEN: tl.constexpr, EVEN_D: tl.constexpr,
    FP8_ACC_EVERY: tl.constexpr,
):
    """Buffers made by sageattention.triton (K8, KS, V8 and VS on the FP8 path, LSE, KM) are
    contiguous with the shapes of forward.attention_forward, so only the strides of the
    caller's tensors (Q, V, O, MASK) are passed: fewer arguments, a cheaper launch. With a
    mask, LISTS holds block_map's full and partial key-tile lists (stride_lb, stride_lh,
    stride_lm: their strides per batch, head and query tile, 0 where the mask broadcasts;
    N_KB + 1 entries per list)."""
    # Heaviest causal tiles first: better tail balance across the grid.
    if IS_CAUSAL:
        pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    else:
        pid_m = tl.program_id(0)
    # (batch, head) pairs spill from grid axis 1 (at most 65535) into axis 2.
    pid_bh = tl.program_id(1) + tl.program_id(2) * tl.num_programs(1)
    if pid_bh >= N_BH:
        return
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    hk = h // KV_GROUP
    if VARLEN:
        q_start = tl.load(CU_Q + b).to(tl.int64)
        q_len = (tl.load(CU_Q + b + 1) - q_start).to(tl.int32)
        k_start = tl.load(CU_K + b).to(tl.int64)
        k_len = (tl.load(CU_K + b + 1) - k_start).to(tl.int32)
        bq = 0
        bk = 0
    else:
        q_start = 0
        q_len = N_Q
        k_start = 0
        k_len = N_K
        bq = b
        bk = b
    start_m = pid_m * BLOCK_M
    if start_m >= q_len:
        return
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    row_ok = offs_m < q_len
    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(Q + bq * stride_qb + h * stride_qh + q_rows[:, None] * stride_qn
                + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None] & (offs_d < D)[None, :], other=0.0).to(tl.float32)
    # A non-finite value in a Q row counts as 0, so that the rows sharing its scale group
    # quantize as usual, and gives the row a NaN scale: every score, the output and the LSE of
    # that row come out NaN with no extra work per score.
    q, q_bad = _common.finite_rows(q)
    q_i8, q_amax = _common.quantize_rows(q, BLOCK_M, Q_MODE)
    # Keep q_scale positive (and normal: 0 * -inf would be NaN) for _attn_block's max trick;
    # a negative sm_scale flips the sign of the integer values instead.
    q_i8 = tl.where(q_scale_mult < 0, -q_i8, q_i8)
    q_scale = tl.maximum(q_amax * (tl.abs(q_scale_mult) / 127.0), 1e-37)
    q_scale = tl.where(q_bad, float("nan"), q_scale)

    kv_heads = H // KV_GROUP
    kv_row = (bk * kv_heads + hk).to(tl.int64)  # index of the (batch, kv head) slab
    K8 += kv_row * N_PAD * D_PAD
    KS += kv_row * N_PAD  # one K scale per key row
    if PV_FP8:
        V += kv_row * D_PAD * N_PAD  # V8 [B, Hkv, D_pad, N_pad]
        stride_vd = N_PAD
    else:
        V += bq * stride_vb + hk * stride_vh
    if MASK_KIND != 0:
        MASK += b * stride_mb + h * stride_mh

    # Pointer tiles of key block 0, built once (64-bit where a product can be large).
    offs_bn = tl.arange(0, BLOCK_N)
    k_tile = K8 + (offs_bn[:, None] * D_PAD + offs_d[None, :])
    if PV_FP8:
        v_tile = V + (offs_d[:, None].to(tl.int64) * stride_vd + offs_bn[None, :])
    else:
        v_tile = V + (offs_bn[:, None].to(tl.int64) * stride_vn + offs_d[None, :] * stride_vd)
    m_rows = MASK + offs_m.to(tl.int64) * stride_mm

    acc = tl.zeros((BLOCK_M, D_PAD), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)

    # Key blocks [0, full_end) need no element mask; [full_end, end) do.
    if IS_CAUSAL:
        end = tl.minimum(k_len, start_m + BLOCK_M)
        full_end = tl.minimum((start_m + 1) // BLOCK_N, k_len // BLOCK_N) * BLOCK_N
    else:
        end = k_len
        full_end = (k_len // BLOCK_N) * BLOCK_N
    full_end = tl.maximum(tl.minimum(full_end, end), 0)
    if MASK_KIND != 0:
        # block_map sorted this query tile's key tiles: the full ones run as in an unmasked
        # call (no mask read), the partial ones apply the mask, the rest hold no visible key.
        lst = LISTS + b * stride_lb + h * stride_lh + pid_m.to(tl.int64) * stride_lm
        for i in range(tl.load(lst)):
            start_n = tl.load(lst + 1 + i) * BLOCK_N
            acc, l_i, m_i = _attn_block(
                acc, l_i, m_i, q_i8, q_scale, offs_m, start_n, k_start, k_len, q_len,
                k_tile, KS, v_tile, m_rows, stride_vn, stride_mn, D,
                BLOCK_N, D_PAD, IS_CAUSAL, False, 0, PV_FP8, EVEN_D, FP8_ACC_EVERY)
        lst += N_KB + 1
        for i in range(tl.load(lst)):
            start_n = tl.load(lst + 1 + i) * BLOCK_N
            acc, l_i, m_i = _attn_block(
                acc, l_i, m_i, q_i8, q_scale, offs_m, start_n, k_start, k_len, q_len,
                k_tile, KS, v_tile, m_rows, stride_vn, stride_mn, D,
                BLOCK_N, D_PAD, IS_CAUSAL, True, MASK_KIND, PV_FP8, EVEN_D, FP8_ACC_EVERY)
        # A non-finite Q row is NaN in SDPA even where the mask hides every key; the skipped
        # tiles cannot make it so, the flag can.
        l_i = tl.where(q_bad, float("nan"), l_i)
    else:
        for start_n in range(0, full_end, BLOCK_N):
            acc, l_i, m_i = _attn_block(
                acc, l_i, m_i, q_i8, q_scale, offs_m, start_n, k_start, k_len, q_len,
                k_tile, KS, v_tile, m_rows, stride_vn, stride_mn, D,
                BLOCK_N, D_PAD, IS_CAUSAL, False, MASK_KIND, PV_FP8, EVEN_D, FP8_ACC_EVERY)
        for start_n in range(full_end, end, BLOCK_N):
            acc, l_i, m_i = _attn_block(
                acc, l_i, m_i, q_i8, q_scale, offs_m, start_n, k_start, k_len, q_len,
                k_tile, KS, v_tile, m_rows, stride_vn, stride_mn, D,
                BLOCK_N, D_PAD, IS_CAUSAL, True, MASK_KIND, PV_FP8, EVEN_D, FP8_ACC_EVERY)

    if PV_FP8:
        v_scale = tl.load(VS + kv_row * D_PAD + offs_d)
        acc = acc * (v_scale / FP8_P_SCALE)[None, :]
    # No visible key: zeros. A NaN l_i (a non-finite input reached the row) stays NaN.
    empty = l_i == 0
    out = tl.where(empty[:, None], 0.0, acc / tl.where(empty, 1.0, l_i)[:, None])
    tl.store(O + bq * stride_ob + h * stride_oh + q_rows[:, None] * stride_on
             + offs_d[None, :] * stride_od, out.to(O.dtype.element_ty),
             mask=row_ok[:, None] & (offs_d < D)[None, :])
    if RETURN_LSE:
        lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * LN2)
        if HAS_KM:
            # Smoothing removed q·mean(K) from every score of the row; put it back.
            km = tl.load(KM + kv_row * D + offs_d, mask=offs_d < D, other=0.0)  # [B, Hkv, D]
            lse += tl.sum(q * km[None, :], 1) * lse_scale
        tl.store(LSE + (bq * H + h) * N_Q + q_start + offs_m, lse, mask=row_ok)  # [B, H, Nq]
