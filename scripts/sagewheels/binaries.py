"""Checks of one compiled file (.so, .pyd or .dll) taken from a wheel, for scripts/sagewheels/check.py.

- kind: ELF or PE, told by the magic bytes (never by the name alone);
- structure: the file parses (pyelftools for ELF, pefile for PE) and no section or segment runs
  past its end, so a truncated or garbage file is one problem line naming it;
- GPU code: a cubin for every arch the unit was built for, read from the fat-binary headers
  (scripts/sagewheels/fatbin.py) and cross-checked with `cuobjdump --list-elf` where it is installed;
- linked libraries: ELF NEEDED entries (readelf) free of libpython / libtorch_python; PE imports
  (pefile) only from python3.dll, torch, CUDA, the MSVC runtime, Windows or DLLs the wheel
  vendors itself;
- stable-ABI units: no torch C++ symbol imported (pyelftools for ELF, MSVC-mangled names for PE).

Each check returns (problems, notes) and never raises on hostile bytes: a parser's exception or a
failing readelf / cuobjdump is a problem naming the file. A missing tool or library is a note,
never a silent pass. External programs are found through scripts/sagewheels/tools.py.
"""
from __future__ import annotations

import io
import re
import subprocess
import tempfile
from pathlib import Path

from . import fatbin, matrix, tools

FORBIDDEN_NEEDED = ("libpython", "libtorch_python")
# An arch as setup.py records it and --archs takes it: 8.0, 9.0a, 10.0f, 12.0+PTX.
TOOL_TIMEOUT_S = 120  # readelf / cuobjdump on one file; a hung tool is a problem, not a hang
SUFFIX = {"ELF": ".so", "PE": ".pyd"}  # temporary-file names never come from the wheel


arch_tuple = matrix.arch_tuple  # (major, minor) of "8.9", "9.0a", "12.0+PTX"


def is_arch(text) -> bool:
    """The form of an arch (8.0, 9.0a, 12.0+PTX): the matrix's rule, so that a wheel's recorded
    archs and a row's archs are read by one definition."""
    return isinstance(text, str) and matrix.ARCH_RE.fullmatch(text) is not None


def binary_kind(data: bytes) -> str | None:
    """"ELF", "PE" or None, from the magic bytes (a PE file: "MZ", then "PE\\0\\0" where the DOS
    header's e_lfanew points). `data` may be just the first bytes of a file."""
    if data[:4] == b"\x7fELF":
        return "ELF"
    if data[:2] == b"MZ" and len(data) >= 64:
        at = int.from_bytes(data[0x3C:0x40], "little")
        if data[at:at + 4] == b"PE\0\0":
            return "PE"
    return None


# Machine of a binary as the platform tag spells its architecture.
ELF_MACHINES = {3: "x86", 62: "x86_64", 183: "aarch64"}
PE_MACHINES = {0x14C: "x86", 0x8664: "x86_64", 0xAA64: "aarch64"}


