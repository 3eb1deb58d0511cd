#!/usr/bin/env python3
r"""Install the sageattention wheel that fits a Python environment, from a release's manifest.json.

    python install_sageattention.py [--python-exe PATH] [--manifest URL|FILE|FOLDER] [--dry-run]
        [--json] [--yes] [--platform windows|linux] [--python cpXY] [--torch X.Y.Z+cuXYZ]
        [--gpu-arch X.Y ...] [--no-self-test]

One file, standard library only: it runs in an embedded Python (ComfyUI portable's
python_embeded\python.exe) before anything else is installed. Steps, each of which stops with
one line saying what to do:

1. Inspect the target interpreter (this one, or --python-exe) by running this file in it with
   --probe: Python tag, platform, torch and its CUDA variant, every GPU's compute capability,
   triton / triton-windows, embedded-Python markers (python3XX._pth, include/, libs/), pip.
2. Read manifest.json (--manifest URL, file or folder; SAGEATTENTION_MANIFEST; default: the
   project's latest release) and pick the wheel by the matching rule below; when none fits,
   name the failed field of the nearest wheels and what to change.
3. Fetch the wheel (a folder next to the manifest first: offline installs), with a progress
   bar, and verify its sha256 and size. Fetch the Triton release torch needs, if missing.
4. Install both with one `pip install --no-deps --no-index` of the local files: torch is never
   installed, upgraded or removed. The files of every distribution the install changes are kept
   first (Snapshot), so a failed pip run is rolled back: the environment is as it was. A
   conflicting Triton package is removed only with --yes or an interactive yes.
5. Self-test: `python -m sageattention doctor --json` in the target (GPU numerics included).

--platform/--python/--torch/--gpu-arch describe another machine ("which wheel fits that one?");
with --dry-run --json one JSON object: {"wheel", "triton", "why", ...}, exit 0 when a wheel
fits, 1 when none does. Exit status: 0 done, 1 no wheel fits or the install / self-test failed,
2 bad arguments or input.

The same file is the package's sageattention/_installer.py (`python -m sageattention doctor`
uses its detection and matching; tests/test_installer.py fails when the two copies differ) and
scripts/sagewheels/matching.py re-exports its matching rule for the index site.

Matching rule (shared/MANIFEST.md). A wheel fits when every field agrees:
  platform  equal;
  python    cpython: the same cpXY tag; abi3 / stable: the interpreter is python_tag or newer;
  torch     cpython / abi3: the same release (the +local part aside); stable: that release or newer;
  cuda      cpython / abi3: the same variant (cu129); stable: a variant of the same CUDA major;
  gpu       every visible GPU X.Y is covered by an arch of the wheel: X.Z with Z <= Y, X.Ya for
            exactly X.Y (arch-specific code runs on that arch only), or a +PTX arch <= X.Y.
A machine is {"platform", "python_tag", "torch" (torch.__version__ or None), "gpu_archs"}.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PROJECT_REPO = "sageattention-wheels/sageattention"  # where the releases live (docs/releasing.md)
DEFAULT_MANIFEST = f"https://github.com/{PROJECT_REPO}/releases/latest/download/manifest.json"
MANIFEST_ENV = "SAGEATTENTION_MANIFEST"
INSTALLER_URL = f"https://github.com/{PROJECT_REPO}/releases/latest/download/install_sageattention.py"
INSTALL_COMMAND = "python install_sageattention.py"  # with the target's python (guides)
SCHEMA_VERSION = 1

# ---- the matching rule (also the index page's, in JavaScript: tests/matching_cases.json) ----

FIELDS = ("platform", "python", "torch", "cuda", "gpu")
# How far a change is for a person: another OS or GPU is rarely an option, another Python is
# hard for an embedded one (ComfyUI portable), another torch build is the usual fix. The
# nearest wheels are those whose failed fields weigh least.
WEIGHTS = {"platform": 16, "gpu": 8, "python": 4, "torch": 2, "cuda": 1}
NEAREST = 3  # wheels explained when none fits
FLAVOUR_RANK = {"cpython": 2, "abi3": 1, "stable": 0}  # among fits: the most specific build first
PLATFORMS = ("windows", "linux")
TORCH_INDEX = "https://download.pytorch.org/whl/"
# The one command whose output the index page and the installer read (parse_machine_line).
ONE_LINER = ("python -c \"import sys,platform,torch as t;c=t.cuda;print(platform.system().lower(),"
             "'cp'+str(sys.version_info[0])+str(sys.version_info[1]),t.__version__,"
             "*['.'.join(map(str,c.get_device_capability(i))) for i in range(c.device_count())])\"")

# fullmatch and [0-9], not $ and \d: Python's $ also matches before a final newline and its \d
# matches any Unicode digit; the page's JavaScript must read the same strings the same way.
VERSION_RE = re.compile(r"v?([0-9]+(?:\.[0-9]+)*)(?:(a|b|rc)([0-9]+))?(?:\.post([0-9]+))?(?:\.dev([0-9]+))?")
CP_RE = re.compile(r"cp([0-9])([0-9]+)")
CUDA_RE = re.compile(r"cu([0-9]+)([0-9])")
GPU_RE = re.compile(r"([0-9]+)\.([0-9]+)")
ARCH_RE = re.compile(r"([0-9]+)\.([0-9]+)(a?)(\+PTX)?")
NO_DEV = 10 ** 9  # a release sorts after its .devN builds
PRE_RANK = {"a": 0, "b": 1, "rc": 2}


# ---- small parsers (each mirrored one to one in site_page.html) ----------------------------

def version_key(text) -> list | None:
    """A sort key for the normalized PEP 440 versions the wheels and torch use, or None."""
    m = VERSION_RE.fullmatch(number_text(text))
    if not m:
        return None
    release = [int(x) for x in m.group(1).split(".")]
    release = (release + [0] * 6)[:6]  # 2.8 == 2.8.0
    pre, pre_n, post, dev = m.group(2), m.group(3), m.group(4), m.group(5)
    rank = PRE_RANK[pre] if pre else (-1 if dev is not None and post is None else 3)
    return release + [rank, int(pre_n or 0), int(post) if post is not None else -1,
                      int(dev) if dev is not None else NO_DEV]


def compare_keys(a, b) -> int:
    """-1, 0 or 1; None (unreadable) sorts below everything."""
    if a is None or b is None:
        return (a is not None) - (b is not None)
    return (a > b) - (a < b)


def show(value) -> str:
    """A value in a message: None (a field the machine or wheel lacks) reads "unknown"."""
    return "unknown" if value is None else str(value)


MAX_FIELD = 512  # longer "versions" or "archs" are not real ones (and int() refuses >4300 digits)


def text_of(value) -> str:
    """Strings as they are, anything else (None, numbers from hand-written JSON) as ""."""
    return value if isinstance(value, str) else ""


def number_text(value) -> str:
    """text_of for the parsers that turn digits into ints: a string too long to be a real
    version or arch reads as "" (int() refuses more than 4300 digits)."""
    text = text_of(value)
    return text if len(text) <= MAX_FIELD else ""


def is_stable(wheel: dict) -> bool:
    return wheel.get("torch_and_higher") is True


def flavour_rank(wheel: dict) -> int:
    return FLAVOUR_RANK.get(text_of(wheel.get("abi_flavour")), -1)


def split_torch(text) -> tuple:
    """("2.8.0", "cu129") from "2.8.0+cu129"; ("2.8.0", None) without a local part."""
    public, _, local = text_of(text).partition("+")
    return public, (local or None)


def cp_tuple(tag) -> list | None:
    m = CP_RE.fullmatch(number_text(tag))
    return [int(m.group(1)), int(m.group(2))] if m else None


def cp_dotted(tag) -> str:
    t = cp_tuple(tag)
    return f"{t[0]}.{t[1]}" if t else show(tag)


def cuda_major(variant) -> int | None:
    m = CUDA_RE.fullmatch(number_text(variant))
    return int(m.group(1)) if m else None


def arch_covers(arch: str, gpu: list) -> bool:
    """Does the wheel's arch (8.6, 9.0a, 8.0+PTX) run on a GPU of capability [major, minor]?"""
    m = ARCH_RE.fullmatch(number_text(arch))
    if not m:
        return False  # a form this rule does not know runs nowhere for sure
    major, minor, specific, ptx = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if specific:
        return gpu == [major, minor]
    if ptx:
        return [major, minor] <= gpu
    return major == gpu[0] and minor <= gpu[1]


