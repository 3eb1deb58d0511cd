"""`python -m sageattention doctor [--json]`: is this environment ready for fast attention?

Each check is {"name", "ok", "detail", "fix"} (shared/MANIFEST.md); exit status 1 when any
fails. The environment detection and the matching rule are the installer's
(sageattention/_installer.py, published as install_sageattention.py), so the doctor and the
installer cannot disagree about what fits. The checks are functions of a probe dict (what
_installer.probe_environment() returns) and the package's build info, so tests can feed them
simulated environments; only `loader_check` and `self_test_check` touch torch and the GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from . import _installer as rule

MIN_MSVC_RUNTIME = (14, 42)  # triton-windows needs the Visual C++ runtime 14.42 or newer
SELF_TEST_MIN_COSINE = 0.99
FIX_INSTALL = f"run `python install_sageattention.py` with this Python ({rule.INSTALLER_URL})"
# ComfyUI's words when Triton is of another series than torch pins (torch 2.8 + Triton 3.5).
TRITON_TRAP = ("'Error running sage attention: Triton only support CUDA 10.0 or higher, but got "
               "CUDA version: 12.8, using pytorch attention instead'")


def check(name: str, ok: bool, detail: str, fix: str = "") -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail, "fix": "" if ok else fix}


def python_check(env: dict) -> dict:
    return check("python", env.get("implementation", "cpython") == "cpython",
                 f"{env.get('python_version')} ({env.get('python_tag')}, {env.get('platform')}) at "
                 f"{env.get('executable')}",
                 "sageattention's wheels are for CPython: use a CPython 3.9 or newer")


def torch_check(env: dict) -> dict:
    if env.get("torch_error"):
        return check("torch", False, f"torch does not import: {env['torch_error']}",
                     "reinstall the CUDA build of torch you use (pip install torch==X.Y.Z "
                     "--index-url https://download.pytorch.org/whl/cuXYZ); sageattention never "
                     "installs torch")
    if not env.get("torch"):
        return check("torch", False, "torch is not installed",
                     "install a CUDA build of torch first (https://pytorch.org/get-started/locally/)")
    if not env.get("torch_cuda"):
        return check("torch", False, f"torch {env['torch']} is a CPU-only build",
                     "install a CUDA build of torch (pip install torch --index-url "
                     "https://download.pytorch.org/whl/cu128, or the variant your driver supports)")
    return check("torch", True, f"torch {env['torch']} (CUDA {env['torch_cuda']})")


def build_info_check(env: dict, info) -> dict:
    """The installed build against the running torch, by the installer's matching rule."""
    if not info.compiled_extension:
        return check("build info", True, f"sageattention {info.version}: no compiled kernels in "
                                         "this installation (Triton kernels only)")
    entry = {"torch": info.torch_version, "cuda": info.variant, "archs": list(info.cuda_archs),
             "abi_flavour": info.abi_flavour, "torch_and_higher": info.abi_flavour == "stable"}
    machine = rule.machine_of(env, {})  # a source / NGC build's variant from torch.version.cuda
    found = [p for p in (rule.torch_problem(entry, machine), rule.cuda_problem(entry, machine)) if p]
    built = (f"built for torch {info.torch_version}{' and newer' if entry['torch_and_higher'] else ''} "
             f"{info.variant}, GPU archs {' '.join(info.cuda_archs) or 'none'}")
    if not found:
        return check("build info", True, f"sageattention {info.version}: {built}")
    return check("build info", False, f"sageattention {info.version}: {built}; "
                                      + "; ".join(p["message"] for p in found),
                 f"install the wheel built for your torch: {FIX_INSTALL}")


def loader_check(info, load_error: str | None) -> dict:
    if not info.compiled_extension:
        return check("extension", True, "no compiled extension to load (Triton kernels only)")
    if load_error is None:
        return check("extension", True, "sageattention._C loaded")
    return check("extension", False, f"the compiled kernels do not load: {load_error}",
                 f"{FIX_INSTALL}; the Triton kernels still run meanwhile (slower)")


