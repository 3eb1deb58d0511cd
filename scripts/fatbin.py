"""List the GPU code embedded in a compiled extension (.so or .pyd) without the CUDA toolkit.

    python scripts/fatbin.py LIBRARY [LIBRARY ...]

nvcc embeds one fat binary per translation unit (the `.nv_fatbin` section of an ELF file, the
`.nv_fatb` section of a PE file). Each starts with a 16-byte header (magic 0xBA55ED50, version 1,
header size 16, size of what follows) and holds entries back to back, each with its own header:
kind (1 = PTX, 2 = cubin), header size, payload size, and the target arch as major*10+minor.
Only these headers are read, so compressed payloads need no decompression. The layout is not
documented by NVIDIA; it is cross-checked against `cuobjdump --list-elf/--list-ptx` wherever a
toolkit is installed (scripts/check_wheel.py does that and tests/test_fatbin.py checks the
parser against nvcc's own output here).
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0xBA55ED50
CONTAINER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries
ENTRY = struct.Struct("<HHIQIIHHI")  # kind, ?, header size, payload size, ?, ?, minor, major, arch
KINDS = {1: "ptx", 2: "cubin"}


@dataclass(frozen=True)
class Code:
    kind: str  # "cubin" or "ptx"
    arch: str  # "8.0", "9.0", "12.0"

    @property
    def sm(self) -> str:
        major, minor = self.arch.split(".")
        return f"{'sm' if self.kind == 'cubin' else 'compute'}_{major}{minor}"


def _arch(number: int) -> str:
    return f"{number // 10}.{number % 10}"


def _container(data: bytes, start: int) -> tuple:
    """(codes, end offset) of the fat binary at `start`, or None if it is not one."""
    if start + CONTAINER.size > len(data):
        return None
    magic, version, header, size = CONTAINER.unpack_from(data, start)
    if magic != MAGIC or version != 1 or header != CONTAINER.size:
        return None
    end = start + header + size
    if end > len(data):
        return None
    codes, pos = [], start + header
    while pos < end:
        if pos + ENTRY.size > end:
            return None
        kind, _, entry_header, payload, _, _, _, _, arch = ENTRY.unpack_from(data, pos)
        if kind not in KINDS or entry_header < ENTRY.size or arch == 0:
            return None
        codes.append(Code(KINDS[kind], _arch(arch)))
        pos += entry_header + payload
    if pos != end:  # the entries must tile the container exactly
        return None
    return codes, end


def embedded_code(data: bytes) -> list:
    """Every (kind, arch) embedded in a binary, in file order, duplicates kept."""
    codes, pos = [], 0
    needle = struct.pack("<I", MAGIC)
    while True:
        pos = data.find(needle, pos)
        if pos < 0:
            return codes
        found = _container(data, pos)
        if found is None:
            pos += 1
            continue
        more, pos = found
        codes.extend(more)


def archs_of(data: bytes, kind: str = "cubin") -> list:
    """Sorted distinct archs that have code of `kind` ("cubin" or "ptx")."""
    found = {c.arch for c in embedded_code(data) if c.kind == kind}
    return sorted(found, key=lambda a: tuple(int(x) for x in a.split(".")))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    status = 0
    for name in argv:
        path = Path(name)
        if not path.is_file():
            print(f"{name}: no such file", file=sys.stderr)
            status = 2
            continue
        data = path.read_bytes()
        cubins, ptx = archs_of(data, "cubin"), archs_of(data, "ptx")
        if not cubins and not ptx:
            print(f"{name}: no GPU code found")
            continue
        print(f"{name}: cubin sm {' '.join(cubins) or '-'}; PTX {' '.join(ptx) or '-'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
