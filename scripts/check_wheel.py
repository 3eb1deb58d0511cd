"""Inspect a built wheel: name and tags, METADATA, RECORD hashes, _build_info, compiled units.

    python scripts/check_wheel.py WHEEL [--row ID | --host] [--archs "8.0"]

Exit status 1 with one line per problem, 0 when the wheel is sound. With a row, the tags,
local version, torch/CUDA and GPU archs recorded in the wheel must be the row's (--archs
overrides the row's archs, as in `build_wheel.py --archs`). METADATA must not require torch or
Triton (pip could replace the user's torch). Each compiled unit is checked by
scripts/binary_checks.py: a cubin per arch (_C: the row's archs; _C_fp8: those >= 8.9), linked
libraries / DLL imports, and no torch C++ symbol in stable-ABI units; abi3 wheels also go
through `abi3audit --strict`.
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
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))

import binary_checks
import matrix

FP8_OLDEST = (8, 9)  # the _C_fp8 unit is built only for these archs and newer (setup.py UNITS)
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


def metadata_problems(meta, version: Version) -> list:
    """METADATA: name, version, Requires-Python, and no requirement that could replace torch."""
    problems = []
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
            problems.append(f"METADATA requires {req}: pip could replace the user's {r.name}; "
                            "drop it")
    return problems


def parse_build_info(source: str) -> dict:
    """The NAME = literal assignments of a _build_info.py (never executed)."""
    info = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            info[node.targets[0].id] = ast.literal_eval(node.value)
    return info


def compiled_unit_problems(libs: dict, info: dict, want_archs: list) -> tuple:
    """(problems, notes): the compiled units agree with what the build recorded, each carries
    the GPU code of its archs, and stable-ABI units call no torch C++ symbol. `libs` maps the
    wheel's .so/.pyd paths to their bytes."""
    problems, notes = [], []
    if not libs:
        return ["no compiled extension in the wheel"], notes
    if not info.get("COMPILED_EXTENSION"):
        problems.append("_build_info says no compiled extension, but the wheel has one")
    # Every compiled unit must be one the build recorded (a stray in-place build is not).
    has_fp8 = any(Path(lib).name.startswith("_C_fp8.") for lib in libs)
    fp8_archs = tuple(info.get("OPTIONAL_PATHS", {}).get("fp8_archs", ()))
    if has_fp8 and not fp8_archs:
        problems.append("the wheel carries _C_fp8 but its build recorded no FP8 archs: a stale "
                        "binary from another build was packaged")
    if fp8_archs and not has_fp8:
        problems.append(f"the build recorded FP8 archs {' '.join(fp8_archs)} but the wheel has "
                        "no _C_fp8")
    for lib, data in libs.items():
        if not re.fullmatch(r"sageattention/_C\w*\.[^/]+", lib):
            continue  # a vendored dependency, not one of our units
        want = want_archs
        if Path(lib).name.startswith("_C_fp8."):
            want = [a for a in want_archs if binary_checks.arch_tuple(a) >= FP8_OLDEST]
        for found, more in (binary_checks.gpu_code_problems(lib, data, want),
                            binary_checks.stable_abi_problems(lib, data)
                            if info.get("ABI_FLAVOUR") == "stable" else ([], [])):
            problems += found
            notes += more
    return problems, notes


def row_problems(version: Version, tags, info: dict, row: matrix.Row, archs: list | None) -> tuple:
    """(problems, notes): name, tags and the recorded build agree with the matrix row."""
    problems, notes = [], []
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
            problems.append(f"built against torch {info.get('TORCH_VERSION')}, the row needs "
                            f"{row.torch}")
        cuda = "cu" + str(info.get("CUDA_VERSION", "")).replace(".", "")
        if cuda != row.cuda:
            problems.append(f"built against {cuda}, the row needs {row.cuda}")
        want_archs = list(archs or row.archs)
        if list(info.get("CUDA_ARCHS", ())) != want_archs:
            problems.append(f"compiled for sm {' '.join(info.get('CUDA_ARCHS', ()))}, the row "
                            f"needs {' '.join(want_archs)}")
    return problems, notes


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
        meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        record_name = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
        if meta_name is None or record_name is None:
            return problems + ["no METADATA or RECORD in .dist-info"], notes
        problems += metadata_problems(Parser().parsestr(z.read(meta_name).decode()), version)
        problems += record_problems(z, record_name)
        info_name = "sageattention/_build_info.py"
        info = parse_build_info(z.read(info_name).decode()) if info_name in names else None
        libs = {n: z.read(n) for n in names if re.search(r"\.(so|pyd)$", n)}
        vendored = frozenset(Path(n).name.lower() for n in names if n.lower().endswith(".dll"))
    for lib, data in libs.items():
        found, more = binary_checks.linked_library_problems(lib, data, vendored)
        problems += found
        notes += [m for m in more if m not in notes]
    if any(t.abi == "abi3" for t in tags):
        found, note = abi3audit_problems(wheel)
        problems += found
        notes += [note] if note else []
    if info is None:
        problems.append("no sageattention/_build_info.py in the wheel")
    else:
        # GPU code per unit: the row's archs (or the build's own record without a row).
        want = list(archs or (row.archs if row is not None else info.get("CUDA_ARCHS", ())))
        found, more = compiled_unit_problems(libs, info, want)
        problems += found
        notes += more
    if row is not None:
        found, more = row_problems(version, tags, info or {}, row, archs)
        problems += found
        notes += more
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
