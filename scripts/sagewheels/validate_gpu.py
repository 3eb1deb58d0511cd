"""The GPU half of scripts/validate_wheel.py, run in a child Python whose path starts with the
folder the wheel was installed into (see sagewheels/validate.py). Prints one JSON line.

Standalone on purpose: it imports torch, the installed sageattention and the benchmarks' timing
helpers (benchmarks/timing.py, no package of its own) only, never the rest of sagewheels, so that
what it tests is the wheel and nothing from the checkout.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

# Per-path bounds against fp64 attention (max relative L1, min cosine), as tests/test_gpu.py.
FP16_BOUNDS = (0.02, 0.9998)
FP8_BOUNDS = (0.05, 0.998)
BF16_SLACK = (0.02, 0.0005)


def check(report, name, ok, detail):
    report["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
    return ok


def installed_copy_check(report, target: Path):
    """The package must be the one installed from the wheel, not another copy on the path."""
    import sageattention

    where = Path(sageattention.__file__).resolve()
    report["package"] = {"file": str(where), "version": sageattention.__version__}
    return check(report, "installed copy", target.resolve() in where.parents,
                 f"sageattention imported from {where}")


def environment_checks(report, expected):
    """Whether the extension loads for this GPU, and its build info against the row."""
    import torch

    from sageattention import ops

    try:
        loaded = ops.load() is not None
        reason = "" if loaded else (ops._state.reason or "no compiled extension")
    except Exception as exc:  # noqa: BLE001 - SAGEATTENTION_STRICT=1 raises the load error
        loaded, reason = False, f"{type(exc).__name__}: {exc}"
    check(report, "extension loads", loaded, reason or "sageattention._C loaded")
    info = ops.build_info()
    report["build_info"] = {"torch": info.torch_version, "cuda": info.cuda_version,
                            "archs": list(info.cuda_archs), "abi": info.abi_flavour,
                            "optional_paths": info.optional_paths}
    device = torch.device("cuda")
    check(report, "code for this GPU", loaded and ops.usable_on(device),
          f"archs {' '.join(info.cuda_archs) or 'none'}, GPU sm_{''.join(map(str, torch.cuda.get_device_capability()))}")
    if expected:
        check(report, "build info: torch", info.torch_version == expected["torch"],
              f"built for torch {info.torch_version}, the row says {expected['torch']}")
        check(report, "build info: CUDA", info.variant == expected["cuda"],
              f"built against {info.variant}, the row says {expected['cuda']}")
        want = [a.replace("+PTX", "") for a in expected["archs"]]
        check(report, "build info: archs", list(info.cuda_archs) == want,
              f"compiled for {' '.join(info.cuda_archs)}, the row says {' '.join(want)}")
    return loaded and ops.usable_on(device), loaded and ops.fp8_usable_on(device)


def functions(compiled: bool, fp8: bool):
    """(name, call, bounds, needs the compiled kernel) for every path of this wheel and GPU."""
    import torch

    import sageattention as sa
    from sageattention.dispatch import default_plan

    plan = default_plan(torch.device("cuda"), 128)
    found = [("sageattn", sa.sageattn, FP8_BOUNDS if plan.pv_fp8 else FP16_BOUNDS, False),
             ("fp16_triton", sa.sageattn_qk_int8_pv_fp16_triton, FP16_BOUNDS, False)]
    if compiled:
        for accum in ("fp32", "fp16+fp32"):
            found.append((f"fp16_cuda {accum}", lambda q, k, v, _a=accum, **kw:
                          sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, pv_accum_dtype=_a, **kw),
                          FP16_BOUNDS, True))
    if fp8:
        for accum in ("fp32+fp32", "fp32+fp16"):
            found.append((f"fp8_cuda {accum}", lambda q, k, v, _a=accum, **kw:
                          sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, pv_accum_dtype=_a, **kw),
                          FP8_BOUNDS, True))
        found.append(("fp8_cuda_sm90", sa.sageattn_qk_int8_pv_fp8_cuda_sm90, FP8_BOUNDS, True))
    return found


def cases():
    """(name, B, Hq, Hkv, Nq, Nk, D, layout, causal, mask kind, dtype name)."""
    out = []
    for d in (64, 128):
        for causal in (False, True):
            out.append((f"D{d} {'causal' if causal else 'full'}", 2, 8, 8, 1024, 1024, d, "HND",
                        causal, None, "float16"))
    out += [("NHD", 2, 8, 8, 777, 777, 128, "NHD", False, None, "float16"),
            ("GQA Nq!=Nk", 2, 8, 2, 300, 1000, 128, "HND", False, None, "float16"),
            ("GQA causal Nq!=Nk", 2, 8, 2, 1000, 300, 64, "HND", True, None, "float16"),
            ("bf16", 2, 8, 8, 1024, 1024, 128, "HND", False, None, "bfloat16"),
            ("D256", 1, 4, 4, 512, 512, 256, "HND", False, None, "float16"),
            ("bool mask", 2, 4, 4, 300, 500, 128, "HND", False, "bool", "float16"),
            ("additive mask", 2, 4, 4, 300, 500, 128, "HND", False, "additive", "float16")]
    return out


def accuracy(report, compiled, fp8):
    import torch

    from sageattention import cuda_forward, reference
    from sageattention.testing import make_qkv

    torch.manual_seed(0)
    for name, fn, bounds, needs_compiled in functions(compiled, fp8):
        for case, B, Hq, Hkv, Nq, Nk, D, layout, causal, mask_kind, dtype_name in cases():
            dtype = getattr(torch, dtype_name)
            if needs_compiled and (D > 128 or mask_kind):
                continue  # the compiled kernels do not cover it: Triton would run instead
            q, k, v = make_qkv(B, Hq, Hkv, Nq, Nk, D, dtype=dtype, device="cuda", layout=layout)
            mask = None
            if mask_kind == "bool":
                mask = torch.rand(B, 1, Nq, Nk, device="cuda") > 0.3
            elif mask_kind == "additive":
                mask = torch.randn(Nq, Nk, device="cuda", dtype=dtype)
            kwargs = {"tensor_layout": layout, "is_causal": causal}
            if mask is not None:
                kwargs["attn_mask"] = mask
            if needs_compiled:
                why = cuda_forward.unsupported_reason(
                    q, k, v, attn_mask=mask, qk_quant_gran="per_thread",
                    pv_fp8=name.startswith("fp8"), tensor_layout=layout)
                if why:
                    check(report, f"{name} {case}: compiled kernel", False, why)
                    continue
            out = fn(q, k, v, **kwargs)
            exact = reference.attention_fp64(q, k, v, tensor_layout=layout, is_causal=causal,
                                             attn_mask=mask)
            acc = reference.accuracy(out, exact)
            rel, cos = bounds
            if dtype == torch.bfloat16:
                rel, cos = rel + BF16_SLACK[0], cos - BF16_SLACK[1]
            ok = acc["finite"] and acc["rel_l1"] < rel and acc["cosine"] > cos
            report["accuracy"].append({"function": name, "case": case, "cosine": acc["cosine"],
                                       "rel_l1": acc["rel_l1"], "max_rel_l1": rel,
                                       "min_cosine": cos, "ok": bool(ok)})
    varlen(report)


def varlen(report):
    import torch

    import sageattention as sa
    from sageattention import reference

    cu = torch.tensor([0, 300, 1000, 1024], dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(1024, 8, 128, dtype=torch.float16, device="cuda") for _ in range(3))
    out = sa.sageattn_varlen(q, k, v, cu, cu, 700, 700, is_causal=True)
    exact = reference.attention_fp64_varlen(q, k, v, cu, cu, is_causal=True)
    acc = reference.accuracy(out, exact)
    rel, cos = FP16_BOUNDS if not torch.cuda.get_device_capability() >= (9, 0) else FP8_BOUNDS
    report["accuracy"].append({"function": "sageattn_varlen", "case": "3 sequences causal",
                               "cosine": acc["cosine"], "rel_l1": acc["rel_l1"],
                               "max_rel_l1": rel, "min_cosine": cos,
                               "ok": bool(acc["finite"] and acc["rel_l1"] < rel
                                          and acc["cosine"] > cos)})


def benchmark(report):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import sageattention as sa

    sys.path.insert(0, str(BENCHMARKS))
    from timing import attention_tops, median_ms  # the benchmark scripts' timing and TOPS

    B, H, N = 4, 32, 4096
    for d in (64, 128):
        q, k, v = (torch.randn(B, H, N, d, dtype=torch.float16, device="cuda") for _ in range(3))
        row = {"shape": f"B{B} H{H} N{N} D{d} full"}
        candidates = {"sageattn": lambda _q=q, _k=k, _v=v: sa.sageattn(_q, _k, _v)}
        for label, backend in (("SDPA flash", SDPBackend.FLASH_ATTENTION),
                               ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION)):
            def run(_b=backend, _q=q, _k=k, _v=v):
                with sdpa_kernel(_b):
                    return F.scaled_dot_product_attention(_q, _k, _v)
            candidates[label] = run
        for label, fn in candidates.items():
            try:
                row[label] = round(attention_tops(B, H, N, d, False, median_ms(fn)), 1)
            except RuntimeError as exc:  # a backend this torch or GPU lacks
                row[label] = f"unavailable: {str(exc).splitlines()[0][:120]}"
        report["bench"].append(row)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--expect", default="null")
    ap.add_argument("--target", type=Path, required=True)
    ap.add_argument("--no-bench", action="store_true")
    args = ap.parse_args(argv)
    report = {"checks": [], "accuracy": [], "bench": []}
    try:
        import torch

        installed_copy_check(report, args.target)
        if not torch.cuda.is_available():
            check(report, "CUDA GPU", False, "no CUDA GPU visible to torch "
                  f"{torch.__version__}: run validate_wheel.py on a GPU machine")
        else:
            props = torch.cuda.get_device_properties(0)
            report["gpu"] = {"name": props.name,
                             "capability": ".".join(map(str, torch.cuda.get_device_capability()))}
            report["torch"] = torch.__version__
            import triton

            report["triton"] = triton.__version__
            compiled, fp8 = environment_checks(report, json.loads(args.expect))
            accuracy(report, compiled, fp8)
            if not args.no_bench:
                benchmark(report)
    except Exception as exc:  # noqa: BLE001 - any failure is a failed check in the report
        check(report, "run", False, f"{type(exc).__name__}: {exc} "
              f"({traceback.format_exc().strip().splitlines()[-2].strip()})")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
