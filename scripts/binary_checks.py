"""Checks of one compiled extension (.so or .pyd) taken from a wheel, for scripts/check_wheel.py.

- GPU code: a cubin for every arch the unit was built for, read from the fat-binary headers
  (scripts/fatbin.py) and cross-checked with `cuobjdump --list-elf` where it is installed;
- linked libraries: ELF NEEDED entries (readelf) free of libpython / libtorch_python; PE imports
  (pefile) only from python3.dll, torch, CUDA, the MSVC runtime, Windows or DLLs the wheel
  vendors itself;
- stable-ABI units: no torch C++ symbol imported (pyelftools for ELF, MSVC-mangled names for PE).

Each returns (problems, notes); a missing tool is a note, never a silent pass.
"""
from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import fatbin

FORBIDDEN_NEEDED = ("libpython", "libtorch_python")


def arch_tuple(arch: str) -> tuple:
    major, minor = arch.replace("+PTX", "").rstrip("af").split(".")
    return int(major), int(minor)


def cuobjdump_archs(data: bytes, suffix: str) -> list | None:
    """Archs of the cubins `cuobjdump --list-elf` lists, or None where cuobjdump is missing."""
    tool = shutil.which("cuobjdump")
    if tool is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        proc = subprocess.run([tool, "--list-elf", f.name], capture_output=True, text=True,
                              check=False)
    found = {f"{int(m) // 10}.{int(m) % 10}" for m in re.findall(r"\.sm_(\d+)[a-z]?\.cubin",
                                                                  proc.stdout)}
    return sorted(found, key=lambda a: tuple(int(x) for x in a.split(".")))


def gpu_code_problems(lib: str, data: bytes, want: list) -> tuple:
    """(problems, notes): `lib` must hold a cubin for every arch in `want` ("9.0a" is a 9.0
    cubin in the fat-binary headers) and PTX for every "+PTX" arch."""
    problems, notes = [], []
    ptx_wanted = [a.replace("+PTX", "").rstrip("af") for a in want if a.endswith("+PTX")]
    want = [a.replace("+PTX", "").rstrip("af") for a in want]
    have = fatbin.archs_of(data, "cubin")
    no_ptx = [a for a in ptx_wanted if a not in fatbin.archs_of(data, "ptx")]
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
    listed = cuobjdump_archs(data, Path(lib).suffix)
    if listed is None:
        notes.append(f"{Path(lib).name}: cubins sm {' '.join(have) or 'none'} (fat binary "
                     "headers; cuobjdump not installed)")
    elif listed != have:
        problems.append(f"{lib}: cuobjdump lists cubins for sm {' '.join(listed) or 'none'}, the "
                        f"fat binary headers say {' '.join(have) or 'none'}: scripts/fatbin.py "
                        "misreads this toolkit's format")
    else:
        notes.append(f"{Path(lib).name}: cubins sm {' '.join(have)} (cuobjdump agrees)")
    return problems, notes


# Itanium-mangled names from torch's C++ namespaces (c10::, at::, torch::), and MSVC-mangled
# imports (they start with "?"): a stable-ABI binary may call only torch's C shim.
TORCH_CXX_SYMBOL = re.compile(r"^_ZN?K?(?:St)?\d*(?:3c10|2at|5torch)")


def undefined_elf_symbols(data: bytes) -> list | None:
    """Undefined dynamic symbols of an ELF file (pyelftools), or None where it is missing."""
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


def stable_abi_problems(lib: str, data: bytes) -> tuple:
    """(problems, notes): a stable-ABI unit must not call torch's C++ API."""
    if lib.endswith(".so"):
        symbols = undefined_elf_symbols(data)
        if symbols is None:
            return [], [f"pyelftools not installed: {lib} not checked for torch C++ symbols"]
        bad = [name for name in symbols if TORCH_CXX_SYMBOL.match(name)]
    else:
        try:
            import pefile
        except ImportError:
            return [], [f"pefile not installed: {lib} not checked for torch C++ symbols"]
        pe = pefile.PE(data=data, fast_load=True)
        pe.parse_data_directories(
            directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
        bad = [imp.name.decode() for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])
               if entry.dll.decode().lower().startswith(("c10", "torch"))
               for imp in entry.imports if imp.name and imp.name.startswith(b"?")]
    if bad:
        message = (f"{lib} is built for the stable ABI but calls torch's C++ API ({len(bad)} "
                   f"symbols, e.g. {', '.join(bad[:3])}): it would break on other torch versions")
        return [message], []
    return [], [f"{Path(lib).name}: stable ABI, no torch C++ symbols"]


def needed_libraries(data: bytes) -> list | None:
    """ELF NEEDED entries (readelf), or None where readelf is missing."""
    readelf = shutil.which("readelf")
    if readelf is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(data)
        f.flush()
        out = subprocess.run([readelf, "-d", f.name], stdout=subprocess.PIPE, text=True,
                             check=False).stdout
    return re.findall(r"\(NEEDED\).*\[(.+?)\]", out)


# A .pyd may import only these DLLs (case-insensitive prefixes): the limited-API python3.dll,
# torch's and CUDA's (from the user's torch), the MSVC runtime and Windows itself. A versioned
# python3XY.dll breaks abi3, torch_python.dll ties the wheel to pybind11.
PE_ALLOWED = ("python3.dll", "c10", "torch_cpu", "torch_cuda", "torch.dll", "cudart64_", "nvcuda",
              "kernel32", "vcruntime140", "msvcp140", "api-ms-win-", "ucrtbase", "ntdll",
              "advapi32", "user32", "shell32", "ole32", "ws2_32", "msvcrt")


def pe_imports(data: bytes) -> list | None:
    """DLLs a PE file imports (pefile), or None where pefile is missing."""
    try:
        import pefile
    except ImportError:
        return None
    pe = pefile.PE(data=data, fast_load=True)
    pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
    return [entry.dll.decode() for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])]


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
    """(problems, notes) for the libraries one .so links or one .pyd imports."""
    if lib.endswith(".so"):
        needed = needed_libraries(data)
        if needed is None:
            return [], ["readelf not found: linked libraries not checked"]
        return [f"{lib} links {entry}: not abi3-clean (no pybind11 / libtorch_python allowed)"
                for entry in needed if entry.startswith(FORBIDDEN_NEEDED)], []
    imports = pe_imports(data)
    if imports is None:
        return [], ["pefile not installed: PE imports not checked"]
    return pe_problems(lib, imports, vendored), []
