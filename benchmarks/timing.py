"""GPU timing shared by the benchmark scripts: CUDA events, L2 flushed before every run."""
from __future__ import annotations

import statistics

import torch

_flush_buf = None


def _flush_l2() -> None:
    global _flush_buf
    if _flush_buf is None:  # larger than any current L2 (H100: 50 MB, H200: 60 MB)
        _flush_buf = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    _flush_buf.zero_()


def median_ms(fn, min_runs: int = 10, max_runs: int = 40, budget_ms: float = 1500.0) -> float:
    """Median time of fn() in milliseconds; runs as many times as fit the budget."""
    for _ in range(3):  # warm-up: compilation, autotuning caches, allocator
        fn()
    torch.cuda.synchronize()
    times = []
    while len(times) < max_runs:
        _flush_l2()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
        if len(times) >= min_runs and sum(times) > budget_ms:
            break
    return statistics.median(times)


def attention_tops(B, H, N, D, causal: bool, ms: float) -> float:
    """TOPS = 4*B*H*N*N*D / t, halved for causal (the convention of shared/ANCHORS.md)."""
    ops = 4.0 * B * H * N * N * D / (2.0 if causal else 1.0)
    return ops / (ms * 1e-3) / 1e12