def gpu_covered(gpu: str, archs: list) -> bool:
    m = GPU_RE.fullmatch(number_text(gpu))
    return bool(m) and any(arch_covers(a, [int(m.group(1)), int(m.group(2))]) for a in archs)


# ---- one field at a time: None when it agrees, else a problem with what to change ----------

def problem(field: str, have, need, message: str) -> dict:
    return {"field": field, "have": have, "need": need, "message": message}


def torch_install(wheel: dict) -> str:
    """The pip command that brings the torch this wheel needs."""
    torch, cuda = show(wheel.get("torch")), show(wheel.get("cuda"))
    spec = f'"torch>={torch}"' if is_stable(wheel) else f"torch=={torch}"
    return f"pip install {spec} --index-url {TORCH_INDEX}{cuda}"


def platform_problem(wheel: dict, machine: dict) -> dict | None:
    have, need = machine.get("platform"), wheel.get("platform")
    if have == need:
        return None
    h, n = show(have), show(need)
    return problem("platform", have, need, f"platform: this wheel is for {n}, this machine is {h}: "
                                           f"pick a wheel built for {h}")


def python_problem(wheel: dict, machine: dict) -> dict | None:
    have, need = machine.get("python_tag"), wheel.get("python_tag")
    mine, theirs = cp_tuple(have), cp_tuple(need)
    h, n = show(have), show(need)
    if mine is None:
        return problem("python", have, need, f"Python: '{h}' is not a CPython tag such as cp312: "
                                             "give the Python as cpXY")
    if theirs is None:
        return problem("python", have, need, f"Python: this wheel's tag '{n}' is not cpXY: it fits "
                                             "no CPython")
    if wheel.get("abi_flavour") == "cpython":
        if mine == theirs:
            return None
        return problem("python", have, need, f"Python: this wheel is for {n} only, yours is {h}: "
                                             f"use Python {cp_dotted(need)}")
    if mine >= theirs:
        return None
    return problem("python", have, need, f"Python: this wheel needs {n} or newer, yours is {h}: "
                                         f"use Python {cp_dotted(need)} or newer")


def torch_problem(wheel: dict, machine: dict) -> dict | None:
    have, need = machine.get("torch"), wheel.get("torch")
    stable = is_stable(wheel)
    h, n = show(have), show(need)
    if have is None or have == "":
        return problem("torch", have, need, f"torch: not installed: install torch first "
                                            f"({torch_install(wheel)})")
    public = split_torch(have)[0]
    mine = version_key(public)
    if mine is None:
        return problem("torch", have, need, f"torch: cannot read the version '{h}': give it as "
                                            "X.Y.Z+cuXYZ (what torch.__version__ prints)")
    order = compare_keys(mine, version_key(need))
    if order == 0 or (stable and order > 0):
        return None
    if stable:
        return problem("torch", have, need, f"torch: this wheel needs torch {n} or newer, yours is "
                                            f"{h}: {torch_install(wheel)}")
    return problem("torch", have, need, f"torch: this wheel is for torch {n}, yours is {h}: "
                                        f"{torch_install(wheel)}, or pick a wheel built for torch "
                                        f"{public}")


def cuda_problem(wheel: dict, machine: dict) -> dict | None:
    have, need = machine.get("torch"), wheel.get("cuda")
    if version_key(split_torch(have)[0]) is None:
        return None  # no torch, or an unreadable one: the torch field already says so
    local = split_torch(have)[1]
    n = show(need)
    if local is None:
        return problem("cuda", local, need, f"CUDA: torch {have} does not say its CUDA variant: give "
                                            "the version with its +cuXYZ part (torch.__version__)")
    if cuda_major(local) is None:
        return problem("cuda", local, need, f"CUDA: your torch is {have}, not a CUDA build: install "
                                            f"a CUDA build of torch ({torch_install(wheel)})")
    if is_stable(wheel):
        major = cuda_major(need)
        if major is not None and cuda_major(local) == major:
            return None
        return problem("cuda", local, need, f"CUDA: this wheel needs a CUDA {show(major)} build of "
                                            f"torch ({n} or another cu{show(major)}x), yours is "
                                            f"{local}: {torch_install(wheel)}")
    if local == need:
        return None
    return problem("cuda", local, need, f"CUDA: this wheel is for {n} builds of torch, yours is "
                                        f"{local}: {torch_install(wheel)}")


def gpu_problems(wheel: dict, machine: dict) -> list:
    archs = wheel.get("archs")
    archs = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    built = " ".join(archs) or "no GPU"
    found = []
    gpus = machine.get("gpu_archs")
    for gpu in gpus if isinstance(gpus, list) else []:
        if not GPU_RE.fullmatch(number_text(gpu)):
            found.append(problem("gpu", gpu, archs, f"GPU: cannot read the compute capability "
                                                    f"'{show(gpu)}': give it as X.Y"))
        elif not gpu_covered(gpu, archs):
            found.append(problem("gpu", gpu, archs, f"GPU: compute capability {gpu} has no kernels "
                                                    f"in this wheel (built for {built}): use a GPU "
                                                    "it covers, or build from source with "
                                                    f"TORCH_CUDA_ARCH_LIST={gpu}"))
    return found


def wheel_problems(wheel: dict, machine: dict) -> list:
    """Every field of `wheel` that does not fit `machine`, in FIELDS order; [] when it fits."""
    checks = [platform_problem(wheel, machine), python_problem(wheel, machine),
              torch_problem(wheel, machine), cuda_problem(wheel, machine)]
    return [p for p in checks if p is not None] + gpu_problems(wheel, machine)


# ---- all wheels at once ---------------------------------------------------------------------

def score(problems: list) -> int:
    return sum(WEIGHTS[p["field"]] for p in problems)


def preference(a: dict, b: dict) -> int:
    """Order of wheels that are otherwise equal: newest package version, then the most
    specific build (cpython > abi3 > stable), then the newest torch, then the file name."""
    for order in (-compare_keys(version_key(split_torch(a.get("version"))[0]),
                                version_key(split_torch(b.get("version"))[0])),
                  flavour_rank(b) - flavour_rank(a),
                  -compare_keys(version_key(a.get("torch")), version_key(b.get("torch")))):
        if order:
            return 1 if order > 0 else -1
    fa, fb = text_of(a.get("filename")), text_of(b.get("filename"))
    return (fa > fb) - (fa < fb)


