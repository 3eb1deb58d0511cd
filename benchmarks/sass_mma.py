"""Count the tensor-core instructions of each attention kernel in a compiled unit's SASS.

    python benchmarks/sass_mma.py LIBRARY.so [--arch sm_89 ...] [--json OUT.json]

Why: on GeForce GPUs (sm_86, sm_89, sm_120) the MMA that accumulates in FP16 runs at twice the
rate of the one accumulating in FP32, which is the point of the "fp16+fp32" (FP16 P·V) and
"fp32+fp16" (FP8 P·V) modes. This reads the SASS (cuobjdump, from the CUDA toolkit or the one
Triton's package carries) and counts, per kernel instantiation (head dim, causal, P·V mode),
the HMMA/IMMA/QMMA (FP8) instructions by shape and accumulator type, so a mode that silently compiled to
the FP32-accumulating instruction shows up. The P·V modes are csrc/attention.cuh's PvMode.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

PV_MODES = {0: "fp16 P.V, fp32 accum", 1: "fp16 P.V, fp16 accum per tile",
            2: "fp8 P.V, fp32 accum", 3: "fp8 P.V, fp32 per tile", 4: "fp8 P.V, fp16 accum per tile"}
# attention_kernel<D_PAD, CAUSAL, PV, VT, MASKED> (older builds: no MASKED)
KERNEL_RE = re.compile(r"attention_kernelILi(\d+)ELb([01])ELi(\d)E(\d+[A-Za-z_]\w*?)(?:Lb([01])E)?EEv")
MMA_RE = re.compile(r"\b([HIQ]MMA\.[0-9A-Z.]+)")


def cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton
        candidate = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        return str(candidate) if candidate.is_file() else None
    except ImportError:
        return None


def count(library: Path, arch: str, tool: str) -> dict:
    sass = subprocess.run([tool, "-sass", "-arch", arch, str(library)], capture_output=True,
                          text=True, timeout=600, check=False).stdout
    return parse_sass(sass)


def kernel_label(function_line: str) -> str | None:
    """"D128 full pv0 (fp16 P.V, fp32 accum, V half)" for a SASS "Function :" line of an
    attention kernel instantiation (" masked" appended for the masked one), None for any other
    function."""
    m = KERNEL_RE.search(function_line)
    if not m:
        return None
    d, causal, pv, vt = int(m.group(1)), m.group(2) == "1", int(m.group(3)), m.group(4)
    vtype = re.sub(r"^[0-9]+_*", "", vt)  # Itanium mangling: length, then name
    masked = " masked" if m.group(5) == "1" else ""
    return (f"D{d} {'causal' if causal else 'full'} pv{pv} ({PV_MODES.get(pv, '?')}, V {vtype})"
            f"{masked}")


def parse_sass(sass: str) -> dict:
    """{kernel: {instruction: count}} from cuobjdump -sass output."""
    kernels, current = {}, None
    for line in sass.splitlines():
        if "Function :" in line:
            current = kernel_label(line)
            if current:
                kernels[current] = collections.Counter()
            continue
        if current:
            for op in MMA_RE.findall(line):
                kernels[current][op] += 1
    return {k: dict(sorted(v.items())) for k, v in kernels.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("library", nargs="+", type=Path)
    ap.add_argument("--arch", action="append", help="sm_XY (default: sm_80 sm_86 sm_89 sm_90 sm_120)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    tool = cuobjdump()
    if tool is None:
        print("sass_mma.py: cuobjdump not found: install the CUDA toolkit or triton", file=sys.stderr)
        return 2
    report = {}
    for lib in args.library:
        if not lib.is_file():
            print(f"sass_mma.py: {lib}: no such file", file=sys.stderr)
            return 2
        for arch in args.arch or ["sm_80", "sm_86", "sm_89", "sm_90", "sm_120"]:
            found = count(lib, arch, tool)
            if not found:
                continue
            report.setdefault(lib.name, {})[arch] = found
            print(f"== {lib.name} {arch}")
            for kernel, ops in found.items():
                print(f"  {kernel}: " + ", ".join(f"{op} x{n}" for op, n in ops.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