def triton_check(env: dict) -> dict:
    installed = env.get("triton") or {}
    platform = env.get("platform")
    need = rule.triton_requirement(platform, env.get("torch"))
    if need is None:
        have = ", ".join(f"{n} {v}" for n, v in installed.items()) or "no Triton"
        return check("triton", bool(installed), f"{have}; no known Triton series for torch "
                                                f"{rule.show(env.get('torch'))}",
                     "install the Triton release your torch pins")
    name = rule.parse_requirement(need)[0]
    have = installed.get(name)
    fix = f'pip install "{need}" --no-deps'
    if have is None:
        return check("triton", False, f"{name} is not installed; torch {env.get('torch')} needs {need}",
                     fix)
    if rule.triton_meets(have, need):
        return check("triton", True, f"{name} {have} meets {need} (torch {env.get('torch')})")
    series = rule.requirement_series(need)
    newer = bool(series) and (rule.version_key(have) or [0, 0])[:2] > series
    trap = (f"; a newer Triton than torch's series is the known trap: ComfyUI then prints "
            f"{TRITON_TRAP} and silently runs PyTorch attention") if newer else ""
    return check("triton", False, f"{name} {have} does not meet {need}, the series torch "
                                  f"{env.get('torch')} needs{trap}", fix)


def triton_packages_check(env: dict) -> dict:
    installed = env.get("triton") or {}
    if len(installed) > 1:
        keep = rule.TRITON_PACKAGES.get(env.get("platform"), "triton")
        drop = [n for n in installed if n != keep]
        return check("triton packages", False, "both " + " and ".join(
            f"{n} {v}" for n, v in installed.items()) + " are installed: they overwrite each other's "
            "files and Triton breaks", f"pip uninstall -y {' '.join(drop)}, then pip install "
                                       f"--force-reinstall --no-deps the {keep} your torch needs")
    if env.get("platform") == "windows" and "triton" in installed:
        return check("triton packages", False, f"triton {installed['triton']} is installed on Windows, "
                                               "where only triton-windows works",
                     "pip uninstall -y triton, then install triton-windows (the series torch needs)")
    return check("triton packages", True, ", ".join(f"{n} {v}" for n, v in installed.items())
                 or "no Triton package")


def embedded_check(env: dict) -> dict:
    emb = env.get("embedded") or {}
    if env.get("platform") != "windows":
        return check("python headers and libs", True, "not needed on Linux (Triton uses the "
                                                      "system compiler and headers)")
    missing = [n + "/" for n in ("include", "libs") if not emb.get(n)]
    kind = f"an embedded Python ({emb['pth']})" if emb.get("pth") else "this Python"
    if not missing:
        return check("python headers and libs", True, f"{kind} has include/ and libs/")
    return check("python headers and libs", False,
                 f"{kind} has no {' and no '.join(missing)}: triton-windows cannot compile kernels "
                 "('Failed to find Python libs' or a missing Python.h)",
                 f"copy the include/ and libs/ folders of a full CPython {env.get('python_version')} "
                 f"install (the same version, from python.org) into "
                 f"{env.get('base_prefix') or env.get('prefix')}")


def msvc_check(env: dict) -> dict:
    if env.get("platform") != "windows":
        return check("msvc runtime", True, "not needed on Linux")
    version = env.get("msvc_runtime")
    fix = ("install the latest Microsoft Visual C++ Redistributable for Visual Studio 2015-2022 "
           "(x64) from https://aka.ms/vs/17/release/vc_redist.x64.exe")
    if not version:
        return check("msvc runtime", False, f"{rule.MSVC_RUNTIME_DLL} (the Visual C++ runtime) was not found", fix)
    parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if parts >= MIN_MSVC_RUNTIME:
        return check("msvc runtime", True, f"{rule.MSVC_RUNTIME_DLL} {version}")
    return check("msvc runtime", False, f"{rule.MSVC_RUNTIME_DLL} {version}: triton-windows needs "
                                        f"{MIN_MSVC_RUNTIME[0]}.{MIN_MSVC_RUNTIME[1]} or newer", fix)