def explain(wheels: list, machine: dict) -> dict:
    """The wheel that fits (the preferred one when several do) and, when none does, the nearest
    wheels with their failed fields and the deduplicated reasons. Plain JSON values only."""
    checked = [(w, wheel_problems(w, machine)) for w in wheels]
    fits = sorted((w for w, found in checked if not found), key=functools.cmp_to_key(preference))
    result = {"wheel": None, "triton": None, "index": None, "fits": [w.get("filename") for w in fits],
              "nearest": [], "why": []}
    if fits:
        best = fits[0]
        result.update(wheel=best.get("filename"), triton=best.get("triton"), index=best.get("index"))
        return result
    if not wheels:
        result["why"] = ["the manifest lists no wheels"]
        return result
    same_os = [(w, f) for w, f in checked if w.get("platform") == machine.get("platform")]
    pool = same_os or checked  # another OS only when the machine's OS has no wheel at all

    def order(a, b):
        return (score(a[1]) > score(b[1])) - (score(a[1]) < score(b[1])) or preference(a[0], b[0])

    nearest = sorted(pool, key=functools.cmp_to_key(order))[:NEAREST]
    result["nearest"] = [{"filename": w.get("filename"), "problems": found} for w, found in nearest]
    for _, found in nearest:
        for p in found:
            if p["message"] not in result["why"]:
                result["why"].append(p["message"])
    return result


# ---- the pasted output of ONE_LINER ---------------------------------------------------------

def parse_machine_line(text) -> dict:
    """{"machine": {...}, "error": None} from ONE_LINER's output (its last non-empty line:
    PLATFORM cpXY TORCH [GPU ...]), or {"machine": None, "error": what to do}."""
    text = text_of(text)
    if "No module named 'torch'" in text:
        return {"machine": None, "error": "torch is not installed in that Python: install torch first"}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return {"machine": None, "error": "nothing pasted: run the command and paste the line it prints"}
    tokens = lines[-1].split()
    if len(tokens) < 3:
        return {"machine": None, "error": f"expected 'PLATFORM cpXY TORCH [GPU ...]', got '{lines[-1]}'"}
    platform, python_tag, torch, gpus = tokens[0].lower(), tokens[1].lower(), tokens[2], tokens[3:]
    if platform not in PLATFORMS:
        return {"machine": None, "error": f"platform '{tokens[0]}': the wheels are for windows and "
                                          "linux only"}
    if cp_tuple(python_tag) is None:
        return {"machine": None, "error": f"'{tokens[1]}' is not a CPython tag such as cp312"}
    bad = [g for g in gpus if not GPU_RE.fullmatch(g)]
    if bad:
        return {"machine": None, "error": f"'{bad[0]}' is not a compute capability such as 8.9"}
    return {"machine": {"platform": platform, "python_tag": python_tag, "torch": torch,
                        "gpu_archs": gpus}, "error": None}


# ---- Triton: the release torch needs -------------------------------------------------------

# torch minor -> the Triton series its Linux wheels pin (scripts/compat_rules.yaml, triton_series;
# tests/test_installer.py fails when the two differ). On Windows torch declares no Triton and
# triton-windows X.Y serves torch's series X.Y.
TRITON_SERIES = {"2.5": "3.1", "2.6": "3.2", "2.7": "3.3", "2.8": "3.4", "2.9": "3.5",
                 "2.10": "3.6", "2.11": "3.6", "2.14": "3.8"}
TRITON_PACKAGES = {"windows": "triton-windows", "linux": "triton"}
REQUIREMENT_RE = re.compile(r"(triton(?:-windows)?)\s*(==|~=|<|>=)\s*([0-9][0-9.]*)(\.\*)?")


def triton_requirement(platform: str, torch_version, wheel: dict | None = None) -> str | None:
    """The Triton requirement for this torch on this platform: from TRITON_SERIES, else the
    wheel's manifest entry, else None (torch unknown)."""
    public = split_torch(torch_version)[0]
    key = version_key(public)
    series = TRITON_SERIES.get(".".join(str(x) for x in key[:2])) if key else None
    if series:
        major, minor = series.split(".")
        if platform == "windows":
            return f"triton-windows<{major}.{int(minor) + 1}"
        return f"triton=={series}.*"
    text = text_of((wheel or {}).get("triton"))
    return text or None


def parse_requirement(text) -> tuple | None:
    """(package, operator, version, wildcard) of the forms the matrix uses, or None."""
    m = REQUIREMENT_RE.fullmatch(number_text(text).strip())
    return (m.group(1), m.group(2), m.group(3), bool(m.group(4))) if m else None


def requirement_series(requirement) -> list | None:
    """[major, minor] of the Triton series a requirement selects (<3.5: 3.4; ==3.6.*: 3.6)."""
    req = parse_requirement(requirement)
    if req is None or req[1] == ">=":
        return None
    parts = [int(x) for x in req[2].split(".")] + [0]
    if req[1] == "<":
        return [parts[0], parts[1] - 1] if parts[1] > 0 else None
    return parts[:2]


def satisfies(version, requirement) -> bool:
    """Does an installed version (e.g. "3.4.0", "3.4.1.post19") meet the requirement?"""
    req = parse_requirement(requirement)
    have = version_key(split_torch(version)[0])
    if req is None or have is None:
        return False
    _, op, need, wildcard = req
    parts = [int(x) for x in need.split(".")]
    release = have[:6]
    if op == "==":
        if wildcard:
            return release[:len(parts)] == parts
        return compare_keys(have, version_key(need)) == 0
    if op == "<":
        return compare_keys(have, version_key(need)) < 0 and have[6] == 3  # no pre-releases
    if op == ">=":
        return compare_keys(have, version_key(need)) >= 0
    # ~=X.Y.Z: >= X.Y.Z and == X.Y.*
    return compare_keys(have, version_key(need)) >= 0 and release[:len(parts) - 1] == parts[:-1]


def triton_meets(version, requirement) -> bool:
    """The requirement, and the very series it selects: "<3.5" means 3.4.x for torch 2.8, and
    an older series is as wrong as a newer one."""
    series = requirement_series(requirement)
    have = version_key(split_torch(version)[0])
    return satisfies(version, requirement) and (series is None or (have is not None and have[:2] == series))


def triton_actions(env: dict, requirement: str | None) -> dict:
    """What the Triton packages need: {"install": REQ or None, "remove": [NAMES], "ok": why}."""
    installed = env.get("triton") or {}
    platform = env.get("platform")
    wanted = parse_requirement(requirement)[0] if parse_requirement(requirement) else None
    other = [name for name in TRITON_PACKAGES.values() if name != wanted and name in installed]
    if wanted is None:
        return {"install": None, "remove": [], "note": "no Triton requirement known for this torch"}
    have = installed.get(wanted)
    if have and triton_meets(have, requirement):
        return {"install": None, "remove": other, "note": f"{wanted} {have} meets {requirement}"}
    note = (f"{wanted} {have} does not meet {requirement}" if have else f"{wanted} is not installed")
    if platform == "linux" and not have:
        note += " (torch normally brings it)"
    return {"install": requirement, "remove": other, "note": note}


# ---- the target environment ----------------------------------------------------------------

def _dist_version(name: str) -> str | None:
    try:
        from importlib import metadata
        return metadata.version(name)
    except Exception:  # noqa: BLE001 - PackageNotFoundError, or a broken dist-info
        return None


MSVC_RUNTIME_DLL = "msvcp140.dll"  # the C++ runtime of the Visual C++ Redistributable


