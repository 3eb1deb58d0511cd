"""Sweep tile shapes of the Triton attention kernel (sageattention/triton/forward.py).

Times the full forward (K quantization included) at B=4, H=32, N=4096 for each candidate
TileConfig and prints TOPS; the winners go into forward.tile_config and docs/perf-notes.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import attention_tops, median_ms

from sageattention.triton.forward import TileConfig, attention_forward

CANDIDATES = [
    TileConfig(128, 64, 4, 3), TileConfig(128, 64, 8, 3), TileConfig(128, 64, 8, 4),
    TileConfig(128, 128, 8, 3), TileConfig(128, 128, 8, 2), TileConfig(64, 64, 4, 3),
    TileConfig(64, 128, 4, 3), TileConfig(128, 32, 4, 4), TileConfig(256, 64, 8, 3),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--head-dims", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--pv", choices=["fp16", "fp8", "both"], default="both")
    args = ap.parse_args()
    B, H, N = 4, 32, args.n
    for D in args.head_dims:
        q, k, v = (torch.randn(B, H, N, D, dtype=torch.float16, device="cuda") for _ in range(3))
        out = torch.empty_like(q)
        for pv_fp8 in {"fp16": (False,), "fp8": (True,), "both": (False, True)}[args.pv]:
            for cfg in CANDIDATES:
                def run(q=q, k=k, v=v, out=out, D=D, pv_fp8=pv_fp8, cfg=cfg):
                    attention_forward(q, k, v, out, sm_scale=D ** -0.5, is_causal=args.causal,
                                      q_gran="per_thread", k_gran="per_thread", pv_fp8=pv_fp8,
                                      config=cfg)
                try:
                    tops = attention_tops(B, H, N, D, args.causal, median_ms(run, budget_ms=300))
                    print(f"D={D} fp8={pv_fp8!s:5s} causal={args.causal!s:5s} {cfg}: {tops:.0f} TOPS",
                          flush=True)
                except Exception as exc:  # noqa: BLE001 - too much shared memory etc.
                    print(f"D={D} fp8={pv_fp8} {cfg}: failed {type(exc).__name__}: {str(exc)[:100]}",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
