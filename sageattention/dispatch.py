"""Which kernel ``sageattn`` runs on which GPU.

============================  ==========================================  =======================
GPU (compute capability)      path                                        why
============================  ==========================================  =======================
sm80 (A100)                   CUDA INT8 Q·Kᵀ + FP16 P·V, fp32 accumulation  as the original
sm86 / sm87 (RTX 30xx, Orin)  Triton INT8 Q·Kᵀ + FP16 P·V                   as the original (see
                                                                            below)
sm89 (RTX 40xx)               CUDA INT8 Q·Kᵀ + FP8 P·V, "fp32+fp16"         FP8 MMA doubles P·V
sm120 (RTX 50xx)              same, per_warp scales                       as the original
sm90 (H100, H200), D > 64     Triton INT8 Q·Kᵀ + FP8 P·V, "fp32+fp32"       measured fastest
sm90, D <= 64                 Triton INT8 Q·Kᵀ + FP16 P·V                   measured fastest
sm90, B·Hq·Nq·Nk <= 2^27      CUDA INT8 Q·Kᵀ + FP16 P·V, fp32 accumulation  fewer launches
sm90, B·Hq·Nq·Nk >= 2^33      CUDA wgmma INT8 Q·Kᵀ + FP8 P·V, "fp32+fp32"   measured fastest
                              (masked: Triton, FP8 P·V)
older than sm80               ValueError                                  no INT8 tensor cores
============================  ==========================================  =======================

sm86 cannot be measured here. On the H100 our Triton FP16 path beats our CUDA FP16 kernel by
15-25%, but there Triton emits Hopper-only wgmma instructions, so that comparison says nothing
about sm86; the original measured its Triton path faster on sm86 and we keep its choice
(docs/perf-notes.md). On sm90 the mma.sync CUDA kernels lose to the Triton kernels (Triton
uses wgmma; FP8 mma.sync is no faster than FP16 there). Our own wgmma kernel (unit _C_sm90,
also run by sageattn_qk_int8_pv_fp8_cuda_sm90) is ahead of Triton for large calls and behind
it for mid-sized ones (docs/perf-notes.md rows 42-43), so the Hopper path is Triton in between;
small calls run the compiled FP16 kernel, where the host work and launches of the Triton
path's separate quantization passes cost more than the slower MMAs. A CUDA plan falls back to the Triton kernel of the same precision when the
extension is missing, lacks code for the GPU, or the call needs something only Triton
implements (cuda_forward.unsupported_reason). Scales default to per_thread groups.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Plan:
    pv_fp8: bool
    qk_quant_gran: str = "per_thread"
    pv_accum: str = "fp32+fp32"  # P·V accumulation (pv_accum_dtype of the entry points)
    # "cuda": the compiled kernels where they can run, else Triton; "cuda_sm90": the same, with
    # the wgmma kernel on H100/H200 where cuda_forward.runs_wgmma allows; "wgmma": that kernel
    # where runs_wgmma allows, else Triton (launch.py).
    backend: str = "triton"

    def with_gran(self, gran: str) -> Plan:
        return replace(self, qk_quant_gran=gran)

    def with_accum(self, pv_accum: str) -> Plan:
        return replace(self, pv_accum=pv_accum)


def _capability(device) -> tuple:
    return torch.cuda.get_device_capability(device)


def has_fp8_mma(device) -> bool:
    if device is None or device.type != "cuda":
        return False
    return _capability(device) >= (8, 9)


# On sm90 a call of at most this many scores (B·Hq·Nq·Nk; B=4, H=32, N=1024 is 2^27) runs the
# compiled FP16 kernel: one K pass and one attention launch (Q quantized inside) against the
# Triton path's 3-4 launches and their host work, which decide the time of a call this small
# (docs/perf-notes.md rows 36-37: 1.1-1.7x the Triton path at N=1024, behind it from N~2048).
SM90_COMPILED_MAX_SCORES = 1 << 27
# On sm90 a call of at least this many scores (B=4, H=32, N=8192 is 2^33) runs the wgmma kernel
# (unit _C_sm90) where it can: from there it is ahead of the Triton path, below it behind,
# most at causal N=4096 (docs/perf-notes.md rows 42-43).
SM90_WGMMA_MIN_SCORES = 1 << 33


def default_plan(device, head_dim: int = 128, scores: int | None = None) -> Plan:
    """The plan for a call on ``device``; ``scores`` is its B·Hq·Nq·Nk (None: a large call)."""
    if device is None or device.type != "cuda":
        # CPU tensors reach this only under TRITON_INTERPRET=1 (tests); validation rejects them
        # otherwise.
        return Plan(pv_fp8=False)
    cc = _capability(device)
    if cc < (8, 0):
        name = torch.cuda.get_device_name(device)
        raise ValueError(f"sageattn needs an NVIDIA GPU of compute capability 8.0 or newer "
                         f"(Ampere); {name} is sm_{cc[0]}{cc[1]}. Use "
                         "torch.nn.functional.scaled_dot_product_attention on this GPU.")
    if cc[0] == 9:
        if scores is not None and scores <= SM90_COMPILED_MAX_SCORES:
            return Plan(pv_fp8=False, pv_accum="fp32", backend="cuda")
        if scores is None or scores >= SM90_WGMMA_MIN_SCORES:
            # The wgmma kernel where it runs (unmasked, unit _C_sm90 present), else Triton with
            # FP8 P·V at every head dim (row 39: faster than FP16 at D=64 for long N too).
            return Plan(pv_fp8=True, backend="wgmma")
        return Plan(pv_fp8=head_dim > 64)
    if cc == (8, 0):
        return Plan(pv_fp8=False, pv_accum="fp32", backend="cuda")
    if cc < (8, 9):
        return Plan(pv_fp8=False)
    if cc[0] == 12:
        return Plan(pv_fp8=True, qk_quant_gran="per_warp", pv_accum="fp32+fp16", backend="cuda")
    return Plan(pv_fp8=True, pv_accum="fp32+fp16", backend="cuda")


__all__ = ["SM90_COMPILED_MAX_SCORES", "SM90_WGMMA_MIN_SCORES", "Plan", "default_plan", "has_fp8_mma"]