def _msvc_runtime_version() -> str | None:
    """The file version of the Visual C++ runtime (msvcp140.dll) the process would load, or None.
    msvcp140, not vcruntime140: python.org's Pythons (the embedded one too) carry their own
    vcruntime140.dll next to python.exe, which the Redistributable never updates."""
    if os.name != "nt":
        return None
    try:
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        version = ctypes.WinDLL("version")
        # Full signatures: without them ctypes passes and returns 32-bit ints, which truncates
        # 64-bit module handles and pointers.
        for fn in (kernel32.GetModuleHandleW, kernel32.LoadLibraryW):
            fn.argtypes, fn.restype = [wintypes.LPCWSTR], wintypes.HMODULE
        kernel32.GetModuleFileNameW.argtypes = [wintypes.HMODULE, wintypes.LPWSTR, wintypes.DWORD]
        kernel32.GetModuleFileNameW.restype = wintypes.DWORD
        version.GetFileVersionInfoSizeW.argtypes = [wintypes.LPCWSTR, ctypes.POINTER(wintypes.DWORD)]
        version.GetFileVersionInfoSizeW.restype = wintypes.DWORD
        version.GetFileVersionInfoW.argtypes = [wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD,
                                                ctypes.c_void_p]
        version.GetFileVersionInfoW.restype = wintypes.BOOL
        version.VerQueryValueW.argtypes = [ctypes.c_void_p, wintypes.LPCWSTR,
                                           ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(wintypes.UINT)]
        version.VerQueryValueW.restype = wintypes.BOOL
        handle = kernel32.GetModuleHandleW(MSVC_RUNTIME_DLL) or kernel32.LoadLibraryW(MSVC_RUNTIME_DLL)
        if not handle:
            return None
        path = ctypes.create_unicode_buffer(32768)
        if not kernel32.GetModuleFileNameW(handle, path, 32768):
            return None
        size = version.GetFileVersionInfoSizeW(path.value, None)
        if not size:
            return None
        data = ctypes.create_string_buffer(size)
        if not version.GetFileVersionInfoW(path.value, 0, size, data):
            return None
        pointer, length = ctypes.c_void_p(), wintypes.UINT()
        if not version.VerQueryValueW(data, "\\", ctypes.byref(pointer), ctypes.byref(length)):
            return None
        # VS_FIXEDFILEINFO: dwSignature, dwStrucVersion, dwFileVersionMS, dwFileVersionLS, ...
        words = ctypes.cast(pointer, ctypes.POINTER(wintypes.DWORD * 4)).contents
        ms, ls = words[2], words[3]  # VS_FIXEDFILEINFO.dwFileVersionMS / LS
        return f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"
    except Exception:  # noqa: BLE001 - any ctypes failure: unknown, never a crash
        return None


def embedded_markers(prefix: Path, version: tuple) -> dict:
    """An embedded Python (python3XX._pth next to python.exe) and whether include/ and libs/,
    which triton-windows compiles against, are there."""
    pth = prefix / f"python{version[0]}{version[1]}._pth"
    return {"pth": pth.name if pth.is_file() else None,
            "include": (prefix / "include" / "Python.h").is_file(),
            "libs": (prefix / "libs").is_dir() and any((prefix / "libs").glob("python3*.lib"))}


