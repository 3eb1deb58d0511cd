"""Host side of the compiled CUDA path: when it can run, and the three op calls it makes.

The CUDA kernels (csrc/) cover the common case: fp16/bf16 inputs, head dim a multiple of 8 up
to 128, no attn_mask or a bool / float32 / float16 / bfloat16 one, per_warp or per_thread
scales, at least one key. Anything else (and any
GPU or build without the kernels) runs the Triton path, which covers the whole API;
``unsupported_reason`` says why, so tests and ``python -m sageattention doctor`` can show it.

One call is: K -> mean + INT8 (two passes), on the FP8 path V -> e4m3 transposed (two passes),
then the attention kernel, which quantizes Q itself as it loads it (sm_scale * log2(e) folded
into its scales; csrc/q_fragments.cuh) and writes the output directly in the caller's layout.
A Q whose rows are not 8-byte aligned goes through one quantization pass first instead. A
masked call first sorts each 128-query tile's 64-key tiles into full, partial and empty
(sageattention/triton/block_map.py, one read of the mask, which also writes the mask as one
bit per score); the kernel runs the full ones as an unmasked call does, applies the mask to the
partial ones (through the bits, or element by element for float biases other than 0 and -inf)
and skips the rest. On Hopper, ``sageattn_qk_int8_pv_fp8_cuda_sm90`` (backend "cuda_sm90") runs
the wgmma kernel of unit _C_sm90 instead where ``runs_wgmma`` allows, after a Q pass.
"""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensor

from . import _checks, granularity, ops

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 128
MAX_GRID = 65535  # batch and query heads are grid dimensions of the attention kernel
# Query rows of one block of the attention kernel (kCtaQ: 4 warps x 32 rows), which is also
# the padding of quant_int8's Q (kQPad) and the query tile of a masked call's lists.
BLOCK_M = 128
MASK_DTYPES = (torch.bool, torch.float32, torch.float16, torch.bfloat16)
# The attention kernel quantizes Q as it loads it (no separate pass) when Q's rows allow it;
# False always runs the separate pass (for measurements: docs/perf-notes.md row 33).
QUANTIZE_Q_IN_KERNEL = True

# pv_mode codes of the attention ops (csrc/attention.cuh, enum PvMode).
_FP16_MODES = {"fp32": 0, "fp16+fp32": 1, "fp16": 1}
_FP8_MODES = {"fp32": 2, "fp32+fp32": 3, "fp32+fp16": 4}
# V's e4m3 range per FP8 mode: the fp16-accumulating MMA sums 64 keys of P * 448 (<= 28672 in
# all) times V, so |V| is kept to 2.25 there (28672 * 2.25 < 65504); the others use all of e4m3.
FP8_V_MAX = {2: 448.0, 3: 448.0, 4: 2.25}


def pv_mode(pv_fp8: bool, pv_accum: str) -> int:
    """The kernel variant for a pv_accum_dtype. FP16 "fp16" accumulates each 64-key tile in
    fp16 and the tiles in fp32 (an fp16 sum over the whole sequence overflows past 65504)."""
    if not pv_fp8:
        return _FP16_MODES.get(pv_accum, 0)
    mode = _FP8_MODES.get(pv_accum, 3)
    if mode == 4 and not ops.fp8_f16_accum_compiled():
        _checks.warn_once("fp8-f16-accum", 'pv_accum_dtype="fp32+fp16" needs the fp16-accumulating '
                          "FP8 MMA, which this build lacks (compiled with nvcc < 12.8); using "
                          '"fp32+fp32" (slower, more accurate)')
        return 3
    return mode


def unsupported_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, attn_mask,
                       qk_quant_gran: str, pv_fp8: bool, tensor_layout: str) -> str | None:
    """None if the CUDA kernels can run this call, else why not (the Triton path runs it)."""
    if q.device.type != "cuda":
        return "inputs are not on a CUDA device"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"the CUDA kernels take float16/bfloat16 inputs, not {q.dtype}"
    if attn_mask is not None and attn_mask.dtype not in MASK_DTYPES:
        return f"the CUDA kernels take bool or 16/32-bit float masks, not {attn_mask.dtype}"
    if qk_quant_gran not in ("per_warp", "per_thread"):
        return f"qk_quant_gran={qk_quant_gran!r} is only implemented in the Triton kernels"
    D = q.shape[-1]
    if D % 8 or D > MAX_HEAD_DIM:
        return f"head dim {D} is not a multiple of 8 up to {MAX_HEAD_DIM}"
    h_axis, n_axis = (2, 1) if tensor_layout == "NHD" else (1, 2)
    if k.shape[n_axis] == 0:
        return "there are no keys"
    if q.shape[0] > MAX_GRID or q.shape[h_axis] > MAX_GRID:
        return f"batch or query heads above {MAX_GRID}"
    if not ops.usable_on(q.device):
        return ops._state.reason or "the compiled extension has no code for this GPU"
    if pv_fp8:
        if not ops.fp8_usable_on(q.device):
            return "the FP8 unit of the extension is not built for this GPU"
    elif v.data_ptr() % 16 or any(s % 8 for s in v.stride()[:3]):
        # The FP16 kernel reads V in place with 16-byte copies.
        return "V's rows are not 16-byte aligned"
    return None


def runs_wgmma(q: torch.Tensor, *, pv_fp8: bool, pv_accum: str, masked: bool) -> bool:
    """Whether a call of backend "cuda_sm90" runs the wgmma kernel (unit _C_sm90: H100/H200,
    unmasked, FP8 P·V accumulated in fp32 or per tile): otherwise it runs the mma.sync one."""
    return (pv_fp8 and not masked and _FP8_MODES.get(pv_accum, 3) in (2, 3)
            and ops.sm90a_usable_on(q.device))


