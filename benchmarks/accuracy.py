"""Accuracy of every public function against exact fp64 attention.

Cosine similarity and relative L1 on fresh random inputs of each kind in
sageattention.testing (randn, outliers, big_tokens), next to the original SageAttention's Triton
path on the same inputs when SAGEATTN_ORIGINAL_SRC is set (benchmarks/original.py).
GPU: B=2, H=8, N=2048, D in {64, 128} (the shape of shared/ANCHORS.md). With --cpu (under
TRITON_INTERPRET=1): B=1, H=2, N=192, D=64. Writes JSON under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sageattention as sa
from sageattention import ops, reference
from sageattention.testing import KINDS, make_qkv


def _fp16_cuda(gran, accum):
    return lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp16_cuda(
        q, k, v, is_causal=c, qk_quant_gran=gran, pv_accum_dtype=accum)


def _fp8_cuda(gran, accum):
    return lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp8_cuda(
        q, k, v, is_causal=c, qk_quant_gran=gran, pv_accum_dtype=accum)


def functions(device):
    """Every public function, and every pv_accum_dtype / qk_quant_gran of the CUDA ones."""
    fns = {
        "sageattn": lambda q, k, v, c: sa.sageattn(q, k, v, is_causal=c),
        "fp16_triton": lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, is_causal=c),
    }
    for gran in ("per_thread", "per_warp"):
        for accum in ("fp32", "fp16+fp32", "fp16"):
            fns[f"fp16_cuda {gran} {accum}"] = _fp16_cuda(gran, accum)
    for gran in ("per_thread", "per_warp"):
        for accum in ("fp32", "fp32+fp32", "fp32+fp16"):
            fns[f"fp8_cuda {gran} {accum}"] = _fp8_cuda(gran, accum)
    fns["fp8_cuda_sm90"] = lambda q, k, v, c: sa.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, is_causal=c)
    try:
        from original import original_compiled, original_fp16_triton

        orig = original_fp16_triton()
        orig_compiled = original_compiled()
    except Exception as exc:  # noqa: BLE001 - the original is optional; say why it is missing
        print(f"original SageAttention not loaded: {exc}", file=sys.stderr)
        orig, orig_compiled = None, {}
    if orig is not None:
        fns["ORIGINAL fp16_triton"] = lambda q, k, v, c: orig(q, k, v, is_causal=c)
    if "original sageattn" in orig_compiled:  # its public call: on sm90, its wgmma kernel
        fns["ORIGINAL sageattn"] = orig_compiled["original sageattn"]
    return fns


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="small shapes on the CPU (interpreter)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: use --cpu (with TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    shapes = [(1, 2, 192, 64)] if args.cpu else [(2, 8, 2048, 128), (2, 8, 2048, 64)]
    rows = []
    import warnings

    warnings.simplefilter("ignore")  # the fp8 fallback warning on GPUs without FP8 MMA
    for B, H, N, D in shapes:
        for kind in KINDS:
            for causal in (False, True):
                g = torch.Generator().manual_seed(1000 + D + N)
                q, k, v = make_qkv(B, H, H, N, N, D, kind=kind, device=device, generator=g)
                exact = reference.attention_fp64(q, k, v, is_causal=causal)
                for name, fn in functions(device).items():
                    if args.cpu and "fp8" in name:
                        continue  # the interpreter mis-rounds e4m3 (tests/test_kernels_interpret.py)
                    out = fn(q, k, v, causal)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    acc = reference.accuracy(out, exact)
                    rows.append({"function": name, "kind": kind, "causal": causal, "B": B, "H": H,
                                 "N": N, "D": D, "dtype": "fp16", **acc})
                    print(f"D={D:3d} {kind:10s} causal={causal!s:5s} {name:30s} "
                          f"cos={acc['cosine']:.6f} relL1={acc['rel_l1']:.4f}", flush=True)
    meta = {
        "gpu": torch.cuda.get_device_name() if device == "cuda" else f"CPU interpreter ({platform.machine()})",
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "sageattention": sa.__version__,
        # The *_cuda functions run the compiled kernels only when these are true (csrc/).
        "compiled_extension": ops.load() is not None,
        "fp8_unit": device == "cuda" and ops.fp8_usable_on(torch.device("cuda")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "cpu" if args.cpu else meta["gpu"].replace(" ", "_")
    path = args.out / f"accuracy-{tag}-{meta['date'][:10]}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}\n")
    print(markdown(rows, D=max(r["D"] for r in rows)))
    return 0


def markdown(rows, D: int) -> str:
    """Cosine / relative L1 per function and input kind (non-causal, head dim D)."""
    names = list(dict.fromkeys(r["function"] for r in rows))
    lines = [f"| function (D={D}, full) | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for name in names:
        cells = []
        for kind in KINDS:
            r = next((r for r in rows if r["function"] == name and r["kind"] == kind
                      and r["D"] == D and not r["causal"]), None)
            cells.append("-" if r is None else f"{r['cosine']:.5f} / {r['rel_l1']:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
