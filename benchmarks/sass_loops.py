"""Opcode histogram of each attention kernel's key loops, from a compiled unit's SASS.

    python benchmarks/sass_loops.py LIBRARY.so [--arch sm_90] [--kernel D128 full pv0] [--top 30]

Why: with no GPU at hand, the instructions one key tile costs are the quickest measure of a
kernel change. A loop is the span from a backward branch's target to the branch; the key loop
is the largest one, and since the masked and unmasked key steps are separate copies
(csrc/attention.cuh), the two largest loops are those steps: their histograms say what every
tile pays (copies, address arithmetic, spills as LDL/STL, branches) next to the MMAs. This is
how the copy loops that cost a quarter of the kernel's instructions were found
(docs/perf-notes.md row 24). Static counts: a branch skipped at run time still counts.
"""
from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sass_mma import cuobjdump, kernel_label

INSTR_RE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);")
TARGET_RE = re.compile(r"0x([0-9a-f]+)")


def split_functions(sass: str) -> dict:
    """{kernel name: [(address, instruction text)]} for the attention kernels."""
    out, current = {}, None
    for line in sass.splitlines():
        if "Function :" in line:
            current = kernel_label(line)
            if current:
                out[current] = []
            continue
        if current:
            for m in INSTR_RE.finditer(line):
                out[current].append((int(m.group(1), 16), m.group(2).strip()))
    return out


def opcode(text: str) -> str:
    text = re.sub(r"^@!?U?P\w+\s+", "", text)  # predicate guard
    return text.split()[0].split(".")[0] if text else ""


def loops(instrs: list, top: int = 2) -> list:
    """The `top` largest loops, each {"start", "end", "instructions", "opcodes": Counter}."""
    found = set()
    for addr, text in instrs:
        if opcode(text) == "BRA":
            t = TARGET_RE.search(text)
            if t and int(t.group(1), 16) < addr:
                found.add((int(t.group(1), 16), addr))
    result = []
    for start, end in sorted(found, key=lambda se: se[1] - se[0], reverse=True)[:top]:
        body = [opcode(text) for addr, text in instrs if start <= addr <= end]
        result.append({"start": start, "end": end, "instructions": len(body),
                       "opcodes": collections.Counter(body)})
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("library", type=Path)
    ap.add_argument("--arch", default="sm_90", help="sm_XY (default sm_90)")
    ap.add_argument("--kernel", help='only kernels whose name contains this, e.g. "D128 full pv0"')
    ap.add_argument("--top", type=int, default=25, help="opcodes shown per loop")
    args = ap.parse_args(argv)
    if not args.library.is_file():
        print(f"sass_loops.py: {args.library}: no such file", file=sys.stderr)
        return 2
    if not re.fullmatch(r"sm_\d+a?", args.arch):
        print(f"sass_loops.py: --arch {args.arch!r}: expected sm_XY, e.g. sm_90", file=sys.stderr)
        return 2
    tool = cuobjdump()
    if tool is None:
        print("sass_loops.py: cuobjdump not found: install the CUDA toolkit or triton", file=sys.stderr)
        return 2
    sass = subprocess.run([tool, "-sass", "-arch", args.arch, str(args.library)],
                          capture_output=True, text=True, timeout=600, check=False).stdout
    kernels = split_functions(sass)
    if not kernels:
        print(f"sass_loops.py: {args.library}: no attention kernel for {args.arch}", file=sys.stderr)
        return 1
    for name, instrs in kernels.items():
        if args.kernel and args.kernel not in name:
            continue
        print(f"== {name}: {len(instrs)} instructions")
        for loop in loops(instrs):
            ops = ", ".join(f"{k} {v}" for k, v in loop["opcodes"].most_common(args.top))
            print(f"  loop {loop['start']:#x}-{loop['end']:#x}: {loop['instructions']} instructions: {ops}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