def machine(data: bytes) -> str | None:
    """The CPU a binary is for ("x86_64", "aarch64", "x86"), from its first bytes, or None."""
    kind = binary_kind(data)
    if kind == "ELF" and len(data) >= 20:
        order = "big" if data[5] == 2 else "little"
        return ELF_MACHINES.get(int.from_bytes(data[18:20], order))
    if kind == "PE":
        at = int.from_bytes(data[0x3C:0x40], "little")
        return PE_MACHINES.get(int.from_bytes(data[at + 4:at + 6], "little"))
    return None


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as a short single line (parsers put offsets and newlines in messages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def unreadable(lib: str, kind: str, why: str) -> str:
    return f"{lib}: not a readable {kind} file ({why}): truncated or damaged; rebuild it"


def _run_tool(tool: str, args: list, data: bytes, kind: str) -> tuple:
    """(returncode, stdout, stderr) of `tool args FILE` on a temporary copy of `data`;
    returncode None when the tool could not run or timed out (stderr says why)."""
    with tempfile.NamedTemporaryFile(suffix=SUFFIX.get(kind, ".bin")) as f:
        f.write(data)
        f.flush()
        try:
            proc = subprocess.run([tool, *args, f.name], capture_output=True, text=True,
                                  errors="replace", check=False, timeout=TOOL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, "", f"timed out after {TOOL_TIMEOUT_S} s"
        except OSError as exc:
            return None, "", one_line(exc)
    return proc.returncode, proc.stdout, proc.stderr


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"


# ---- structure ------------------------------------------------------------------------------

def elf_structure_problems(lib: str, data: bytes) -> tuple:
    """(problems, notes): the ELF headers parse and every section and segment lies in the file."""
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError:
        return [], [f"pyelftools not installed: {lib} not checked for truncation"]
    try:
        elf = ELFFile(io.BytesIO(data))
        for section in elf.iter_sections():
            head = section.header
            if head.sh_type != "SHT_NOBITS" and head.sh_offset + head.sh_size > len(data):
                return [unreadable(lib, "ELF", f"section {section.name or '?'} runs past the "
                                   f"end of the {len(data)}-byte file")], []
        for segment in elf.iter_segments():
            if segment.header.p_offset + segment.header.p_filesz > len(data):
                return [unreadable(lib, "ELF", "a segment runs past the end of the file")], []
    except Exception as exc:  # noqa: BLE001 - pyelftools raises many types on hostile bytes
        return [unreadable(lib, "ELF", one_line(exc))], []
    return [], []


def pe_structure_problems(lib: str, data: bytes) -> tuple:
    """(problems, notes): the PE headers parse and every section's raw data lies in the file."""
    try:
        import pefile
    except ImportError:
        return [], [f"pefile not installed: {lib} not checked for truncation"]
    try:
        pe = pefile.PE(data=data, fast_load=True)
        if pe.OPTIONAL_HEADER.SizeOfHeaders > len(data):
            return [unreadable(lib, "PE", f"its headers need {pe.OPTIONAL_HEADER.SizeOfHeaders} "
                               f"bytes, the file has {len(data)}")], []
        for section in pe.sections:
            if section.PointerToRawData + section.SizeOfRawData > len(data):
                name = section.Name.rstrip(b"\0").decode("ascii", "replace")
                return [unreadable(lib, "PE", f"section {name} runs past the end of the "
                                   f"{len(data)}-byte file")], []
    except Exception as exc:  # noqa: BLE001 - pefile raises many types on hostile bytes
        return [unreadable(lib, "PE", one_line(exc))], []
    return [], []


def structure_problems(lib: str, data: bytes) -> tuple:
    """(problems, notes) for the integrity of an ELF or PE file; other bytes are a problem."""
    kind = binary_kind(data)
    if kind == "ELF":
        return elf_structure_problems(lib, data)
    if kind == "PE":
        return pe_structure_problems(lib, data)
    return [(f"{lib} is neither an ELF nor a PE file (it starts with {data[:8]!r}): a truncated "
             "or wrong file was packaged")], []


# ---- GPU code -------------------------------------------------------------------------------

def cuobjdump_archs(data: bytes, kind: str = "ELF") -> tuple:
    """(archs, failure): archs of the cubins `cuobjdump --list-elf` lists (None where cuobjdump
    is missing), and why it failed (None when it ran cleanly)."""
    tool = tools.find("cuobjdump")
    if tool is None:
        return None, None
    rc, out, err = _run_tool(tool, ["--list-elf"], data, kind)
    if rc is None:
        return [], f"cuobjdump could not run: {err}"
    if rc != 0 and not out.strip():
        return [], f"cuobjdump --list-elf failed: {_last_line(err)}"
    found = {f"{int(m) // 10}.{int(m) % 10}" for m in re.findall(r"\.sm_(\d+)[a-z]?\.cubin", out)}
    return sorted(found, key=lambda a: tuple(int(x) for x in a.split("."))), None


def gpu_code_problems(lib: str, data: bytes, want: list) -> tuple:
    """(problems, notes): `lib` must hold a cubin for every arch in `want` ("9.0a" is a 9.0
    cubin in the fat-binary headers) and PTX for every "+PTX" arch."""
    problems, notes = [], []
    ptx_wanted = [a.replace("+PTX", "").rstrip("af") for a in want if a.endswith("+PTX")]
    want = [a.replace("+PTX", "").rstrip("af") for a in want]
    codes = fatbin.embedded_code(data)
    have = fatbin.archs(codes, "cubin")
    no_ptx = [a for a in ptx_wanted if a not in fatbin.archs(codes, "ptx")]
    if no_ptx:
        problems.append(f"{lib} has no PTX for {' '.join(no_ptx)}: newer GPUs would get no kernel")
    missing = [a for a in want if a not in have]
    if missing:
        problems.append(f"{lib} has no cubin for sm {' '.join(missing)} (it has "
                        f"{' '.join(have) or 'none'}): users of those GPUs would get no kernel")
    extra = [a for a in have if a not in want]
    if extra:
        problems.append(f"{lib} has cubins for sm {' '.join(extra)}, which the build did not "
                        "record: a stale binary from another build was packaged")
    listed, failure = cuobjdump_archs(data, binary_kind(data) or "ELF")
    if failure:
        problems.append(f"{lib}: {failure}")
    elif listed is None:
        notes.append(f"{Path(lib).name}: cubins sm {' '.join(have) or 'none'} (fat binary "
                     "headers; cuobjdump not installed)")
    elif listed != have:
        problems.append(f"{lib}: cuobjdump lists cubins for sm {' '.join(listed) or 'none'}, the "
                        f"fat binary headers say {' '.join(have) or 'none'}: scripts/sagewheels/fatbin.py "
                        "misreads this toolkit's format")
    else:
        notes.append(f"{Path(lib).name}: cubins sm {' '.join(have)} (cuobjdump agrees)")
    return problems, notes


# ---- torch C++ symbols in stable-ABI units --------------------------------------------------

# Itanium-mangled names from torch's C++ namespaces (c10::, at::, torch::), and MSVC-mangled
# imports (they start with "?"): a stable-ABI binary may call only torch's C shim.
TORCH_CXX_SYMBOL = re.compile(r"^_ZN?K?(?:St)?\d*(?:3c10|2at|5torch)")


def undefined_elf_symbols(data: bytes) -> list | None:
    """Undefined dynamic symbols of an ELF file (pyelftools), or None where it is missing.
    Raises the parser's exception on a damaged file."""
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError:
        return None
    elf = ELFFile(io.BytesIO(data))
    table = elf.get_section_by_name(".dynsym")
    if table is None:
        return []
    return [sym.name for sym in table.iter_symbols()
            if sym.name and sym["st_shndx"] == "SHN_UNDEF"]


def pe_cxx_imports(data: bytes) -> list | None:
    """MSVC-mangled names a PE file imports from torch's DLLs (pefile), or None where pefile is
    missing. Raises the parser's exception on a damaged file."""
    try:
        import pefile
    except ImportError:
        return None
    pe = pefile.PE(data=data, fast_load=True)
    pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
    return [imp.name.decode("ascii", "replace") for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])
            if entry.dll.decode("ascii", "replace").lower().startswith(("c10", "torch"))
            for imp in entry.imports if imp.name and imp.name.startswith(b"?")]