def probe_environment(with_torch: bool = True) -> dict:
    """This interpreter: what the installer and the doctor decide by. Never raises."""
    import platform as platform_mod
    import site
    import sysconfig

    system = platform_mod.system().lower()
    env = {"executable": sys.executable, "python_tag": f"cp{sys.version_info[0]}{sys.version_info[1]}",
           "python_version": platform_mod.python_version(),
           "implementation": sys.implementation.name,
           "platform": "windows" if system == "windows" else system,
           "machine": platform_mod.machine().lower(),
           "prefix": sys.prefix, "base_prefix": sys.base_prefix,
           "purelib": sysconfig.get_paths().get("purelib"),
           "user_site": site.ENABLE_USER_SITE and site.getusersitepackages() or None,
           "torch": None, "torch_cuda": None, "torch_error": None, "torch_file": None,
           "gpu_archs": [], "gpu_names": [], "cuda_error": None,
           "triton": {n: v for n in TRITON_PACKAGES.values() if (v := _dist_version(n))},
           "sageattention": _dist_version("sageattention"),
           "pip": _dist_version("pip"),
           # A venv compiles against its base install's include/ and libs/ (sys.base_prefix).
           "embedded": embedded_markers(Path(sys.base_prefix), sys.version_info[:2]),
           "msvc_runtime": _msvc_runtime_version()}
    env["site_writable"] = can_write(env["purelib"])
    if not with_torch:
        return env
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - ImportError, "DLL load failed" (OSError), ...
        env["torch_error"] = f"{type(exc).__name__}: {one_line(exc)}"
        return env
    env["torch"] = str(getattr(torch, "__version__", "")) or None
    env["torch_file"] = getattr(torch, "__file__", None)
    env["torch_cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                env["gpu_archs"].append(f"{major}.{minor}")
                env["gpu_names"].append(str(torch.cuda.get_device_name(i)))
    except Exception as exc:  # noqa: BLE001 - a driver too old for this torch, ...
        env["cuda_error"] = f"{type(exc).__name__}: {one_line(exc)}"
    return env


def can_write(folder) -> bool:
    """Whether a file can be created in folder: a real try (os.access on Windows looks at the
    read-only attribute only, not at the folder's permissions)."""
    if not folder or not os.path.isdir(folder):
        return False
    try:
        fd, name = tempfile.mkstemp(prefix=".sageattention-write-test-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return True


def one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


class InstallError(Exception):
    """One line for the user: what failed and what to do. code: the exit status (2: bad input
    such as an unreadable manifest or a wrong argument; 1: the install itself failed)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def probe_interpreter(python_exe: str, timeout: float = 300) -> dict:
    """probe_environment() of another interpreter, by running this file in it."""
    exe = Path(python_exe)
    if not exe.is_file():
        raise InstallError(f"--python-exe {python_exe}: no such file: give the python(.exe) of the "
                           "environment to install into (ComfyUI portable: python_embeded\\python.exe)",
                           code=2)
    try:
        proc = subprocess.run([str(exe), str(Path(__file__).resolve()), "--probe"],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"{python_exe}: inspecting it took over {timeout:.0f} s (importing "
                           "torch hung): check that this Python starts on its own") from exc
    except OSError as exc:
        raise InstallError(f"{python_exe}: cannot run it ({one_line(exc)})") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InstallError(f"{python_exe}: could not inspect it (exit {proc.returncode}: {tail}); "
                           "the installer needs Python 3.9 or newer")
    return json.loads(lines[-1])


def machine_of(env: dict, overrides: dict) -> dict:
    """The matching rule's machine from a probe, with --platform/--python/--torch/--gpu-arch."""
    torch = env.get("torch")
    public, local = split_torch(torch)
    if (torch and env.get("torch_cuda") and cuda_major(local) is None
            and not (local or "").startswith(("cpu", "rocm", "xpu"))):
        # A source or NGC build (2.8.0a0+git1234, ...+nv25.05): its version does not name the
        # CUDA variant, torch.version.cuda does.
        torch = f"{public}+cu{str(env['torch_cuda']).replace('.', '')}"
    machine = {"platform": env.get("platform"), "python_tag": env.get("python_tag"),
               "torch": torch, "gpu_archs": list(env.get("gpu_archs") or [])}
    for key, value in overrides.items():
        if value is not None:
            machine[key] = value
    return machine


# ---- the manifest --------------------------------------------------------------------------

MAX_MANIFEST_BYTES = 8 << 20
MAX_WHEEL_BYTES = 2 << 30  # GitHub's asset limit
NET_TIMEOUT_S = 60
MIN_RATE = 20_000  # bytes/s below which a download is given up (a 5 MB wheel: 4 min more)
FILENAME_RE = re.compile(r"[A-Za-z0-9_.+!-]+\.whl")
SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _is_url(text: str) -> bool:
    try:
        return urllib.parse.urlsplit(text).scheme in ("http", "https", "file")
    except ValueError as exc:  # "Invalid IPv6 URL", ...
        raise InstallError(f"{text!r}: not a URL urllib can read ({one_line(exc)})", code=2) from exc


# What a broken server or connection raises while urllib reads: one line each, never a traceback.
NET_ERRORS = (OSError, http.client.HTTPException, ValueError)


def _open_url(url: str, timeout: float, limit_s: float | None = None):
    """urlopen, with a deadline for the whole answer up to the body (limit_s, default twice the
    per-read timeout): a server that trickles its headers cannot hold the installer either."""
    import threading

    box = {}

    def opener():
        try:
            box["resp"] = _urlopen(url, timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc

    worker = threading.Thread(target=opener, daemon=True)
    worker.start()
    worker.join(limit_s if limit_s is not None else 2 * timeout + 1)
    if worker.is_alive():
        raise InstallError(f"{url}: no answer within {limit_s or 2 * timeout + 1:.0f} s: try again "
                           "later, or download the files and pass --manifest FOLDER")
    if "error" in box:
        raise box["error"]
    return box["resp"]


def _urlopen(url: str, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "install_sageattention"})
    try:
        # urllib honours HTTP(S)_PROXY / NO_PROXY (and the Windows proxy settings).
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise InstallError(f"{url}: the server answered {exc.code} {one_line(exc.reason)}: check "
                           "the address (--manifest) or try again later") from exc
    except (urllib.error.URLError, *NET_ERRORS) as exc:
        reason = getattr(exc, "reason", exc)
        scheme = urllib.parse.urlsplit(url).scheme
        proxy = urllib.request.getproxies().get(scheme)  # the environment's (or Windows') proxy
        hint = (f" (through the proxy {proxy}: check it, or unset {scheme.upper()}_PROXY)" if proxy
                else " (behind a proxy? set HTTPS_PROXY=http://HOST:PORT)")
        raise InstallError(f"{url}: cannot connect ({one_line(reason)}){hint}; or download "
                           "manifest.json and the wheel and pass --manifest FOLDER") from exc


def read_chunk(resp, size: int) -> bytes:
    """What has arrived, up to size bytes: read1 returns as soon as any data is there (read
    waits for all of it, so a server that trickles would never reach the deadline check)."""
    reader = getattr(resp, "read1", None) or resp.read
    return reader(size)


def body_cut_short(resp) -> bool:
    """The server closed the connection before the Content-Length it announced."""
    left = getattr(resp, "length", None)
    return isinstance(left, int) and left > 0


def stream_body(url: str, timeout: float, total_s: float):
    """The body of url in chunks as they arrive: `timeout` per read, `total_s` for the whole (a
    server that trickles cannot hold the installer forever); every failure an InstallError."""
    deadline = time.monotonic() + total_s
    done = 0
    with _open_url(url, timeout) as resp:
        while True:
            if time.monotonic() > deadline:
                raise InstallError(f"{url}: too slow (slower than needed to finish within "
                                   f"{total_s:.0f} s; {done} bytes so far): try again later, or "
                                   "download it by hand and pass --manifest FILE or FOLDER")
            try:
                chunk = read_chunk(resp, 1 << 16)
            except NET_ERRORS as exc:
                raise InstallError(f"{url}: the transfer broke off after {done} bytes "
                                   f"({type(exc).__name__}: {one_line(exc)}): try again") from exc
            if not chunk:
                if body_cut_short(resp):
                    raise InstallError(f"{url}: the transfer broke off after {done} bytes "
                                       f"({resp.length} missing): try again")
                return
            done += len(chunk)
            yield chunk


def read_body(url: str, limit: int, timeout: float, budget: float = 60.0) -> bytes:
    """At most about `limit` bytes of url's body, within `timeout + budget` seconds."""
    chunks, size = [], 0
    for chunk in stream_body(url, timeout, timeout + budget):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def load_manifest(source: str | None, timeout: float = NET_TIMEOUT_S) -> tuple:
    """(manifest dict, folder with local wheels or None, where it came from)."""
    source = source or os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST
    folder = None
    if _is_url(source) and not source.startswith("file:"):
        raw = read_body(source, MAX_MANIFEST_BYTES + 1, timeout)
    else:
        try:
            path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path)
                        if source.startswith("file:") else source)
            if path.is_dir():
                path = path / "manifest.json"
            found = path.is_file()
        except (OSError, ValueError) as exc:  # no permission, a name too long, ...
            raise InstallError(f"--manifest {source}: cannot look at it ({one_line(exc)})",
                               code=2) from exc
        if not found:
            raise InstallError(f"--manifest {source}: no such file (give manifest.json, the folder "
                               "holding it, or its URL)", code=2)
        folder = path.parent
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise InstallError(f"{path}: cannot read it ({one_line(exc)})") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InstallError(f"{source}: larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a release "
                           "manifest", code=2)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, huge numbers, deep nesting
        raise InstallError(f"{source}: not a JSON manifest ({one_line(exc)}): give the release's "
                           "manifest.json", code=2) from exc
    problem = manifest_problem(data)
    if problem:
        raise InstallError(f"{source}: {problem}", code=2)
    return data, folder, source


def manifest_problem(data) -> str | None:
    if not isinstance(data, dict):
        return "not a manifest (a JSON object with 'wheels' is expected)"
    if data.get("schema_version") != SCHEMA_VERSION:
        return (f"schema_version {data.get('schema_version')!r}: this installer reads version "
                f"{SCHEMA_VERSION}; download the installer of that release ({INSTALLER_URL})")
    if data.get("release") is not None and not isinstance(data["release"], dict):
        return "'release' is not an object"
    wheels = data.get("wheels")
    if not isinstance(wheels, list) or not all(isinstance(w, dict) for w in wheels):
        return "'wheels' is not a list of objects"
    for i, w in enumerate(wheels):
        name = w.get("filename")
        if not isinstance(name, str) or not FILENAME_RE.fullmatch(name):
            return f"wheels[{i}]: filename {name!r} is not a plain wheel file name"
        if not isinstance(w.get("sha256"), str) or not SHA256_RE.fullmatch(w["sha256"]):
            return f"wheels[{i}] ({name}): sha256 is not 64 lowercase hex digits"
        size = w.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_WHEEL_BYTES:
            return f"wheels[{i}] ({name}): size {size!r} is not a byte count"
    return None


# ---- fetching and verifying ----------------------------------------------------------------

