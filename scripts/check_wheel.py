"""Inspect a built wheel: name and tags, METADATA, RECORD hashes, _build_info, linked libraries.

    python scripts/check_wheel.py WHEEL [--row ID | --host] [--archs "8.0"]

Exit status 1 with one line per problem, 0 when the wheel is sound. With a row, the tags,
local version, torch/CUDA and GPU archs recorded in the wheel must be the row's (--archs
overrides the row's archs, as in `build_wheel.py --archs`). Linked libraries: ELF NEEDED
entries of every .so (readelf) must not include libpython or libtorch_python (abi3, no
pybind11); imports of every .pyd (pefile) only from python3.dll, torch, CUDA, the MSVC runtime
and Windows; abi3 wheels through `abi3audit --strict`. GPU code: every compiled unit must carry
a cubin for each arch it was built for (_C: the row's archs; _C_fp8: those >= 8.9), read from the
fat binary headers by scripts/fatbin.py and cross-checked with `cuobjdump --list-elf` where a
CUDA toolkit is installed.
"""
from __future__ import annotations

import argparse
import ast
import base64
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fatbin
import matrix

FP8_OLDEST = (8, 9)  # the _C_fp8 unit is built only for these archs and newer (setup.py UNITS)
FORBIDDEN_NEEDED = ("libpython", "libtorch_python")
# Requirements that could make pip replace or upgrade the user's torch (or its Triton).
FORBIDDEN_REQUIRES = ("torch", "triton", "triton-windows")


def record_problems(z: zipfile.ZipFile, record_name: str) -> list:
    problems = []
    rows = list(csv.reader(io.StringIO(z.read(record_name).decode())))
    listed = {row[0] for row in rows if row}
    for row in rows:
        if not row or row[0] == record_name:
            continue
        path, digest, size = row[0], row[1], row[2]
        if path not in z.namelist():
            problems.append(f"RECORD lists {path}, which is not in the wheel")
            continue
        data = z.read(path)
        algo, _, want = digest.partition("=")
        got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
        if got != want:
            problems.append(f"RECORD hash mismatch for {path}: the file was changed after build")
        if size and int(size) != len(data):
            problems.append(f"RECORD size mismatch for {path}")
    for name in z.namelist():
        if name not in listed and not name.endswith("/"):
            problems.append(f"{name} is in the wheel but not in RECORD")
    return problems


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
    """(problems, notes): `lib` must hold a cubin for every arch in `want`."""
    problems, notes = [], []
    have = fatbin.archs_of(data, "cubin")
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


def abi3audit_problems(wheel: Path) -> tuple:
    """(problems, note) from `abi3audit --strict --report`, or ([], why not run)."""
    tool = shutil.which("abi3audit")
    if tool is None:
        return [], "abi3audit not installed: abi3 symbols not audited"
    proc = subprocess.run([tool, "--strict", "--report", str(wheel)], capture_output=True,
                          text=True, check=False)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return [f"abi3audit failed: {proc.stderr.strip()[-300:]}"], ""
    problems = []
    for spec in report.get("specs", {}).values():
        for obj in spec.get("wheel", []):
            result = obj.get("result", {})
            if result.get("non_abi3_symbols"):
                problems.append(f"{obj['name']} uses non-abi3 symbols "
                                f"{', '.join(result['non_abi3_symbols'][:5])} (abi3audit)")
            if not result.get("is_abi3_baseline_compatible", True):
                problems.append(f"{obj['name']} needs Python {result.get('computed')} but the "
                                f"wheel claims {result.get('baseline')} (abi3audit)")
    return problems, "abi3audit: " + ("ok" if not problems else "problems found")


