"""Public calls for a kernel profiler (ncu): two warm-up calls, then one profiled call.

python benchmarks/ncu_target.py [--impl ours|original] [--fn fp16_cuda|fp8_cuda|sageattn]
    [--pv-accum MODE] [--d 128] [--n 4096] [--causal]

With --impl original, SAGEATTN_ORIGINAL_SRC must point at a built checkout of the original
(benchmarks/original.py). Use with e.g. ``ncu -k regex:attn --launch-skip 2 -c 1``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

FN_NAMES = {"fp16_cuda": "sageattn_qk_int8_pv_fp16_cuda",
            "fp8_cuda": "sageattn_qk_int8_pv_fp8_cuda", "sageattn": "sageattn"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("ours", "original"), default="ours")
    ap.add_argument("--fn", choices=sorted(FN_NAMES), default="fp16_cuda")
    ap.add_argument("--pv-accum", default=None, help="pv_accum_dtype (default: the function's)")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--causal", action="store_true")
    args = ap.parse_args()
    if args.impl == "ours":
        import sageattention as pkg
    else:
        from original import original_package

        pkg = original_package()
        if pkg is None:
            print("--impl original needs SAGEATTN_ORIGINAL_SRC (a built checkout)", file=sys.stderr)
            return 2
    fn = getattr(pkg, FN_NAMES[args.fn])
    kw = {"is_causal": args.causal}
    if args.pv_accum and args.fn != "sageattn":
        kw["pv_accum_dtype"] = args.pv_accum
    q, k, v = (torch.randn(4, 32, args.n, args.d, dtype=torch.float16, device="cuda")
               for _ in range(3))
    for _ in range(3):
        fn(q, k, v, **kw)
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
