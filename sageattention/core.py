"""The six public entry points (signatures and defaults of the SageAttention 2.2.0 API).

Each entry point checks its arguments, views the inputs as [B, H, N, D] without copying,
and runs the compiled CUDA kernels (the ``*_cuda`` entry points, and ``sageattn`` where
sageattention.dispatch says so) or the Triton kernels (everything else, and whatever the CUDA
kernels do not cover: sageattention.cuda_forward.unsupported_reason).
Where the original ignores an argument (``sageattn``'s kwargs, masks outside one path), this
package honours it; docs/api.md lists every difference.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import torch

from . import _checks
from .dispatch import Plan, default_plan, has_fp8_mma
from .launch import attention, on_device

_FP16_ACCUM = ("fp16", "fp16+fp32", "fp32")
_FP8_ACCUM = ("fp32", "fp32+fp32", "fp32+fp16")
_QK_GRANS = ("per_warp", "per_thread")

# Keyword arguments downstream code passes that are understood here; anything else gets a
# one-time warning naming it (and is otherwise ignored, as the original does).
_SDPA_KWARGS = ("attn_mask", "dropout_p", "scale", "enable_gqa")


def _run(q, k, v, *, tensor_layout, is_causal, sm_scale, smooth_k, return_lse,
         plan: Plan | Callable[[int, int], Plan], attn_mask=None, smooth_v=False):
    _checks.check_qkv(q, k, v, rank=4)
    layout = _checks.check_layout(tensor_layout)
    is_causal = _checks.check_flag("is_causal", is_causal)
    smooth_k = _checks.check_flag("smooth_k", smooth_k)
    smooth_v = _checks.check_flag("smooth_v", smooth_v)
    return_lse = _checks.check_flag("return_lse", return_lse)
    q, k, v = _checks.unit_last_stride(q, k, v)
    qh, kh, vh = (t.transpose(1, 2) if layout == "NHD" else t for t in (q, k, v))
    _checks.check_shapes_bhnd(qh, kh, vh)
    B, Hq, Nq, D = qh.shape
    scale = _checks.check_sm_scale(sm_scale, D)
    mask = _checks.check_mask(attn_mask, qh.shape, kh.shape[2], q.device, q.dtype)

    if callable(plan):  # chosen from the call's size (sageattn)
        plan = plan(D, B * Hq * Nq * kh.shape[2])
    if Nq == 0:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty((B, Hq, 0), dtype=torch.float32, device=q.device)
        return (out, lse) if return_lse else out
    out, lse = attention(q, k, v, mask, scale, layout, is_causal, smooth_k,
                         smooth_v and plan.pv_fp8, plan.qk_quant_gran, plan.pv_fp8, plan.pv_accum,
                         plan.backend, return_lse)
    return (out, lse) if return_lse else out


def _sdpa_kwargs(kwargs: dict, sm_scale, where: str):
    """Honour the SDPA keywords a monkey-patched F.scaled_dot_product_attention receives."""
    kwargs = dict(kwargs)
    attn_mask = kwargs.pop("attn_mask", None)
    dropout_p = kwargs.pop("dropout_p", 0.0)
    scale = kwargs.pop("scale", None)
    kwargs.pop("enable_gqa", None)  # grouped-query attention is always on
    if dropout_p:
        _checks.warn_once(f"dropout:{where}", f"{where}: dropout_p={dropout_p} is ignored "
                          "(sageattention is an inference kernel and applies no dropout)")
    if sm_scale is None and scale is not None:
        sm_scale = scale
    return attn_mask, sm_scale, kwargs


def _warn_unknown(kwargs: dict, where: str) -> None:
    if kwargs:
        names = ", ".join(sorted(kwargs))
        _checks.warn_once(f"kw:{where}:{names}", f"{where}: ignoring unknown keyword argument(s) "
                          f"{names}")


def _kernel_entry_kwargs(kwargs: dict, sm_scale, where: str):
    """(attn_mask, sm_scale) for the kernel-specific entry points, which know no other keyword."""
    attn_mask, sm_scale, rest = _sdpa_kwargs(kwargs, sm_scale, where)
    _warn_unknown(rest, where)
    return attn_mask, sm_scale


def sageattn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    return_lse: bool = False,
    attn_mask: torch.Tensor | None = None,
    **kwargs: Any,
):
    """Quantized attention on the fastest path for this GPU.

    attn_mask: bool (True = attend) or additive float, broadcastable to [B, H, Nq, Nk]. It is a
    named parameter (after the 2.2.0 ones) because ComfyUI sends masked calls only to a sageattn
    whose signature names it. Honours, when passed as keywords: smooth_k, smooth_v,
    qk_quant_gran ("per_block" | "per_warp" | "per_thread"), pv_accum_dtype, and the SDPA
    keywords scale, dropout_p (must be 0; warned otherwise) and enable_gqa. Other keywords are
    ignored with a one-time warning.
    """
    _, sm_scale, kwargs = _sdpa_kwargs(kwargs, sm_scale, "sageattn")
    smooth_k = kwargs.pop("smooth_k", True)
    smooth_v = kwargs.pop("smooth_v", False)
    gran = kwargs.pop("qk_quant_gran", None)
    accum = kwargs.pop("pv_accum_dtype", None)
    _warn_unknown(kwargs, "sageattn")
    if gran is not None:
        gran = _checks.check_choice("qk_quant_gran", gran, ("per_block",) + _QK_GRANS)
    if accum is not None:
        # Either family is accepted: the caller cannot know which path this GPU and size get.
        _checks.check_choice("pv_accum_dtype", accum, tuple(dict.fromkeys(_FP16_ACCUM + _FP8_ACCUM)))

    def plan_for(head_dim: int, scores: int) -> Plan:
        plan = default_plan(q.device, head_dim, scores)
        if gran is not None:
            plan = plan.with_gran(gran)
        if accum is not None and accum in (_FP8_ACCUM if plan.pv_fp8 else _FP16_ACCUM):
            plan = plan.with_accum(accum)
        return plan

    return _run(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=sm_scale,
                smooth_k=smooth_k, smooth_v=smooth_v, return_lse=return_lse, plan=plan_for,
                attn_mask=attn_mask)


def sageattn_qk_int8_pv_fp16_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    quantization_backend: str = "triton",
    is_causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    sm_scale: float | None = None,
    smooth_k: bool = True,
    return_lse: bool = False,
    **kwargs: Any,
):
    """INT8 Q·Kᵀ and FP16 P·V with FP32 accumulation, in Triton.

    The original uses one scale per block of 128 query / 64 key rows; this one uses the finer
    per_thread groups (sageattention.granularity), which cost nothing extra here because Q is
    quantized inside the attention kernel (docs/api.md). ``quantization_backend`` is accepted
    ("triton" or "cuda"); quantization always runs in Triton.
    """
    _checks.check_choice("quantization_backend", quantization_backend, ("triton", "cuda"))
    kw_mask, sm_scale = _kernel_entry_kwargs(kwargs, sm_scale, "sageattn_qk_int8_pv_fp16_triton")
    mask = attn_mask if attn_mask is not None else kw_mask
    return _run(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=sm_scale,
                smooth_k=smooth_k, return_lse=return_lse, attn_mask=mask,
                plan=Plan(pv_fp8=False, qk_quant_gran="per_thread"))


def sageattn_qk_int8_pv_fp16_cuda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    qk_quant_gran: str = "per_thread",
    sm_scale: float | None = None,
    pv_accum_dtype: str = "fp32",
    smooth_k: bool = True,
    smooth_v: bool = False,
    return_lse: bool = False,
    **kwargs: Any,
):
    """INT8 Q·Kᵀ (per_warp / per_thread scales) and FP16 P·V on the compiled mma.sync kernel.

    pv_accum_dtype "fp32" accumulates P·V in fp32; "fp16+fp32" and "fp16" accumulate each tile
    of 64 keys with the fp16-accumulating MMA and the tiles in fp32 (bf16 inputs always use
    fp32). Without the compiled kernel for this GPU the Triton kernel runs (fp32 accumulation).
    """
    _checks.check_choice("qk_quant_gran", qk_quant_gran, _QK_GRANS)
    _checks.check_choice("pv_accum_dtype", pv_accum_dtype, _FP16_ACCUM)
    attn_mask, sm_scale = _kernel_entry_kwargs(kwargs, sm_scale, "sageattn_qk_int8_pv_fp16_cuda")
    return _run(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=sm_scale,
                smooth_k=smooth_k, smooth_v=smooth_v, return_lse=return_lse, attn_mask=attn_mask,
                plan=Plan(pv_fp8=False, qk_quant_gran=qk_quant_gran, pv_accum=pv_accum_dtype,
                          backend="cuda"))


def _fp8_plan(q, qk_quant_gran: str, pv_accum: str, where: str, backend: str = "cuda") -> Plan:
    if torch.is_tensor(q) and q.is_cuda and not has_fp8_mma(q.device):
        _checks.warn_once(f"fp8:{where}", f"{where}: this GPU has no FP8 tensor cores (needs "
                          "compute capability 8.9 or newer); running FP16 P·V instead")
        return Plan(pv_fp8=False, qk_quant_gran=qk_quant_gran, pv_accum="fp32", backend="cuda")
    return Plan(pv_fp8=True, qk_quant_gran=qk_quant_gran, pv_accum=pv_accum, backend=backend)


def sageattn_qk_int8_pv_fp8_cuda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    qk_quant_gran: str = "per_thread",
    sm_scale: float | None = None,
    pv_accum_dtype: str = "fp32+fp16",
    smooth_k: bool = True,
    smooth_v: bool = False,
    return_lse: bool = False,
    **kwargs: Any,
):
    """INT8 Q·Kᵀ and FP8 (e4m3) P·V with per-channel V scales.

    Runs the compiled mma.sync kernel (sm89+). pv_accum_dtype: "fp32" accumulates in the FP8
    MMA's own fp32 accumulator (about 22 bits kept on Ada/Hopper), "fp32+fp32" starts a fresh
    accumulator per 64-key tile and adds it into fp32 registers, "fp32+fp16" uses the
    fp16-accumulating FP8 MMA per tile with V scaled to +-2.25 (fastest). Without the compiled
    kernel the Triton FP8 kernel runs; on GPUs without FP8 tensor cores FP16 P·V runs with a
    warning.
    """
    _checks.check_choice("qk_quant_gran", qk_quant_gran, _QK_GRANS)
    _checks.check_choice("pv_accum_dtype", pv_accum_dtype, _FP8_ACCUM)
    attn_mask, sm_scale = _kernel_entry_kwargs(kwargs, sm_scale, "sageattn_qk_int8_pv_fp8_cuda")
    return _run(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=sm_scale,
                smooth_k=smooth_k, smooth_v=smooth_v, return_lse=return_lse, attn_mask=attn_mask,
                plan=_fp8_plan(q, qk_quant_gran, pv_accum_dtype, "sageattn_qk_int8_pv_fp8_cuda"))


def sageattn_qk_int8_pv_fp8_cuda_sm90(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    qk_quant_gran: str = "per_thread",
    sm_scale: float | None = None,
    pv_accum_dtype: str = "fp32+fp32",
    smooth_k: bool = True,
    return_lse: bool = False,
    **kwargs: Any,
):
    """The Hopper entry point of the FP8 P·V attention: on H100/H200 the wgmma kernel (unit
    _C_sm90, wheels whose toolkit builds sm_90a) for unmasked calls with pv_accum_dtype "fp32"
    or "fp32+fp32"; otherwise the mma.sync kernel of sageattn_qk_int8_pv_fp8_cuda."""
    _checks.check_choice("qk_quant_gran", qk_quant_gran, _QK_GRANS)
    _checks.check_choice("pv_accum_dtype", pv_accum_dtype, _FP8_ACCUM)
    attn_mask, sm_scale = _kernel_entry_kwargs(kwargs, sm_scale, "sageattn_qk_int8_pv_fp8_cuda_sm90")
    return _run(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, sm_scale=sm_scale,
                smooth_k=smooth_k, return_lse=return_lse, attn_mask=attn_mask,
                plan=_fp8_plan(q, qk_quant_gran, pv_accum_dtype,
                               "sageattn_qk_int8_pv_fp8_cuda_sm90", backend="cuda_sm90"))


def sageattn_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    is_causal: bool = False,
    sm_scale: float | None = None,
    smooth_k: bool = True,
    **kwargs: Any,
):
    """Attention over packed sequences: q [total_q, Hq, D], k/v [total_k, Hkv, D].

    Sequence i is q[cu_seqlens_q[i]:cu_seqlens_q[i+1]] against k/v[cu_seqlens_k[i]:...];
    is_causal is top-left aligned inside each sequence, like torch SDPA. ``return_lse=True``
    (keyword) also returns the LSE as fp32 [Hq, total_q], the packed layout of flash-attn.
    """
    return_lse = _checks.check_flag("return_lse", kwargs.pop("return_lse", False))
    attn_mask, sm_scale, kwargs = _sdpa_kwargs(kwargs, sm_scale, "sageattn_varlen")
    if attn_mask is not None:
        raise ValueError("sageattn_varlen takes no attn_mask (packed sequences are already "
                         "separated); for padded batches with masks use sageattn")
    _warn_unknown(kwargs, "sageattn_varlen")
    _checks.check_qkv(q, k, v, rank=3)
    is_causal = _checks.check_flag("is_causal", is_causal)
    smooth_k = _checks.check_flag("smooth_k", smooth_k)
    q, k, v = _checks.unit_last_stride(q, k, v)
    qh, kh, vh = (t.transpose(0, 1)[None] for t in (q, k, v))  # [1, H, total, D] views
    _checks.check_shapes_bhnd(qh, kh, vh)
    cq = _checks.check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], q.device)
    ck = _checks.check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], q.device)
    if len(cq) != len(ck):
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k must describe the same number of "
                         f"sequences, got {len(cq) - 1} and {len(ck) - 1}")
    for name, cu, given in (("max_seqlen_q", cq, max_seqlen_q), ("max_seqlen_k", ck, max_seqlen_k)):
        longest = max(b - a for a, b in zip(cu, cu[1:]))
        try:
            value = operator.index(given.item() if torch.is_tensor(given) else given)
        except (TypeError, ValueError, RuntimeError):
            value = None
        if value is None or isinstance(given, bool) or value < longest:
            raise ValueError(f"{name} must be an integer >= the longest sequence ({longest}), "
                             f"got {given!r}")
    if any(b == a for a, b in zip(ck, ck[1:])) and any(
            qb > qa and kb == ka for qa, qb, ka, kb in zip(cq, cq[1:], ck, ck[1:])):
        raise ValueError("a sequence has queries but no keys (cu_seqlens_k has an empty entry)")
    scale = _checks.check_sm_scale(sm_scale, q.shape[-1])
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if q.shape[0] == 0:
        lse = torch.empty((q.shape[1], 0), dtype=torch.float32, device=q.device)
        return (out, lse) if return_lse else out
    from .triton.forward import attention_forward

    plan = default_plan(q.device, q.shape[-1])
    with on_device(q):
        lse = attention_forward(
            qh, kh, vh, out.transpose(0, 1)[None], sm_scale=scale, is_causal=is_causal,
            smooth_k=smooth_k, q_gran="per_block", k_gran="per_block", pv_fp8=plan.pv_fp8,
            pv_accum=plan.pv_accum, return_lse=return_lse,
            # The checked values, contiguous int32 (a strided view would read other offsets).
            cu_seqlens_q=torch.tensor(cq, dtype=torch.int32, device=q.device),
            cu_seqlens_k=torch.tensor(ck, dtype=torch.int32, device=q.device),
            max_seqlen_q=max(b - a for a, b in zip(cq, cq[1:])))
    return (out, lse[0]) if return_lse else out
