"""Where the time of one public call goes: per-kernel GPU time and host-side launch time.

Usage: python benchmarks/profile_call.py [--n 1024] [--d 64] [--causal] [--only NAME ...]
With SAGEATTN_ORIGINAL_SRC set (benchmarks/original.py), the original's compiled public calls
are profiled too, on the same inputs ("original ..." names).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import sageattention as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from original import original_compiled

FNS = {
    "sageattn": lambda q, k, v, c: sa.sageattn(q, k, v, is_causal=c),
    "fp16_triton": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, is_causal=c),
    "fp16_cuda": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, is_causal=c),
    "fp8_cuda": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, is_causal=c),
    "fp8_cuda_sm90": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, is_causal=c),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--causal", action="store_true")
    fns = {**FNS, **original_compiled()}
    ap.add_argument("--only", nargs="+", choices=sorted(fns), help="profile only these calls")
    args = ap.parse_args()
    q, k, v = (torch.randn(4, 32, args.n, args.d, dtype=torch.float16, device="cuda") for _ in range(3))
    for name, fn in fns.items():
        if args.only and name not in args.only:
            continue
        for _ in range(3):
            fn(q, k, v, args.causal)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            fn(q, k, v, args.causal)
        t_launch = (time.perf_counter() - t0) / 20 * 1e6
        torch.cuda.synchronize()
        t_total = (time.perf_counter() - t0) / 20 * 1e6
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fn(q, k, v, args.causal)
            torch.cuda.synchronize()
        print(f"== {name}: host launch {t_launch:.0f} us/call, wall {t_total:.0f} us/call")
        for e in prof.key_averages():
            if e.device_type.name == "CUDA" or getattr(e, "self_device_time_total", 0):
                dt = getattr(e, "self_device_time_total", 0) / 5
                if dt > 0:
                    print(f"   {dt:8.1f} us  {e.key[:90]}")


if __name__ == "__main__":
    main()
