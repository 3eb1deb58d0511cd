"""The one call from the entry points into the kernels (compiled CUDA or Triton).

Eagerly it is a plain function call. Under torch.compile it goes through the custom op
``torch.ops.sageattention.attention`` with a fake (meta) implementation, so
``torch.compile(fullgraph=True)`` traces a call to ``sageattn`` (quantization included) without a
graph break: the compiler sees one opaque node with known output shapes.
"""
# No `from __future__ import annotations` here: torch.library.custom_op reads the annotations
# of _attention_impl at import time to build the op's schema.
from contextlib import nullcontext
from typing import Optional

import torch

from . import _checks


def on_device(t: torch.Tensor):
    """Make t's GPU current while kernels launch (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else nullcontext()


def _attention_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    attn_mask: Optional[torch.Tensor],  # noqa: FA100 - runtime annotation
                    sm_scale: float, tensor_layout: str,
                    is_causal: bool, smooth_k: bool, smooth_v: bool, qk_quant_gran: str,
                    pv_fp8: bool, pv_accum: str, backend: str,
                    return_lse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # "cuda": the compiled kernels where they can run; "cuda_sm90": the same, with the wgmma
    # kernel where it can run; "wgmma": the wgmma kernel where it can run, else Triton (on
    # Hopper, the mma.sync kernels lose to Triton). Otherwise Triton.
    if backend in ("cuda", "cuda_sm90", "wgmma"):
        from . import cuda_forward

        runs = cuda_forward.unsupported_reason(q, k, v, attn_mask=attn_mask,
                                               qk_quant_gran=qk_quant_gran, pv_fp8=pv_fp8,
                                               tensor_layout=tensor_layout) is None
        if runs and backend == "wgmma":
            runs = cuda_forward.runs_wgmma(q, pv_fp8=pv_fp8, pv_accum=pv_accum,
                                           masked=attn_mask is not None)
        if runs:
            with on_device(q):
                out, lse = cuda_forward.attention_forward(
                    q, k, v, sm_scale=sm_scale, tensor_layout=tensor_layout, is_causal=is_causal,
                    smooth_k=smooth_k, smooth_v=smooth_v, qk_quant_gran=qk_quant_gran,
                    pv_fp8=pv_fp8, pv_accum=pv_accum, return_lse=return_lse, attn_mask=attn_mask,
                    wgmma=backend != "cuda")
            return out, (lse if return_lse else torch.empty((0,), dtype=torch.float32,
                                                             device=q.device))
    from .triton.forward import attention_forward  # Triton is imported on first use only

    nhd = tensor_layout == "NHD"
    qh, kh, vh = (t.transpose(1, 2) if nhd else t for t in (q, k, v))
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    with on_device(q):
        lse = attention_forward(
            qh, kh, vh, out.transpose(1, 2) if nhd else out, sm_scale=sm_scale,
            is_causal=is_causal, smooth_k=smooth_k, smooth_v=smooth_v, q_gran=qk_quant_gran,
            k_gran=qk_quant_gran, pv_fp8=pv_fp8, attn_mask=attn_mask, return_lse=return_lse,
            pv_accum=pv_accum)
    if lse is None:
        lse = torch.empty((0,), dtype=torch.float32, device=q.device)
    return out, lse


def _fake(q, k, v, attn_mask, sm_scale, tensor_layout, is_causal, smooth_k, smooth_v,
          qk_quant_gran, pv_fp8, pv_accum, backend, return_lse):
    B = q.shape[0]
    Hq, Nq = (q.shape[2], q.shape[1]) if tensor_layout == "NHD" else (q.shape[1], q.shape[2])
    lse_shape = (B, Hq, Nq) if return_lse else (0,)
    return q.new_empty(q.shape), q.new_empty(lse_shape, dtype=torch.float32)


_custom_op = None
if hasattr(torch.library, "custom_op"):  # torch >= 2.4
    _custom_op = torch.library.custom_op("sageattention::attention", mutates_args=())(
        _attention_impl)
    _custom_op.register_fake(_fake)


def attention(q, k, v, attn_mask, sm_scale, tensor_layout, is_causal, smooth_k, smooth_v,
              qk_quant_gran, pv_fp8, pv_accum, backend, return_lse):
    """(out, lse) for checked inputs; lse is an empty tensor when return_lse is False."""
    args = (q, k, v, attn_mask, float(sm_scale), tensor_layout, bool(is_causal), bool(smooth_k),
            bool(smooth_v), qk_quant_gran, bool(pv_fp8), pv_accum, backend, bool(return_lse))
    # Tensor subclasses (torch.distributed's AsyncCollectiveTensor from the all-gathers of
    # diffusers' ring attention, ...) have no storage of their own for a kernel to read: the
    # dispatcher unwraps them (waiting for the collective) before the op runs.
    wrapped = any(type(t) not in _PLAIN for t in args[:4] if torch.is_tensor(t))
    if _custom_op is not None and (wrapped or _checks.compiling()):
        # Inference only: detached inputs keep AOTAutograd from asking the op for a backward
        # when the model is compiled with parameters that require grad.
        return _custom_op(*(a.detach() if torch.is_tensor(a) else a for a in args))
    return _attention_impl(*args)  # eager: skip the dispatcher's per-call cost


_PLAIN = (torch.Tensor, torch.nn.Parameter)