def gpu_check(env: dict, info) -> dict:
    gpus = env.get("gpu_archs") or []
    if env.get("cuda_error"):
        return check("gpu", False, f"CUDA does not start: {env['cuda_error']}",
                     "update the NVIDIA driver to one that supports this torch's CUDA version")
    if not gpus:
        return check("gpu", False, "no CUDA GPU visible to torch",
                     "sageattention runs on NVIDIA GPUs: check the driver (nvidia-smi) and "
                     "CUDA_VISIBLE_DEVICES")
    names = ", ".join(f"{n} (sm {a})" for n, a in zip(env.get("gpu_names") or gpus, gpus))
    if not info.compiled_extension:
        return check("gpu", True, f"{names}; Triton kernels compile for it at first use")
    uncovered = [g for g in gpus if not rule.gpu_covered(g, list(info.cuda_archs))]
    if uncovered:
        return check("gpu", False, f"{names}: no compiled kernels for sm {' '.join(uncovered)} in "
                                   f"this wheel (built for {' '.join(info.cuda_archs)})",
                     f"{FIX_INSTALL} (RTX 50xx, sm 12.0, needs a cu128 or newer torch and wheel)")
    return check("gpu", True, f"{names}: covered by the wheel's archs {' '.join(info.cuda_archs)}")


def better_wheel_check(env: dict, manifest: dict | None, manifest_error: str | None,
                       installed_version: str | None) -> dict:
    if manifest is None:
        return check("published wheels", True, f"manifest not read ({manifest_error or 'skipped'}): "
                                               "not compared with the published wheels")
    machine = rule.machine_of(env, {})
    result = rule.explain(manifest.get("wheels", []), machine)
    if result["wheel"] is None:
        return check("published wheels", True, "no published wheel fits this machine: "
                     + "; ".join(result["why"][:3]))
    entry = next(w for w in manifest["wheels"] if w.get("filename") == result["wheel"])
    if installed_version and entry.get("version") == installed_version:
        return check("published wheels", True, f"the installed build is the one that fits best "
                                               f"({entry['filename']})")
    mine_public, mine_local = rule.split_torch(installed_version)
    theirs_public, theirs_local = rule.split_torch(entry.get("version"))
    mine, theirs = rule.version_key(mine_public), rule.version_key(theirs_public)
    # "Newer" counts only for the same build variant (+cu130torch2.9.1): another variant is
    # another build, and the one that fits is named.
    if mine is not None and mine_local == theirs_local and rule.compare_keys(mine, theirs) >= 0:
        return check("published wheels", True, f"sageattention {installed_version} is as new as or "
                                               f"newer than the published {entry['filename']}")
    return check("published wheels", False, f"installed: sageattention {rule.show(installed_version)}; "
                                            f"the published wheel for this machine is {entry['filename']}",
                 FIX_INSTALL)


def self_test_check() -> dict:
    """sageattn against SDPA on the GPU: HND, and ComfyUI's NHD view of [B, N, H*D]."""
    import torch
    import torch.nn.functional as F

    import sageattention as sa

    if not torch.cuda.is_available():
        return check("self-test", False, "no CUDA GPU: nothing to run on",
                     "run the doctor on the machine with the GPU")
    start = time.monotonic()
    results = []
    try:
        gen = torch.Generator(device="cuda").manual_seed(0)
        for layout, causal in (("HND", False), ("NHD", True)):
            b, h, n, d = 2, 8, 1000, 64
            q, k, v = (torch.randn(b, n, h * d, device="cuda", generator=gen, dtype=torch.float16)
                       for _ in range(3))
            views = [t.view(b, n, h, d) for t in (q, k, v)]  # ComfyUI's NHD view
            if layout == "HND":
                views = [t.transpose(1, 2) for t in views]
            out = sa.sageattn(*views, tensor_layout=layout, is_causal=causal, smooth_k=False)
            ref_in = views if layout == "HND" else [t.transpose(1, 2) for t in views]
            ref = F.scaled_dot_product_attention(*(t.float() for t in ref_in), is_causal=causal)
            if layout == "NHD":
                ref = ref.transpose(1, 2)
            a, r = out.float().flatten(), ref.flatten()
            cos = F.cosine_similarity(a, r, dim=0).item()
            results.append((layout, causal, cos, bool(torch.isfinite(a).all())))
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        return check("self-test", False, f"sageattn raised {type(exc).__name__}: {rule.one_line(exc)}",
                     "run with SAGEATTENTION_STRICT=1 for the full error; " + FIX_INSTALL)
    worst = min(r[2] for r in results)
    ok = all(r[3] for r in results) and worst >= SELF_TEST_MIN_COSINE
    detail = ", ".join(f"{lay}{' causal' if c else ''}: cosine {cos:.5f}" for lay, c, cos, _ in results)
    return check("self-test", ok, f"sageattn vs SDPA on {torch.cuda.get_device_name()}: {detail} "
                                  f"({time.monotonic() - start:.1f} s, Triton compiles at first use)",
                 "a wrong result here is a bug: report it with this output; meanwhile use "
                 "sageattn_qk_int8_pv_fp16_triton, or PyTorch attention")