def attention_forward(q, k, v, *, sm_scale: float, tensor_layout: str, is_causal: bool,
                      smooth_k: bool, smooth_v: bool, qk_quant_gran: str, pv_fp8: bool,
                      pv_accum: str, return_lse: bool, attn_mask=None, wgmma: bool = False):
    """(out, lse) in the caller's layout; lse is empty unless return_lse. Inputs are checked
    and ``unsupported_reason`` returned None for them; attn_mask is None or expanded to
    [B, Hq, Nq, Nk]. wgmma: run the Hopper kernel where ``runs_wgmma`` allows."""
    nhd = tensor_layout == "NHD"
    qh, kh, vh = (t.transpose(1, 2) if nhd else t for t in (q, k, v))
    Nq, D = qh.shape[2], qh.shape[3]
    Hq, Hkv, Nk = qh.shape[1], kh.shape[1], kh.shape[2]
    d_pad = 64 if D <= 64 else 128
    per_thread = qk_quant_gran == "per_thread"
    q_mode = granularity.q_mode(qk_quant_gran)
    k_mode = granularity.k_mode(qk_quant_gran)
    nq_pad = _pad(Nq, BLOCK_M)
    nk_pad = _pad(Nk, granularity.K_BLOCK)
    cuda = torch.ops.sageattention_C
    q_mul = float(sm_scale) * LOG2E
    none = qh.new_empty(0, dtype=torch.int32)  # the ops' "no tensor" (mask, lists, Q's scales)
    masked = attn_mask is not None and attn_mask.numel() > 0
    # The wgmma kernel takes quant_int8's Q (its warps' rows do not form the scale groups).
    wgmma = wgmma and runs_wgmma(q, pv_fp8=pv_fp8, pv_accum=pv_accum, masked=masked)
    if QUANTIZE_Q_IN_KERNEL and kernel_reads_q(qh) and not wgmma:
        q8, qs = qh, none  # no scales: the kernel makes them
    else:
        q8, qs, _ = cuda.quant_int8(qh, q_mode, nq_pad, d_pad, False, q_mul)
        q_mul = 1.0
    k8, ks, km = cuda.quant_int8(kh, k_mode, nk_pad, d_pad, bool(smooth_k), 1.0)
    mode = pv_mode(pv_fp8, pv_accum)
    group = Hq // Hkv
    if masked:
        from .triton.block_map import block_lists  # Triton is imported on first masked call

        bl = block_lists(attn_mask, ks, block_m=BLOCK_M, block_n=granularity.K_BLOCK,
                         is_causal=bool(is_causal), scales_per_tile=4 if per_thread else 1,
                         with_bits=True)
        mask_args = (attn_mask, bl.lists, bl.stride_b, bl.stride_h, bl.stride_m, bl.n_kb,
                     none if bl.bits is None else bl.bits)
    else:
        mask_args = (none, none, 0, 0, 0, 0, none)
    # With V's mean removed (FP8 + smooth_v) the mean goes back only to rows that saw a key,
    # which a mask can leave empty: the LSE tells which.
    need_lse = return_lse or (masked and pv_fp8 and smooth_v)
    if not pv_fp8:
        out, lse = cuda.attn_int8_fp16(q8, qs, k8, ks, vh, Nq, nhd, bool(is_causal), per_thread,
                                       mode, bool(return_lse), q_mul, *mask_args)
    else:
        v8, vs, vm = cuda.quant_v_fp8(vh, nk_pad, d_pad, bool(smooth_v), FP8_V_MAX[mode])
        if wgmma:
            out, lse = cuda.attn_int8_fp8_sm90(q8, qs, k8, ks, v8, vs, Nq, Nk, D, nhd,
                                               bool(is_causal), per_thread, mode, need_lse,
                                               q.dtype == torch.bfloat16)
        else:
            out, lse = cuda.attn_int8_fp8(q8, qs, k8, ks, v8, vs, Nq, Nk, D, nhd, bool(is_causal),
                                          per_thread, mode, need_lse,
                                          q.dtype == torch.bfloat16, q_mul, *mask_args)
        if smooth_v:
            # V was quantized with its channel mean removed; every row of P sums to 1.
            mean = vm.repeat_interleave(group, dim=1)[:, :, None]  # [B, Hq, 1, D]
            if masked:
                mean = mean * torch.isfinite(lse)[..., None]  # no visible key: the row stays 0
            mean = mean.to(out.dtype)
            out += mean.transpose(1, 2) if nhd else mean
    if return_lse and smooth_k:
        # The kernel's scores use K minus its mean; the true LSE adds sm_scale * (q . mean).
        shift = torch.einsum("bhnd,bhd->bhn", qh.float(), km.repeat_interleave(group, dim=1))
        lse += shift * float(sm_scale)
    return out, lse


def kernel_reads_q(q: torch.Tensor) -> bool:
    """Whether the attention kernel can load this [B, H, N, D] Q itself: 8-byte chunks of four
    channels, so unit channel stride and every row 8-byte aligned."""
    if q.stride(3) != 1 or any(s % 4 for s in q.stride()[:3]):
        return False
    # A fake tensor (shape tracing) has no address to check; either answer gives the same shapes.
    return isinstance(q, FakeTensor) or q.data_ptr() % 8 == 0


def _pad(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)
