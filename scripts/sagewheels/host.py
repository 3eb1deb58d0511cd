"""What this machine is, for the wheel tools: its platform, its build row (torch, CUDA variant,
nvcc) and why it cannot build another row. One module, so that building and checking read the
machine the same way.
"""
from __future__ import annotations

import os
import platform as platform_mod
import re
import subprocess
import sys

from . import matrix, tools


def host_platform() -> str:
    """The matrix's platform name of this machine."""
    return "windows" if os.name == "nt" else "linux"


def host_row(rules: dict, nvcc_version: str | None) -> matrix.Row:
    """The row this machine can build: its platform, torch, CUDA variant and nvcc."""
    import torch

    if not torch.version.cuda:
        raise SystemExit(f"torch {torch.__version__} has no CUDA support: no host row to build")
    if nvcc_version is None:
        raise SystemExit(f"no nvcc found, so no host row to build: nvcc comes from "
                         f"{tools.PROVIDERS['nvcc']}")
    torch_v = re.match(r"\d+\.\d+\.\d+", torch.__version__).group(0)
    minor = ".".join(torch_v.split(".")[:2])
    known = rules["torch"].get(minor)
    if known is None:
        raise SystemExit(f"torch {minor} has no entry in scripts/compat_rules.yaml; add one")
    plat = host_platform()
    series = known["triton_series"]
    nxt = f"{series.split('.')[0]}.{int(series.split('.')[1]) + 1}"
    triton = (f"triton-windows<{nxt}" if plat == "windows" else f"triton=={series}.*")
    cuda = "cu" + torch.version.cuda.replace(".", "")
    raw = {"id": f"host-{plat}-torch{torch_v}-{cuda}", "platform": plat, "python": "abi3",
           "python_min": known["limited_api_min"], "torch": torch_v, "cuda": cuda,
           "toolkit": nvcc_version, "triton": triton,
           "abi": "abi3" if tuple(map(int, minor.split("."))) >= (2, 6) else "cpython"}
    if plat == "linux":
        # Built here, the wheel can claim this machine's glibc (a manylinux image would do better).
        libc, glibc = platform_mod.libc_ver()
        if libc == "glibc" and glibc:
            raw["manylinux"] = glibc.replace(".", "_")
    if raw["abi"] == "cpython":
        raw["python"] = [f"cp3{sys.version_info.minor}"]
    row, problems = matrix._check_row(raw["id"], raw, {}, 0, rules)
    if problems:
        raise SystemExit("this machine's environment is not a valid row:\n" +
                         "\n".join(p.message for p in problems))
    return row


def nvcc_version() -> str | None:
    """X.Y of the nvcc scripts/sagewheels/tools.py finds, or None."""
    nvcc = tools.find("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], stdout=subprocess.PIPE, text=True, check=False,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def toolchain_mismatch(row: matrix.Row, have_platform: str, have_torch: str,
                       have_cuda: str | None, have_nvcc: str | None) -> list:
    """Why this machine cannot build the row (empty: it can)."""
    from packaging.version import Version

    why = []
    if have_platform != row.platform:
        why.append(f"the row is for {row.platform}, this machine runs {have_platform}")
    base = re.match(r"\d+\.\d+\.\d+", have_torch)
    if row.abi == "stable":
        # Built against any torch >= the target: TORCH_TARGET_VERSION hides newer APIs.
        if base is None or Version(base.group(0)) < Version(row.torch):
            why.append(f"the row (stable ABI) needs torch {row.torch} or newer to build against, "
                       f"installed is {have_torch}")
    elif base is None or base.group(0) != row.torch:
        why.append(f"the row needs torch {row.torch}, installed is {have_torch}")
    variant = "cu" + have_cuda.replace(".", "") if have_cuda else "cpu"
    if variant != row.cuda:
        why.append(f"the row needs a {row.cuda} torch, installed is {variant}")
    if have_nvcc is None:
        why.append(f"the row needs CUDA toolkit {row.toolkit}, no nvcc found")
    else:
        want = Version(row.toolkit)
        got = Version(have_nvcc)
        if (got.major, got.minor) != (want.major, want.minor):
            why.append(f"the row needs CUDA toolkit {want.major}.{want.minor}, nvcc is {have_nvcc}")
    return why