def stable_abi_problems(lib: str, data: bytes) -> tuple:
    """(problems, notes): a stable-ABI unit must not call torch's C++ API."""
    kind = binary_kind(data)
    if kind is None:
        return structure_problems(lib, data)
    try:
        if kind == "ELF":
            symbols = undefined_elf_symbols(data)
            bad = None if symbols is None else [s for s in symbols if TORCH_CXX_SYMBOL.match(s)]
        else:
            bad = pe_cxx_imports(data)
    except Exception as exc:  # noqa: BLE001 - pyelftools / pefile raise many types on hostile bytes
        return [unreadable(lib, kind, one_line(exc))], []
    if bad is None:
        package = "pyelftools" if kind == "ELF" else "pefile"
        return [], [f"{package} not installed: {lib} not checked for torch C++ symbols"]
    if bad:
        message = (f"{lib} is built for the stable ABI but calls torch's C++ API ({len(bad)} "
                   f"symbols, e.g. {', '.join(bad[:3])}): it would break on other torch versions")
        return [message], []
    return [], [f"{Path(lib).name}: stable ABI, no torch C++ symbols"]


# ---- linked libraries -----------------------------------------------------------------------

def needed_libraries(data: bytes) -> tuple:
    """(NEEDED entries, failure) from `readelf -d`: (None, None) where readelf is missing,
    failure set when readelf reports an error (it exits 0 on many damaged files)."""
    readelf = tools.find("readelf")
    if readelf is None:
        return None, None
    rc, out, err = _run_tool(readelf, ["-d"], data, "ELF")
    if rc is None:
        return [], f"readelf could not run: {err}"
    errors = [line for line in err.splitlines() if "Error:" in line]
    if rc != 0 or errors:
        return [], f"readelf -d failed: {_last_line(chr(10).join(errors) or err)}"
    return re.findall(r"\(NEEDED\).*\[(.+?)\]", out), None