def check(wheel: Path, row: matrix.Row | None, archs: list | None) -> tuple:
    """(problems, notes) for the wheel."""
    problems, notes = [], []
    try:
        name, version, _build, tags = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename as exc:
        return [f"not a valid wheel file name: {exc}"], notes
    if name != "sageattention":
        problems.append(f"distribution name is {name}, not sageattention")
    if version < Version("2.1.1"):
        problems.append(f"version {version} < 2.1.1 (diffusers requires >= 2.1.1)")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        dist_info = f"{name}-{version}.dist-info"
        meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        record_name = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
        if meta_name is None or record_name is None:
            return problems + ["no METADATA or RECORD in .dist-info"], notes
        if not meta_name.startswith(dist_info.split("+")[0]):
            notes.append(f"dist-info folder {meta_name.split('/')[0]}")
        meta = Parser().parsestr(z.read(meta_name).decode())
        if meta["Name"] != "sageattention":
            problems.append(f"METADATA Name is {meta['Name']}")
        if Version(meta["Version"]) != version:
            problems.append(f"METADATA Version {meta['Version']} differs from the file name's "
                            f"{version}")
        if not meta.get("Requires-Python"):
            problems.append("METADATA has no Requires-Python")
        for req in meta.get_all("Requires-Dist") or []:
            r = Requirement(req)
            if r.name.lower() in FORBIDDEN_REQUIRES and (r.marker is None
                                                         or "extra" not in str(r.marker)):
                problems.append(f"METADATA requires {req}: pip could replace the user's "
                                f"{r.name}; drop it")
        problems += record_problems(z, record_name)
        info_src = z.read("sageattention/_build_info.py").decode() \
            if "sageattention/_build_info.py" in names else None
        libs = [n for n in names if re.search(r"\.(so|pyd)$", n)]
        lib_data = {lib: z.read(lib) for lib in libs}
        vendored_dlls = frozenset(Path(n).name.lower() for n in names
                                  if n.lower().endswith(".dll"))
        for lib in libs:
            if lib.endswith(".so"):
                needed = needed_libraries(lib_data[lib])
                if needed is None:
                    notes.append("readelf not found: linked libraries not checked")
                    continue
                for entry in needed:
                    if entry.startswith(FORBIDDEN_NEEDED):
                        problems.append(f"{lib} links {entry}: not abi3-clean (no pybind11 / "
                                        "libtorch_python allowed)")
            else:
                imports = pe_imports(lib_data[lib])
                if imports is None:
                    notes.append("pefile not installed: PE imports not checked")
                    continue
                problems += pe_problems(lib, imports, vendored_dlls)
    if any(t.abi == "abi3" for t in tags):
        found, note = abi3audit_problems(wheel)
        problems += found
        if note:
            notes.append(note)
    info = {}
    if info_src is None:
        problems.append("no sageattention/_build_info.py in the wheel")
    else:
        for node in ast.parse(info_src).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                info[node.targets[0].id] = ast.literal_eval(node.value)
        if libs and not info.get("COMPILED_EXTENSION"):
            problems.append("_build_info says no compiled extension, but the wheel has one")
        # Every compiled unit must be one the build recorded (a stray in-place build is not).
        has_fp8 = any(Path(lib).name.startswith("_C_fp8.") for lib in libs)
        fp8_archs = tuple(info.get("OPTIONAL_PATHS", {}).get("fp8_archs", ()))
        if has_fp8 and not fp8_archs:
            problems.append("the wheel carries _C_fp8 but its build recorded no FP8 archs: a "
                            "stale binary from another build was packaged")
        if fp8_archs and not has_fp8:
            problems.append(f"the build recorded FP8 archs {' '.join(fp8_archs)} but the wheel "
                            "has no _C_fp8")
        if not libs:
            problems.append("no compiled extension in the wheel")
        # GPU code per unit: the row's archs (or the build's own record without a row).
        want_c = list(archs or (row.archs if row is not None else info.get("CUDA_ARCHS", ())))
        for lib in (n for n in libs if re.fullmatch(r"sageattention/_C\w*\.[^/]+", n)):
            unit = Path(lib).name.split(".")[0]
            want = [a for a in want_c if arch_tuple(a) >= FP8_OLDEST] if unit == "_C_fp8" \
                else want_c
            found, more = gpu_code_problems(lib, lib_data[lib], want)
            problems += found
            notes += more
            if info.get("ABI_FLAVOUR") == "stable":
                found, more = stable_abi_problems(lib, lib_data[lib])
                problems += found
                notes += more
    if row is not None:
        if version.local != row.local_version:
            problems.append(f"local version {version.local} is not the row's {row.local_version}")
        want = {(py, abi) for py, abi, _ in row.wheel_tags}
        have = {(t.interpreter, t.abi) for t in tags}
        if have != want:
            problems.append(f"tags {sorted(have)} are not the row's {sorted(want)}")
        plats = {t.platform for t in tags}
        want_plat = {plat for *_, plat in row.wheel_tags}
        if plats != want_plat:
            if row.platform == "linux" and plats == {"linux_x86_64"}:
                notes.append("linux_x86_64: not repaired to manylinux yet")
            else:
                problems.append(f"platform {sorted(plats)} is not the row's {sorted(want_plat)}")
        if info:
            if info.get("TORCH_VERSION") != row.torch:
                problems.append(f"built against torch {info.get('TORCH_VERSION')}, the row "
                                f"needs {row.torch}")
            cuda = "cu" + str(info.get("CUDA_VERSION", "")).replace(".", "")
            if cuda != row.cuda:
                problems.append(f"built against {cuda}, the row needs {row.cuda}")
            want_archs = list(archs or row.archs)
            if list(info.get("CUDA_ARCHS", ())) != want_archs:
                problems.append(f"compiled for sm {' '.join(info.get('CUDA_ARCHS', ()))}, the "
                                f"row needs {' '.join(want_archs)}")
    return problems, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path)
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--row", help="a build_matrix.yaml row id")
    which.add_argument("--host", action="store_true", help="the row of this machine")
    ap.add_argument("--archs", help="the archs the wheel was built for, if not the row's")
    ap.add_argument("--matrix", type=Path, default=matrix.MATRIX)
    args = ap.parse_args(argv)
    if not args.wheel.is_file():
        print(f"{args.wheel}: no such file", file=sys.stderr)
        return 2
    row = None
    if args.host:
        import build_wheel

        row = build_wheel.host_row(matrix.load_rules(), build_wheel.nvcc_version())
    elif args.row:
        rows, _ = matrix.check_rows(matrix.load_yaml(args.matrix), matrix.load_rules())
        row = next((r for r in rows if r.id == args.row), None)
        if row is None:
            print(f"no valid row {args.row!r} in {args.matrix}", file=sys.stderr)
            return 2
    archs = args.archs.replace(";", " ").split() if args.archs else None
    problems, notes = check(args.wheel, row, archs)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"{args.wheel.name}: {problem}")
    print(f"{args.wheel.name}: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
