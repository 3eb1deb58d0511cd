"""Argument checks shared by the public entry points.

Every failure is a TypeError or ValueError that names the argument and says what to pass;
nothing invalid may reach a kernel (a bad index there is a CUDA crash, not an exception).
"""
from __future__ import annotations

import math
import os
import warnings
from numbers import Real

import torch

LAYOUTS = ("HND", "NHD")
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256

_warned: set = set()


def compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling")
                and compiler.is_compiling())


def warn_once(key: str, message: str) -> None:
    # Dynamo cannot trace warnings.warn: under torch.compile the warning is left to the eager
    # calls, so that fullgraph=True still traces.
    if key not in _warned and not compiling():
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=4)


def interpreter_active() -> bool:
    """Triton's interpreter (TRITON_INTERPRET=1) runs the kernels on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unit_last_stride(*tensors):
    """The tensors, a strided last dim copied: the kernels index the head dim with 32-bit offsets."""
    return tuple(t if t.stride(-1) == 1 else t.contiguous() for t in tensors)


def check_layout(tensor_layout) -> str:
    if tensor_layout not in LAYOUTS:
        raise ValueError(f"tensor_layout must be 'HND' ([B, H, N, D]) or 'NHD' ([B, N, H, D]), "
                         f"got {tensor_layout!r}")
    return tensor_layout


def check_choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_flag(name: str, value) -> bool:
    """Truthiness, as the original tests these flags (None and numpy bools included); only
    values without a truth value (strings, multi-element tensors) are rejected."""
    if value is None:
        return False
    if isinstance(value, str) or (torch.is_tensor(value) and value.numel() != 1):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    try:
        return bool(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}") from None


def check_sm_scale(sm_scale, head_dim: int) -> float:
    if sm_scale is None:
        return 1.0 / math.sqrt(head_dim)
    if torch.is_tensor(sm_scale) and sm_scale.numel() == 1:
        sm_scale = sm_scale.item()
    if not isinstance(sm_scale, Real) or isinstance(sm_scale, bool):
        raise TypeError(f"sm_scale must be a float or None, got {type(sm_scale).__name__}")
    if not math.isfinite(sm_scale):
        raise ValueError(f"sm_scale must be finite, got {sm_scale}")
    return float(sm_scale)


def check_qkv(q, k, v, rank: int) -> None:
    """Type, dtype, device and rank of q, k, v (shapes are checked by the callers)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not torch.is_tensor(t):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; pass torch.float16 or torch.bfloat16 "
                            f"(torch.float32 is accepted and computed from fp32 directly)")
        if t.dim() != rank:
            raise ValueError(f"{name} must have {rank} dimensions, got shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and not interpreter_active():
        raise ValueError(f"q, k and v must be CUDA tensors (got {q.device}); sageattention runs on "
                         "NVIDIA GPUs. On other devices use "
                         "torch.nn.functional.scaled_dot_product_attention.")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.requires_grad and torch.is_grad_enabled():
            warn_once("grad", "sageattention computes the forward pass only: no gradient flows "
                              f"back to {name}. Use it under torch.no_grad() / inference_mode().")
            break


MAX_GRID = 65535  # CUDA's limit on grid axes y and z, where batch and heads go


def check_shapes_bhnd(q, k, v) -> None:
    """q [B, Hq, Nq, D], k and v [B, Hkv, Nk, D], already in HND order."""
    B, Hq, Nq, D = q.shape
    if B > MAX_GRID or k.shape[1] > MAX_GRID:
        raise ValueError(f"batch size ({B}) and key/value heads ({k.shape[1]}) must each be <= "
                         f"{MAX_GRID}: split the batch into several calls")
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"q, k and v must have one batch size, got {B}, {k.shape[0]}, {v.shape[0]}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and "
                         f"{tuple(v.shape)} (in [B, H, N, D] order)")
    if k.shape[3] != D:
        raise ValueError(f"q and k must have the same head dim, got {D} and {k.shape[3]}")
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"head dim {D} is not supported: sageattention takes 1 <= D <= "
                         f"{MAX_HEAD_DIM} (D <= 64 runs as 64, 64 < D <= 128 as 128, larger as 256)")
    Hkv = k.shape[1]
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"the number of query heads ({Hq}) must be a multiple of the number of "
                         f"key/value heads ({Hkv}) (grouped-query attention)")
    if k.shape[2] == 0 and Nq > 0:
        raise ValueError("k and v have no tokens (Nk == 0): attention over no keys is undefined")


def check_mask(attn_mask, q_shape_bhnd, nk: int, device, dtype):
    """Return the mask expanded to [B, H, Nq, Nk] (a view), or None."""
    if attn_mask is None:
        return None
    if not torch.is_tensor(attn_mask):
        raise TypeError(f"attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(f"attn_mask must be bool (True = attend) or a float additive mask, "
                        f"got {attn_mask.dtype}")
    if attn_mask.device != device:
        raise ValueError(f"attn_mask is on {attn_mask.device} but q is on {device}")
    B, H, Nq, _ = q_shape_bhnd
    target = (B, H, Nq, nk)
    if attn_mask.dim() > 4:
        raise ValueError(f"attn_mask must have at most 4 dimensions, got shape {tuple(attn_mask.shape)}")
    try:
        return attn_mask.expand(target)
    except RuntimeError:
        raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)} cannot be broadcast to "
                         f"[B, H, Nq, Nk] = {list(target)}") from None


def check_cu_seqlens(name: str, cu, total: int, device):
    """cu_seqlens: 1-D int32/int64, starts at 0, non-decreasing, ends at the token count."""
    if not torch.is_tensor(cu):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(cu).__name__}")
    if cu.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be int32 or int64, got {cu.dtype}")
    if cu.dim() != 1 or cu.numel() < 2:
        raise ValueError(f"{name} must be 1-D with batch_size + 1 >= 2 entries, got shape "
                         f"{tuple(cu.shape)}")
    if cu.device != device:
        raise ValueError(f"{name} is on {cu.device} but q is on {device}")
    values = cu.tolist()  # one small copy; a bad offset in the kernel would be a CUDA fault
    if values and values[-1] >= 2**31:
        raise ValueError(f"{name} holds offsets >= 2**31, more tokens than one call supports")
    if values[0] != 0:
        raise ValueError(f"{name} must start at 0, got {values[0]}")
    if any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be non-decreasing, got {values}")
    if values[-1] != total:
        raise ValueError(f"{name} ends at {values[-1]} but the packed tensor has {total} tokens")
    return values
