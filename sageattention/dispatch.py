"""Which kernel ``sageattn`` runs on which GPU.

Until the compiled CUDA kernels exist (csrc/), every path is a Triton kernel:

============================  ==============================  ===================================
GPU (compute capability)      path                            why
============================  ==============================  ===================================
sm80 (A100), sm86 (RTX 30xx)  INT8 Q·Kᵀ + FP16 P·V            no FP8 tensor cores
sm89 (RTX 40xx), sm120        INT8 Q·Kᵀ + FP8 P·V             FP8 MMA doubles P·V throughput
sm90 (H100, H200), D > 64     INT8 Q·Kᵀ + FP8 P·V             measured faster (docs/perf-notes.md)
sm90, D <= 64                 INT8 Q·Kᵀ + FP16 P·V            measured faster and more accurate
older than sm80               ValueError                      no INT8 tensor-core path in Triton
============================  ==============================  ===================================

Scales default to per_thread groups for sageattn: finer than per_block at the same speed,
because Q is quantized inside the attention kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Plan:
    pv_fp8: bool
    qk_quant_gran: str = "per_thread"
    pv_accum: str = "fp32+fp32"  # FP8 P·V accumulation (triton.forward.fp8_accumulate_every)

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


def default_plan(device, head_dim: int = 128) -> Plan:
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
        return Plan(pv_fp8=head_dim > 64)
    return Plan(pv_fp8=cc >= (8, 9))


__all__ = ["Plan", "default_plan", "has_fp8_mma"]