def load_error(importer=None) -> str | None:
    """Why the compiled extension does not load here (None: it loads, or there is none)."""
    import importlib

    from . import ops

    ops.reset()
    old = os.environ.get("SAGEATTENTION_STRICT")
    os.environ["SAGEATTENTION_STRICT"] = "1"
    try:
        ops.load(importer=importer or importlib.import_module)
        return None
    except RuntimeError:
        detail = [ln.strip()[len("error:"):].strip() for ln in (ops._state.message or "").splitlines()
                  if ln.strip().startswith("error:")]
        return (ops._state.reason or "unknown") + (f" ({rule.one_line(detail[0])})" if detail else "")
    finally:
        if old is None:
            os.environ.pop("SAGEATTENTION_STRICT", None)
        else:
            os.environ["SAGEATTENTION_STRICT"] = old
        ops.reset()


def diagnose(manifest_source: str | None, use_manifest: bool, run_self_test: bool) -> list:
    from ._buildinfo import build_info  # torch-free: torch may be what is broken

    env = rule.probe_environment()
    info = build_info()
    checks = [python_check(env), torch_check(env), build_info_check(env, info)]
    torch_ok = checks[1]["ok"]
    checks.append(loader_check(info, load_error()) if torch_ok else
                  check("extension", False, "not tried: torch does not work", "fix torch first"))
    checks += [triton_check(env), triton_packages_check(env), embedded_check(env), msvc_check(env),
               gpu_check(env, info)]
    manifest, error = None, "skipped (--no-manifest)"
    if use_manifest:
        try:
            manifest, _, _ = rule.load_manifest(manifest_source, timeout=10)
        except Exception as exc:  # noqa: BLE001 - InstallError, and anything a server sends
            error = str(exc) if isinstance(exc, rule.InstallError) else f"{type(exc).__name__}: {exc}"
    best = better_wheel_check(env, manifest, error, env.get("sageattention") or info.version)
    if manifest is None and manifest_source and use_manifest:  # asked for by name: must be read
        best = check("published wheels", False, f"cannot read --manifest: {error}",
                     "give manifest.json, the folder holding it, or its URL")
    checks.append(best)
    if run_self_test and torch_ok and env.get("gpu_archs"):
        checks.append(self_test_check())
    return checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sageattention doctor",
                                 description="Check that this environment runs sageattention fast "
                                             "and correctly; every failed check says what to do.")
    ap.add_argument("--json", action="store_true", help="one JSON object: {'checks': [...]}")
    ap.add_argument("--manifest", help="the release manifest to compare with (URL, file or folder)")
    ap.add_argument("--no-manifest", action="store_true", help="do not read a manifest")
    ap.add_argument("--no-self-test", action="store_true", help="skip the GPU self-test")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    checks = diagnose(args.manifest, not args.no_manifest, not args.no_self_test)
    failed = [c for c in checks if not c["ok"]]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": checks}))
    else:
        for c in checks:
            print(f"[{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
            if not c["ok"]:
                print(f"       fix: {c['fix']}")
        print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed"
              + ("" if not failed else f"; {len(failed)} failed"))
    return 1 if failed else 0