class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise."""

    def __init__(self, name: str, total: int, quiet: bool = False):
        self.name, self.total, self.quiet = name, max(total, 1), quiet
        self.tty = sys.stderr.isatty()
        self.shown = -1
        self.start = time.monotonic()

    def update(self, done: int) -> None:
        if self.quiet:
            return
        percent = min(100, done * 100 // self.total)
        step = percent if self.tty else percent - percent % 10
        if step == self.shown:
            return
        self.shown = step
        rate = done / max(time.monotonic() - self.start, 1e-3) / 1e6
        bar = "#" * (percent // 4) + "-" * (25 - percent // 4)
        text = f"  {self.name[:48]} [{bar}] {percent:3d}% {done / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s"
        sys.stderr.write(("\r" + text) if self.tty else text + "\n")
        if self.tty and percent == 100:
            sys.stderr.write("\n")
        sys.stderr.flush()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(entry: dict, folder: Path | None, dest: Path, quiet: bool = False) -> Path:
    """The verified wheel in dest/: from the manifest's folder when it is there, else its url."""
    name, size, want = entry["filename"], entry["size"], entry["sha256"]
    target = dest / name
    local = folder / name if folder else None
    if local is not None and local.is_file():
        shutil.copyfile(local, target)
        origin = str(local)
    else:
        url = text_of(entry.get("url"))
        if not _is_url(url):
            raise InstallError(f"{name}: not in {folder or 'a local folder'} and the manifest gives "
                               f"no http(s) url ({url!r}): put the wheel next to manifest.json")
        origin = url
        bar = Progress(name, size, quiet)
        # The whole download gets NET_TIMEOUT_S plus what MIN_RATE needs for the wheel's size.
        with target.open("wb") as out:
            done = 0
            for chunk in stream_body(url, NET_TIMEOUT_S, NET_TIMEOUT_S + size / MIN_RATE):
                done += len(chunk)
                if done > size:
                    raise InstallError(f"{url}: larger than the {size} bytes the manifest gives: "
                                       "the file on the server is not the released one; nothing "
                                       "was installed")
                out.write(chunk)
                bar.update(done)
    got_size = target.stat().st_size
    if got_size != size:
        raise InstallError(f"{origin}: {got_size} bytes, the manifest says {size}: the download is "
                           "incomplete or not the released file; nothing was installed")
    got = sha256_file(target)
    if got != want:
        raise InstallError(f"{origin}: sha256 {got} does not match the manifest's {want}: the file "
                           "is damaged or was tampered with; nothing was installed")
    return target


# ---- installing ----------------------------------------------------------------------------

PIP_TIMEOUT_S = 1800


def run_pip(python_exe: str, args: list, what: str) -> str:
    """pip in the target interpreter; InstallError with pip's last line when it fails."""
    cmd = [python_exe, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"{what}: pip ran over {PIP_TIMEOUT_S} s: check the network, then run "
                           "the installer again") from exc
    except OSError as exc:
        raise InstallError(f"{what}: cannot run pip ({one_line(exc)})") from exc
    if proc.returncode:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or ["no output"]
        raise InstallError(f"{what}: pip failed: {one_line(errors[0])}")
    return proc.stdout


def wheel_fits_python(filename: str, python_tag: str | None) -> bool:
    """Whether a wheel's Python tag (py3, cp312, cp39.cp310, ...) and ABI let this CPython
    install it (abi3: that version or newer)."""
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return False
    pys, abi = parts[-3].split("."), parts[-2]
    mine = cp_tuple(python_tag)
    for tag in pys:
        if tag in ("py3", "py2.py3"):
            return True
        theirs = cp_tuple(tag)
        if mine and theirs and (theirs == mine or (abi == "abi3" and theirs <= mine)):
            return True
    return False


def fetch_triton(python_exe: str, requirement: str, folder: Path | None, dest: Path,
                 python_tag: str | None = None) -> Path:
    """A Triton wheel meeting the requirement, from the manifest's folder (the newest one this
    Python can install) or from PyPI."""
    name = parse_requirement(requirement)[0].replace("-", "_")
    if folder is not None:
        found = [c for c in folder.glob(f"{name}-*.whl")
                 if triton_meets(c.name.split("-")[1], requirement) and wheel_fits_python(c.name, python_tag)]
        if found:
            best = max(found, key=lambda c: version_key(c.name.split("-")[1]) or [])
            shutil.copyfile(best, dest / best.name)
            return dest / best.name
    before = set(dest.glob("*.whl"))
    run_pip(python_exe, ["download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
                         requirement], f"downloading {requirement}")
    got = sorted(set(dest.glob("*.whl")) - before)
    if not got:
        raise InstallError(f"downloading {requirement}: pip saved no wheel")
    return got[0]


