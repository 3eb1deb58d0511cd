"""The repair step of a build: auditwheel on Linux (to the row's manylinux policy), delvewheel on
Windows, never vendoring torch's or CUDA's libraries (they come from the user's torch).
"""
from __future__ import annotations

from pathlib import Path

from . import matrix

# Libraries the repair tools must leave to the installed torch (shared/FACTS.md).
LINUX_EXCLUDES = ("libc10*", "libtorch*", "libcudart.so*", "libcuda.so*")
WINDOWS_EXCLUDES = ("c10.dll", "c10_cuda.dll", "torch.dll", "torch_cpu.dll", "torch_cuda.dll",
                    "torch_python.dll", "cudart64_12.dll", "cudart64_13.dll", "nvcuda.dll")


def repair_command(row: matrix.Row, python: str, built: Path, out: Path) -> list:
    """The command that repairs the wheel pip built (`built`) into `out`."""
    if row.platform == "linux":
        return ([python, "-m", "auditwheel", "repair", str(built), "-w", str(out),
                 "--plat", row.platform_tag, "--only-plat"]
                + [arg for lib in LINUX_EXCLUDES for arg in ("--exclude", lib)])
    return ([python, "-m", "delvewheel", "repair", str(built), "-w", str(out)]
            + [arg for lib in WINDOWS_EXCLUDES for arg in ("--exclude", lib)])
