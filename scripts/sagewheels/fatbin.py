"""List the GPU code embedded in a compiled extension (.so or .pyd) without the CUDA toolkit.

    python scripts/sagewheels/fatbin.py LIBRARY [LIBRARY ...]

nvcc embeds one fat binary per translation unit (the `.nv_fatbin` section of an ELF file, the
`.nv_fatb` section of a PE file). Each starts with a 16-byte header (magic 0xBA55ED50, version 1,
header size 16, size of what follows) and holds entries back to back, each with its own header:
kind (1 = PTX, 2 = cubin), header size, payload size, and the target arch as major*10+minor.
Only these headers are read, so compressed payloads need no decompression. The layout is not
documented by NVIDIA; it is cross-checked against `cuobjdump --list-elf/--list-ptx` wherever a
toolkit is installed (scripts/sagewheels/check.py does that and tests/test_fatbin.py checks the
parser against nvcc's own output here).

The scan is linear in the size of the file, whatever the file holds: a container header that
does not parse costs O(1), a container whose entries do not tile it costs one walk over those
entries, and the search then goes on after the last entry walked, so no byte is walked twice
(at most MAX_ENTRIES entries per container). A file it cannot read is one line, exit status 2.
"""
from __future__ import annotations

import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0xBA55ED50
CONTAINER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries
ENTRY = struct.Struct("<HHIQIIHHI")  # kind, ?, header size, payload size, ?, ?, minor, major, arch
KINDS = {1: "ptx", 2: "cubin"}
# What every container header starts with (magic, version 1, header size 16): searching for all
# eight bytes lets bytes.find skip, in C, every stray copy of the magic that could not parse.
PREFIX = CONTAINER.pack(MAGIC, 1, CONTAINER.size, 0)[:8]
# nvcc writes a few entries per arch and kind; far more is not a fat binary but a crafted file.
MAX_ENTRIES = 4096


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
    """(codes, end, resume): the codes of the fat binary whose header is at `start` and the
    offset just past it, or (None, None, resume) if it is not one, where `resume` is where the
    search may go on without walking any entry header twice."""
    _magic, _version, header, size = CONTAINER.unpack_from(data, start)
    end = start + header + size
    if end > len(data):
        return None, None, start + len(PREFIX)
    codes, pos = [], start + header
    while pos < end:
        if pos + ENTRY.size > end or len(codes) >= MAX_ENTRIES:
            return None, None, pos
        kind, _, entry_header, payload, _, _, _, _, arch = ENTRY.unpack_from(data, pos)
        if kind not in KINDS or entry_header < ENTRY.size or arch == 0:
            return None, None, pos
        codes.append(Code(KINDS[kind], _arch(arch)))
        if pos + entry_header + payload > end:  # the last entry runs past the container
            return None, None, pos
        pos += entry_header + payload
    return codes, end, end


def embedded_code(data: bytes) -> list:
    """Every (kind, arch) embedded in a binary, in file order, duplicates kept."""
    codes, pos = [], 0
    while True:
        pos = data.find(PREFIX, pos)
        if pos < 0 or pos + CONTAINER.size > len(data):
            return codes
        found, end, resume = _container(data, pos)
        if found is not None:
            codes.extend(found)
            pos = end
        else:
            # The failed entry at `resume` may itself be the next real header: search from it.
            pos = max(resume, pos + 1)


def archs(codes: list, kind: str = "cubin") -> list:
    """Sorted distinct archs of the `codes` of `kind` ("cubin" or "ptx")."""
    found = {c.arch for c in codes if c.kind == kind}
    return sorted(found, key=lambda a: tuple(int(x) for x in a.split(".")))


def archs_of(data: bytes, kind: str = "cubin") -> list:
    """Sorted distinct archs that have code of `kind` ("cubin" or "ptx") in a binary."""
    return archs(embedded_code(data), kind)


def _read(path: Path) -> tuple:
    """(bytes, None), or (None, why the file cannot be read) in one line."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None, "no such file"
    except (OSError, ValueError) as exc:  # permissions, a loop of links, a NUL in the name
        return None, f"cannot read: {getattr(exc, 'strerror', None) or exc}"
    if stat.S_ISDIR(mode):
        return None, "is a directory, not a library"
    if not stat.S_ISREG(mode):  # reading a FIFO or a device would block or never end
        return None, "not a regular file"
    try:
        return path.read_bytes(), None
    except (OSError, MemoryError) as exc:
        return None, f"cannot read: {getattr(exc, 'strerror', None) or exc}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: " + __doc__.strip().splitlines()[2].strip()
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    status = 0
    for name in argv:
        data, error = _read(Path(name))
        if error:
            print(f"{name}: {error}", file=sys.stderr)
            status = 2
            continue
        codes = embedded_code(data)
        cubins, ptx = archs(codes, "cubin"), archs(codes, "ptx")
        if not cubins and not ptx:
            print(f"{name}: no GPU code found")
            continue
        print(f"{name}: cubin sm {' '.join(cubins) or '-'}; PTX {' '.join(ptx) or '-'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