def installed_files(names) -> dict:
    """{name: {"version", "files": [absolute paths]}} of the installed distributions (run in the
    target interpreter through --files). Paths are not resolved: a symbolic link (uv's link
    mode) is kept as the link it is."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            dist = metadata.distribution(name)
        except Exception:  # noqa: BLE001, S112 - not installed, or a broken dist-info: skip it
            continue
        files = [os.path.abspath(str(dist.locate_file(f))) for f in (dist.files or [])]
        out[name] = {"version": dist.version, "record": dist.files is not None,
                     "files": [f for f in files if os.path.lexists(f)]}
    return out


def _force_remove(path: str) -> None:
    """os.unlink that also removes a read-only file (Windows refuses those otherwise)."""
    try:
        os.unlink(path)
    except PermissionError:
        os.chmod(path, stat.S_IWRITE | stat.S_IREAD)
        os.unlink(path)


def _rmtree_onerror(func, path, _exc_info):
    try:
        os.chmod(path, stat.S_IWRITE | stat.S_IREAD)
        func(path)
    except OSError:
        pass  # best effort: a leftover backup folder is named .sageattention-backup-*


class Snapshot:
    """The files of the distributions an install will change, kept (hard links where the file
    system allows, copies otherwise) until the install is over: a failure or an interrupt after
    the first change puts every one of them back, so the environment is as it was."""

    def __init__(self, python_exe: str, names: list, where: str, new_tops=()):
        self.python_exe, self.names = python_exe, list(dict.fromkeys(names))
        self.before = installed_files_of(python_exe, self.names, must=True)
        # Files the new wheels write that do not exist yet, and top-level entries that do not:
        # a rollback removes them (pip's uninstall cannot know what it wrote part-way).
        self.where = where
        tops, wheel_files = new_tops if isinstance(new_tops, tuple) else (list(new_tops), [])
        self.new_files = [f for f in wheel_files if not os.path.lexists(os.path.join(where, f))]
        self.new_tops = [t for t in dict.fromkeys(tops) if not os.path.lexists(os.path.join(where, t))]
        self.keep_backup = False
        self.kept = []  # (name, path, kept copy or None, link target or None)
        self.folder = None
        try:
            # Next to site-packages: the same file system, so hard links cost nothing.
            self.folder = Path(tempfile.mkdtemp(prefix=".sageattention-backup-", dir=where))
            for name, info in self.before.items():
                for i, path in enumerate(info["files"]):
                    if os.path.islink(path):
                        self.kept.append((name, path, None, os.readlink(path)))
                        continue
                    keep = self.folder / f"{name}-{i}"
                    try:
                        os.link(path, keep)
                    except OSError:
                        shutil.copy2(path, keep)
                    self.kept.append((name, path, keep, None))
        except BaseException as exc:  # OSError (disk full, ...) or an interrupt: nothing changed yet
            self.close()
            if isinstance(exc, OSError):
                raise InstallError(f"{where}: cannot keep the installed files aside "
                                   f"({one_line(exc)}): nothing was changed") from exc
            raise

    @staticmethod
    def _unchanged(path: str, keep: Path) -> bool:
        try:
            if os.path.samefile(path, keep):
                return True  # the very file (hard link): pip never replaced it
            a, b = os.stat(path), os.stat(keep)
            return a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)
        except OSError:
            return False

    def restore(self, names=None) -> list:
        """Put back what is missing or changed; the files that could not be restored."""
        failed = []
        for name, path, keep, link in self.kept:
            if names is not None and name not in names:
                continue
            try:
                if link is not None:
                    if os.path.islink(path) and os.readlink(path) == link:
                        continue
                    if os.path.lexists(path):
                        _force_remove(path)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    os.symlink(link, path)
                    continue
                if os.path.lexists(path) and not os.path.islink(path) and self._unchanged(path, keep):
                    continue
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if os.path.lexists(path):
                    _force_remove(path)
                shutil.copy2(keep, path)
            except OSError as exc:
                failed.append(f"{path}: {one_line(exc)}")
        return failed

    def rollback(self) -> str:
        """Uninstall what the install left, put the old files back; the versions now there.
        Ctrl-C is ignored meanwhile: a rollback cut short would leave neither state."""
        import signal

        try:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except (ValueError, OSError):  # not the main thread: nothing to shield
            previous = None
        try:
            return self._rollback()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _rollback(self) -> str:
        for name in self.names:
            try:
                run_pip(self.python_exe, ["uninstall", "-y", name], f"rolling back {name}")
            except InstallError:
                pass  # not installed any more, or already gone
        for top in self.new_tops:
            target = os.path.join(self.where, top)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, onerror=_rmtree_onerror)
            elif os.path.lexists(target):
                try:
                    _force_remove(target)
                except OSError:
                    pass
        for rel in self.new_files:
            target = os.path.join(self.where, rel)
            if os.path.lexists(target) and not os.path.isdir(target):
                try:
                    _force_remove(target)
                except OSError:
                    pass
        self._remove_pip_leftovers()
        failed = self.restore()
        now = installed_files_of(self.python_exe, self.names)
        state = ", ".join(f"{n} {now[n]['version']}" if n in now else f"no {n}" for n in self.names)
        if failed:
            self.keep_backup = True  # the only copy of what could not be put back
            state += (f"; {len(failed)} file(s) could not be put back (first {failed[0]}): their "
                      f"originals are kept in {self.folder}; close programs using this Python "
                      "and reinstall those packages with pip install --force-reinstall --no-deps")
        return state

    def _remove_pip_leftovers(self) -> None:
        """pip renames what it uninstalls to '~' + name[1:] until it is done: an interrupted pip
        leaves those entries, and every later pip run warns about them."""
        stems = {n.replace("-", "_").lower()[1:] for n in self.names}
        try:
            entries = os.listdir(self.where)
        except OSError:
            return
        for entry in entries:
            rest = entry[1:].replace("-", "_").lower()
            if entry.startswith("~") and any(rest == st or rest.startswith((st + "_", st + "."))
                                             for st in stems):
                target = os.path.join(self.where, entry)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target, onerror=_rmtree_onerror)

    def close(self) -> None:
        if self.folder is not None and not self.keep_backup:
            shutil.rmtree(self.folder, onerror=_rmtree_onerror)
            self.folder = None


def wheel_tops(wheels) -> tuple:
    """(top-level names, file paths) the wheels install into site-packages."""
    import zipfile

    tops, files = [], []
    for wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as zf:
                names = [n for n in zf.namelist() if n and not n.endswith("/")]
        except (OSError, zipfile.BadZipFile):
            continue  # pip will say what is wrong with it
        names = [n for n in names if not n.split("/")[0].endswith(".data")]  # pip moves those
        tops += [n.split("/")[0] for n in names]
        files += names
    return list(dict.fromkeys(tops)), files


def installed_files_of(python_exe: str, names, must: bool = False) -> dict:
    """installed_files() in the target interpreter; {} (or, with must, InstallError) when it
    cannot say."""
    try:
        proc = subprocess.run([python_exe, str(Path(__file__).resolve()), "--files", *names],
                              capture_output=True, text=True, timeout=300, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode == 0 and lines:
            return json.loads(lines[-1])
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    if must:
        raise InstallError(f"{python_exe}: could not list the installed files of "
                           f"{', '.join(names)}: nothing was changed")
    return {}


def check_writable(env: dict) -> None:
    purelib = env.get("purelib")
    if not env.get("site_writable"):
        raise InstallError(f"{purelib}: no write access: run the installer as the user who owns "
                           "that Python (or from an elevated prompt), or copy the Python folder "
                           "somewhere you can write")


def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def self_test(python_exe: str, timeout: float = 900) -> dict:
    """`python -m sageattention doctor --json --no-manifest` in the target: {"ok", "failed"}."""
    cmd = [python_exe, "-m", "sageattention", "doctor", "--json", "--no-manifest"]
    try:
        # From an empty folder: `-m` looks in the working folder first, and a sageattention
        # source checkout there would answer instead of the installed wheel.
        with tempfile.TemporaryDirectory(prefix="sageattention-selftest-") as cwd:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                                  cwd=cwd)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"ok": False, "failed": [f"the self-test could not run ({one_line(exc)})"]}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "failed": [f"the self-test printed no report: {tail}"]}
    failed = [f"{c.get('name')}: {c.get('detail')} -> {c.get('fix')}"
              for c in report.get("checks", []) if not c.get("ok")]
    return {"ok": proc.returncode == 0 and not failed, "failed": failed, "checks": report.get("checks", [])}


# ---- the command line ----------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="install_sageattention.py",
                                 description="Install the sageattention wheel that fits a Python "
                                             "environment (see the file's docstring).")
    ap.add_argument("--python-exe", help="the Python to install into (default: this one)")
    ap.add_argument("--manifest", help=f"manifest.json: URL, file or folder (default: ${MANIFEST_ENV} "
                                       "or the latest release)")
    ap.add_argument("--dry-run", action="store_true", help="decide and explain, change nothing")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--yes", action="store_true", help="allow removing a conflicting Triton package")
    ap.add_argument("--platform", choices=PLATFORMS, help="describe another machine: its OS")
    ap.add_argument("--python", dest="python_tag", help="another machine's Python tag, e.g. cp312")
    ap.add_argument("--torch", help="another machine's torch.__version__, e.g. 2.8.0+cu129")
    ap.add_argument("--gpu-arch", action="append", dest="gpu_archs", metavar="X.Y",
                    help="another machine's GPU compute capability (repeat per GPU)")
    ap.add_argument("--no-self-test", action="store_true", help="skip the GPU self-test")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.python_tag is not None and cp_tuple(args.python_tag.lower()) is None:
        ap.error(f"--python {args.python_tag!r}: give a CPython tag such as cp312")
    if args.python_tag:
        args.python_tag = args.python_tag.lower()
    for gpu in args.gpu_archs or []:
        if not GPU_RE.fullmatch(gpu):
            ap.error(f"--gpu-arch {gpu!r}: give a compute capability such as 8.9")
    if args.torch is not None and version_key(split_torch(args.torch)[0]) is None:
        ap.error(f"--torch {args.torch!r}: give torch.__version__, e.g. 2.8.0+cu129")
    return args


def environment_notes(env: dict) -> list:
    """Warnings about the target that do not stop the install."""
    notes = []
    emb = env.get("embedded") or {}
    if env.get("platform") == "windows" and (not emb.get("include") or not emb.get("libs")):
        missing = " and ".join(n + "/" for n in ("include", "libs") if not emb.get(n))
        notes.append(f"this Python has no {missing} folder (an embedded Python): triton-windows "
                     f"needs them to compile kernels; copy include/ and libs/ from a full CPython "
                     f"{env.get('python_version')} of the same version into "
                     f"{env.get('base_prefix') or env.get('prefix')}")
    return notes


def decide(args, env: dict, manifest: dict) -> dict:
    overrides = {"platform": args.platform, "python_tag": args.python_tag, "torch": args.torch,
                 "gpu_archs": args.gpu_archs}
    machine = machine_of(env, overrides)
    result = explain(manifest.get("wheels", []), machine)
    result["machine"] = machine
    entry = next((w for w in manifest["wheels"] if w.get("filename") == result["wheel"]), None)
    if entry is not None:
        result["triton"] = triton_requirement(machine["platform"], machine["torch"], entry)
    if env.get("torch_error") and not args.torch:
        result["why"].insert(0, f"torch does not import in that Python ({env['torch_error']}): "
                                "repair torch first (reinstall the CUDA build you use)")
    if env.get("cuda_error"):
        result.setdefault("notes", []).append(f"CUDA: {env['cuda_error']}")
    if not machine["gpu_archs"] and not args.gpu_archs:
        result.setdefault("notes", []).append("no CUDA GPU visible: the GPU field was not checked")
    result.setdefault("notes", []).extend(environment_notes(env))
    return entry, result


def say(args, text: str) -> None:
    if not args.json:
        print(text, flush=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--probe" in argv:
        print(json.dumps(probe_environment()))
        return 0
    if argv[:1] == ["--files"]:
        print(json.dumps(installed_files(argv[1:])))
        return 0
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    result = {"wheel": None, "triton": None, "why": [], "installed": False}
    try:
        code = run(args, result)
    except InstallError as exc:
        result["error"] = str(exc)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"install_sageattention: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        if result.get("installed"):
            print(f"install_sageattention: interrupted after installing {result.get('wheel')}: "
                  "run `python -m sageattention doctor` to check it", file=sys.stderr)
        else:
            print("install_sageattention: interrupted; anything already changed was put back",
                  file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    return code


def run(args, result: dict) -> int:
    python_exe = args.python_exe or sys.executable
    env = probe_interpreter(python_exe)
    result["environment"] = {k: env.get(k) for k in ("executable", "python_tag", "platform", "torch",
                                                       "gpu_archs", "gpu_names", "triton",
                                                       "sageattention", "embedded")}
    manifest, folder, source = load_manifest(args.manifest)
    say(args, f"manifest: {source} ({len(manifest['wheels'])} wheels, release "
              f"{show((manifest.get('release') or {}).get('tag'))})")
    say(args, f"target: {env['executable']} ({env['python_tag']}, {env['platform']}, torch "
              f"{show(env.get('torch'))}, GPU {' '.join(env.get('gpu_archs') or []) or 'none'})")
    entry, decision = decide(args, env, manifest)
    result.update(decision)
    for note in result.get("notes", []):
        say(args, f"note: {note}")
    if entry is None:
        say(args, "no wheel fits this machine:")
        for line in result["why"]:
            say(args, f"  - {line}")
        return 1
    triton = triton_actions(env, result["triton"]) if not (args.platform or args.torch) else \
        {"install": result["triton"], "remove": [], "note": "another machine: not checked"}
    result["triton_actions"] = triton
    say(args, f"wheel: {entry['filename']}")
    say(args, f"triton: {result['triton'] or 'none'} ({triton['note']})")
    if args.dry_run or args.platform or args.python_tag or args.torch or args.gpu_archs:
        if not args.dry_run:
            say(args, "the overrides describe another machine: nothing installed (--dry-run implied)")
        return 0
    if not env.get("pip"):
        raise InstallError(f"{python_exe}: pip is not installed in it: run `{python_exe} -m "
                           "ensurepip` (or get-pip.py for an embedded Python), then again")
    if env.get("torch_error") or not env.get("torch"):
        raise InstallError(f"{python_exe}: torch does not import ({show(env.get('torch_error'))}): "
                           "install or repair your CUDA torch first; this installer never does")
    check_writable(env)
    if triton["remove"] and not confirm(f"remove {', '.join(triton['remove'])} (conflicts with "
                                        f"{result['triton']})?", args.yes):
        raise InstallError(f"{', '.join(triton['remove'])} is installed beside "
                           f"{result['triton']} and both at once break Triton: run again with "
                           "--yes to remove it, or `pip uninstall " + " ".join(triton["remove"]) + "`")
    with tempfile.TemporaryDirectory(prefix="sageattention-install-") as tmp:
        dest = Path(tmp)
        wheel = fetch_wheel(entry, folder, dest, quiet=args.json)
        say(args, f"verified sha256 {entry['sha256'][:16]}... ({entry['size']} bytes)")
        files = [wheel]
        if triton["install"]:
            files.append(fetch_triton(python_exe, triton["install"], folder, dest, env.get("python_tag")))
            say(args, f"fetched {files[-1].name}")
        # Everything is fetched and verified: only now does the environment change.
        kept_triton = parse_requirement(result["triton"])[0] if result["triton"] else None
        touched = ["sageattention"] + ([kept_triton] if kept_triton and (triton["install"] or triton["remove"])
                                       else []) + triton["remove"]
        snapshot = Snapshot(python_exe, touched, env["purelib"], new_tops=wheel_tops(files))
        if triton["remove"] and not triton["install"] and \
                not (snapshot.before.get(kept_triton) or {}).get("record"):
            snapshot.close()
            raise InstallError(f"{kept_triton} has no RECORD of its files, so removing "
                               f"{', '.join(triton['remove'])} (which owns the same files) could "
                               f"not be undone: run `pip install --force-reinstall --no-deps "
                               f"\"{result['triton']}\"` first, then the installer again")
        try:
            if triton["remove"]:
                # triton and triton-windows own the same files: remove the other one first, then
                # write the kept one's files again (pip's reinstall, or the snapshot's copies).
                run_pip(python_exe, ["uninstall", "-y", *triton["remove"]],
                        f"removing {' '.join(triton['remove'])}")
                if not triton["install"]:
                    snapshot.restore([kept_triton])
                say(args, f"removed {', '.join(triton['remove'])}")
            run_pip(python_exe, ["install", "--no-deps", "--no-index", "--force-reinstall",
                                 *map(str, files)], f"installing {entry['filename']}")
        except InstallError as exc:
            state = snapshot.rollback()
            raise InstallError(f"{exc}; the environment was put back as it was ({state})") from exc
        except BaseException:  # Ctrl-C (or anything else) in the middle: undo, then stop
            snapshot.rollback()
            raise
        finally:
            snapshot.close()
    result["installed"] = True
    say(args, f"installed {entry['filename']}" + (f" and {files[-1].name}" if len(files) > 1 else ""))
    after = probe_interpreter(python_exe)
    if after.get("torch") != env.get("torch"):  # --no-deps makes this impossible; say so if not
        raise InstallError(f"torch changed from {env.get('torch')} to {after.get('torch')}: "
                           "reinstall your torch build; please report this")
    if args.no_self_test:
        return 0
    say(args, "self-test: python -m sageattention doctor (the first run compiles Triton kernels: "
              "a minute or two)")
    test = self_test(python_exe)
    result["self_test"] = test
    for line in test["failed"]:
        say(args, f"  FAILED {line}")
    say(args, "self-test: ok" if test["ok"] else "self-test: FAILED (see above)")
    return 0 if test["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
