"""Speed of the public calls (quantization included) next to torch SDPA, in TOPS.

B=4, H=32, fp16, D in {64, 128}, N in {1024, 4096, 16384}, causal and full; median of up to 40
runs with the L2 flushed before each (benchmarks/timing.py). SDPA's flash and cuDNN backends
run in the same process. With SAGEATTN_ORIGINAL_SRC set (a built checkout of the original
SageAttention), its Triton path and its compiled public calls run too, in the same process and
on the same inputs (benchmarks/original.py; "original ..." columns). Writes JSON under benchmarks/results/ and prints a
markdown table (the one in README.md).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timing import attention_tops, median_ms

import sageattention as sa
from sageattention import ops


def sdpa(backend):
    def run(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def candidates():
    fns = {
        "sageattn": lambda q, k, v, c: sa.sageattn(q, k, v, is_causal=c),
        "fp16_triton": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, is_causal=c),
        "fp16_cuda": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, is_causal=c),
        "fp16_cuda fp16+fp32": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp16_cuda(
            q, k, v, is_causal=c, pv_accum_dtype="fp16+fp32"),
        "fp8_cuda": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, is_causal=c),
        "fp8_cuda fp32+fp32": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp8_cuda(
            q, k, v, is_causal=c, pv_accum_dtype="fp32+fp32"),
        "fp8_cuda_sm90": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp8_cuda_sm90(
            q, k, v, is_causal=c),
        "SDPA flash": sdpa(SDPBackend.FLASH_ATTENTION),
        "SDPA cuDNN": sdpa(SDPBackend.CUDNN_ATTENTION),
    }
    from original import original_compiled, original_fp16_triton

    orig = original_fp16_triton()
    if orig is not None:
        fns["original fp16_triton"] = lambda q, k, v, c: orig(q, k, v, is_causal=c)
    fns.update(original_compiled())
    return fns


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqlens", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these candidates")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_attention.py needs a CUDA GPU", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    fns = candidates()
    if args.only:
        unknown = sorted(set(args.only) - set(fns))
        if unknown:
            print(f"unknown candidates {unknown}; known: {sorted(fns)}", file=sys.stderr)
            return 2
        fns = {n: f for n, f in fns.items() if n in args.only}
    B, H = args.batch, args.heads
    rows = []
    for D in args.head_dims:
        for causal in (False, True):
            for N in args.seqlens:
                q, k, v = (torch.randn(B, H, N, D, dtype=torch.float16, device="cuda")
                           for _ in range(3))
                row = {"D": D, "causal": causal, "N": N, "B": B, "H": H, "tops": {}}
                for name, fn in fns.items():
                    try:
                        ms = median_ms(lambda fn=fn, q=q, k=k, v=v, c=causal: fn(q, k, v, c))
                        row["tops"][name] = round(attention_tops(B, H, N, D, causal, ms), 1)
                    except Exception as exc:  # noqa: BLE001 - a backend missing on this GPU/torch
                        row["tops"][name] = None
                        print(f"  {name}: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
                rows.append(row)
                print(f"D={D} {'causal' if causal else 'full  '} N={N:5d} "
                      + "  ".join(f"{n}={t}" for n, t in row["tops"].items()), flush=True)
                del q, k, v
                torch.cuda.empty_cache()
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "cuda": torch.version.cuda,
        "sageattention": sa.__version__,
        # The *_cuda candidates run the compiled kernels only when these are true (csrc/).
        "compiled_extension": ops.load() is not None,
        "fp8_unit": ops.fp8_usable_on(torch.device("cuda")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": "median of 10-40 runs, L2 flushed before each, CUDA events; "
                  "TOPS = 4*B*H*N*N*D/t, halved for causal; fp16 inputs, HND",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{meta['gpu'].replace(' ', '_')}-{meta['date'][:10]}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}\n")
    print(markdown(meta, rows, list(fns)))
    return 0


def markdown(meta, rows, names) -> str:
    head = f"{meta['gpu']}, torch {meta['torch']}, triton {meta['triton']}, {meta['date'][:10]} (TOPS)"
    lines = [head, "", "| D, mask, N | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for r in rows:
        cells = [("-" if r["tops"].get(n) is None else f"{r['tops'][n]:.0f}") for n in names]
        lines.append(f"| {r['D']} {'causal' if r['causal'] else 'full'} {r['N']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