# A .pyd may import only these DLLs (case-insensitive prefixes): the limited-API python3.dll,
# torch's and CUDA's (from the user's torch), the MSVC runtime and Windows itself. A versioned
# python3XY.dll breaks abi3, torch_python.dll ties the wheel to pybind11.
PE_ALLOWED = ("python3.dll", "c10", "torch_cpu", "torch_cuda", "torch.dll", "cudart64_", "nvcuda",
              "kernel32", "vcruntime140", "msvcp140", "api-ms-win-", "ucrtbase", "ntdll",
              "advapi32", "user32", "shell32", "ole32", "ws2_32", "msvcrt")


def pe_imports(data: bytes) -> list | None:
    """DLLs a PE file imports (pefile), or None where pefile is missing. Raises the parser's
    exception on a damaged file."""
    try:
        import pefile
    except ImportError:
        return None
    pe = pefile.PE(data=data, fast_load=True)
    pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
    return [entry.dll.decode("ascii", "replace") for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])]


def pe_problems(lib: str, imports: list, vendored: frozenset = frozenset()) -> list:
    """Problems with the DLLs `lib` imports; `vendored` holds the (lower-case) names of DLLs the
    wheel carries itself (delvewheel puts them in sageattention.libs/ with mangled names)."""
    problems = []
    for dll in imports:
        low = dll.lower()
        if low in vendored:
            continue
        if re.fullmatch(r"python3\d+\.dll", low):
            problems.append(f"{lib} imports {dll}: a versioned Python DLL breaks abi3 (link "
                            "python3.dll through the limited API)")
        elif low.startswith("torch_python"):
            problems.append(f"{lib} imports {dll}: not abi3-clean (no pybind11 / torch_python)")
        elif not low.startswith(PE_ALLOWED):
            problems.append(f"{lib} imports {dll}, which neither torch nor Windows provides: "
                            "vendor it with delvewheel or drop the dependency")
    return problems


def linked_library_problems(lib: str, data: bytes, vendored: frozenset = frozenset()) -> tuple:
    """(problems, notes) for the libraries one ELF file links or one PE file imports."""
    kind = binary_kind(data)
    if kind == "ELF":
        needed, failure = needed_libraries(data)
        if failure:
            return [unreadable(lib, "ELF", failure)], []
        if needed is None:
            return [], ["readelf not found: linked libraries not checked"]
        return [f"{lib} links {entry}: not abi3-clean (no pybind11 / libtorch_python allowed)"
                for entry in needed if entry.startswith(FORBIDDEN_NEEDED)], []
    if kind == "PE":
        try:
            imports = pe_imports(data)
        except Exception as exc:  # noqa: BLE001 - pefile raises many types on hostile bytes
            return [unreadable(lib, "PE", one_line(exc))], []
        if imports is None:
            return [], ["pefile not installed: PE imports not checked"]
        return pe_problems(lib, imports, vendored), []
    return structure_problems(lib, data)
