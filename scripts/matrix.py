"""Check and expand build_matrix.yaml against the rules in scripts/compat_rules.yaml.

    python scripts/matrix.py check  [--matrix PATH]
    python scripts/matrix.py expand [--matrix PATH] [--platform windows|linux]
                                    --format json|github|markdown

`check` reports every problem (not just the first) as ``PATH:LINE: row ID: what is wrong;
what to use instead`` and exits 1 if there is any, else 0. `expand` prints the rows with
everything derived (archs, wheel tags, local version, runner): "github" is one JSON line
``{"include": [...]}`` for ``fromJSON`` in a workflow, "markdown" is docs/compatibility.md.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "build_matrix.yaml"
RULES = Path(__file__).resolve().parent / "compat_rules.yaml"

ROW_KEYS = ("id", "platform", "python", "python_min", "torch", "cuda", "toolkit", "triton", "abi",
            "archs", "runner", "msvc_toolset", "manylinux")
REQUIRED = ("id", "platform", "python", "torch", "cuda", "toolkit", "triton", "abi")
PLATFORMS = ("linux", "windows")
ABIS = ("cpython", "abi3", "stable")
DEFAULT_RUNNER = {"linux": "ubuntu-22.04", "windows": "windows-2022"}
# The glibc of the ubuntu-22.04 runner the Linux rows build on (.github/workflows/wheels.yml);
# building inside a manylinux_2_28 image would let a row claim 2_28.
DEFAULT_MANYLINUX = "2_35"


@dataclass
class Problem:
    line: int
    row: str
    message: str

    def render(self, path: str) -> str:
        return f"{path}:{self.line}: row {self.row}: {self.message}"


@dataclass
class Row:
    """One validated row with its derived values."""
    id: str
    platform: str
    torch: str
    cuda: str
    toolkit: str
    triton: str
    abi: str
    python: list  # cpXY tags, or ["abi3"]
    python_min: str | None
    archs: list
    runner: str
    msvc_toolset: str | None = None
    manylinux: str = DEFAULT_MANYLINUX
    line: int = 0
    lines: dict = field(default_factory=dict, repr=False)

    @property
    def torch_minor(self) -> str:
        v = Version(self.torch)
        return f"{v.major}.{v.minor}"

    @property
    def local_version(self) -> str:
        """The +local part of the wheel version (shared/DESIGN.md naming)."""
        torch = f"{self.torch_minor}andhigher" if self.abi == "stable" else self.torch
        return f"{self.cuda}torch{torch}"

    @property
    def platform_tag(self) -> str:
        return "win_amd64" if self.platform == "windows" else f"manylinux_{self.manylinux}_x86_64"

    @property
    def wheel_tags(self) -> list:
        """(python tag, abi tag, platform tag) of each wheel the row produces."""
        plat = self.platform_tag
        if self.abi in ("abi3", "stable"):
            return [(self.python_min, "abi3", plat)]
        return [(tag, tag, plat) for tag in self.python]

    def wheel_names(self, version: str) -> list:
        return [f"sageattention-{version}+{self.local_version}-{py}-{abi}-{plat}.whl"
                for py, abi, plat in self.wheel_tags]


def _cp(tag: str) -> tuple | None:
    m = re.fullmatch(r"cp3(\d+)", str(tag))
    return (3, int(m.group(1))) if m else None


def _variant_cuda(variant: str) -> tuple | None:
    """cu129 -> (12, 9); cu130 -> (13, 0)."""
    m = re.fullmatch(r"cu(\d+)(\d)", str(variant))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _xy(version: str) -> tuple:
    v = Version(version)
    return v.major, v.minor


def _arch_tuple(arch: str) -> tuple:
    base = str(arch).replace("+PTX", "").rstrip("af")
    major, minor = base.split(".")
    return int(major), int(minor)


def load_yaml(path: Path):
    yaml = YAML(typ="rt")
    with open(path, encoding="utf-8") as f:
        return yaml.load(f)


def _line(node, key=None) -> int:
    """1-based line of a key in a ruamel mapping (or of the mapping itself)."""
    try:
        if key is not None and key in node:
            return node.lc.key(key)[0] + 1
        return node.lc.line + 1
    except AttributeError:
        return 0


def default_archs(toolkit: str, rules: dict) -> list:
    """The default arch list minus what this toolkit cannot build."""
    archs = list(rules["rules"]["default_archs"]["archs"])
    return [a for a in archs if buildable(a, toolkit, rules) is None]


def buildable(arch: str, toolkit: str, rules: dict) -> str | None:
    """None if the toolkit can build the arch, else why not (with the fix)."""
    r = rules["rules"]
    tk = Version(toolkit)
    need = r["arch_min_toolkit"].get(str(arch).replace("+PTX", ""))
    if need and tk < Version(need):
        return f"arch {arch} needs CUDA toolkit >= {need} ({r['arch_min_toolkit']['why']})"
    oldest = r["arch_max_toolkit"].get(str(tk.major))
    if oldest and _arch_tuple(arch) < _arch_tuple(oldest):
        return (f"CUDA {tk.major} cannot build arch {arch}; its oldest is {oldest} "
                f"({r['arch_max_toolkit']['why']})")
    return None


def check_rows(matrix, rules: dict) -> tuple:
    """(rows, problems): every row that parsed, and every problem found in the file."""
    problems: list = []
    rows: list = []
    if not isinstance(matrix, dict):
        return rows, [Problem(1, "-", "the file must be a mapping with 'defaults' and 'rows'")]
    for key in matrix:
        if key not in ("defaults", "rows"):
            problems.append(Problem(_line(matrix, key), "-", f"unknown top-level key {key!r}; "
                                    "use 'defaults' and 'rows'"))
    defaults = matrix.get("defaults") or {}
    for key in defaults:
        if key not in ROW_KEYS or key == "id":
            problems.append(Problem(_line(defaults, key), "defaults", f"unknown key {key!r}; "
                                    f"known: {', '.join(k for k in ROW_KEYS if k != 'id')}"))
    seen: dict = {}
    raw_rows = matrix.get("rows")
    if not isinstance(raw_rows, list) or not raw_rows:
        problems.append(Problem(_line(matrix, "rows"), "-", "'rows' must be a non-empty list"))
        return rows, problems
    for index, raw in enumerate(raw_rows):
        if not isinstance(raw, dict):
            problems.append(Problem(_line(raw_rows), f"#{index + 1}", "a row must be a mapping"))
            continue
        row_id = str(raw.get("id", f"#{index + 1}"))
        line = _line(raw)
        for key in raw:
            if key not in ROW_KEYS:
                close = difflib.get_close_matches(str(key), ROW_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(ROW_KEYS)}"
                problems.append(Problem(_line(raw, key), row_id, f"unknown key {key!r}; {hint}"))
        if "id" in raw:
            if row_id in seen:
                problems.append(Problem(_line(raw, "id"), row_id,
                                        f"duplicate id (first on line {seen[row_id]}); give "
                                        "every row its own id"))
            else:
                seen[row_id] = _line(raw, "id")
        merged = {**{k: v for k, v in defaults.items() if k in ROW_KEYS}, **raw}
        # Problems with a value inherited from defaults are reported at the row.
        lines = {k: _line(raw, k) if k in raw else line for k in merged}
        missing = [k for k in REQUIRED if k not in merged]
        if missing:
            problems.append(Problem(line, row_id, f"missing {', '.join(missing)}; set them in "
                                    "the row or in defaults"))
            continue
        row, row_problems = _check_row(row_id, merged, lines, line, rules)
        problems += row_problems
        if row is not None:
            rows.append(row)
    return rows, problems


def _check_row(row_id: str, m: dict, lines: dict, line: int, rules: dict):
    out: list = []

    def bad(key, message):
        out.append(Problem(lines.get(key, line), row_id, message))

    r = rules["rules"]
    platform = str(m["platform"])
    if platform not in PLATFORMS:
        bad("platform", f"platform {platform!r} is not one of {', '.join(PLATFORMS)}")
        return None, out
    abi = str(m["abi"])
    if abi not in ABIS:
        bad("abi", f"abi {abi!r} is not one of {', '.join(ABIS)}")
        return None, out
    try:
        torch_v = Version(str(m["torch"]))
        toolkit = str(m["toolkit"])
        Version(toolkit)
    except InvalidVersion as exc:
        bad("torch", f"{exc}; write versions like \"2.8.0\" and \"12.9.1\" (quoted)")
        return None, out
    if len(torch_v.release) != 3 or torch_v.local:
        bad("torch", f"torch must be an exact release like \"2.8.0\", got {m['torch']!r}")
    minor = f"{torch_v.major}.{torch_v.minor}"
    known = rules["torch"].get(minor)
    if known is None:
        bad("torch", f"torch {minor} has no entry in scripts/compat_rules.yaml; add its Triton "
                     f"series, CUDA variants and Python range there (known: "
                     f"{', '.join(rules['torch'])})")
        return None, out

    # CUDA variant and toolkit.
    cuda = str(m["cuda"])
    variant = _variant_cuda(cuda)
    if variant is None:
        bad("cuda", f"cuda must look like cu129, got {cuda!r}")
    elif cuda not in known["cuda"]:
        bad("cuda", f"torch {minor} is not published for {cuda} ({r['cuda_variant']['why']}); "
                    f"use one of {', '.join(known['cuda'])}")
    elif _xy(toolkit) != variant:
        bad("toolkit", f"toolkit {toolkit} does not match {cuda} "
                       f"({r['toolkit_matches_variant']['why']}); use toolkit "
                       f"{variant[0]}.{variant[1]}.x")

    # Triton requirement.
    _check_triton(str(m["triton"]), platform, str(m["torch"]), known["triton_series"], r, bad)

    # ABI flavour and Python.
    min_torch = r["abi_min_torch"][abi]
    if torch_v < Version(min_torch):
        bad("abi", f"abi {abi} needs torch >= {min_torch} ({r['abi_min_torch']['why']}); use "
                   "abi cpython with a list of Python tags")
    lo, hi = (_cp(t) for t in known["python"])
    python = m["python"]
    python_min = m.get("python_min")
    if abi in ("abi3", "stable"):
        if str(python) != "abi3":
            bad("python", f"abi {abi} builds one wheel for all Pythons: set python: abi3 and "
                          "python_min")
        floor = known["limited_api_min"]
        if python_min is None:
            bad("python", f"abi3 needs python_min; use python_min: {floor}")
        elif _cp(python_min) is None:
            bad("python_min", f"python_min must look like cp310, got {python_min!r}")
        elif _cp(python_min) < _cp(floor):
            bad("python_min", f"torch {minor} headers define Py_LIMITED_API for {floor} "
                              f"({r['abi3_python_min']['why']}); use python_min: {floor}")
        elif _cp(python_min) > hi:
            bad("python_min", f"python_min {python_min} is newer than torch {minor}'s newest "
                              f"Python ({known['python'][1]})")
        tags = ["abi3"]
    else:
        tags = list(python) if isinstance(python, list) else [python]
        for tag in tags:
            v = _cp(tag)
            if v is None:
                bad("python", f"python entries must look like cp312, got {tag!r}")
            elif not lo <= v <= hi:
                bad("python", f"torch {minor} has no wheels for {tag} ({r['python_range']['why']}); "
                              f"use {known['python'][0]} to {known['python'][1]}")

    # GPU archs.
    archs = m.get("archs")
    if archs is None:
        archs = default_archs(toolkit, rules)
    else:
        archs = [str(a) for a in (archs if isinstance(archs, list) else str(archs).split())]
        for arch in archs:
            if not re.fullmatch(r"\d+\.\d+a?(\+PTX)?", arch):
                bad("archs", f"arch {arch!r} must look like 8.6, 9.0a or 12.0+PTX")
                continue
            why = buildable(arch, toolkit, rules)
            if why:
                bad("archs", f"{why}; drop it or raise the toolkit")

    # Windows toolchain.
    runner = str(m.get("runner") or DEFAULT_RUNNER[platform])
    if platform == "windows":
        needs = r["windows_runner"].get(runner)
        if needs and Version(toolkit) not in SpecifierSet(needs):
            good = [k for k, v in r["windows_runner"].items() if k != "why"
                    and Version(toolkit) in SpecifierSet(v)]
            bad("runner", f"runner {runner} needs CUDA toolkit {needs} "
                          f"({r['windows_runner']['why']}); use "
                          f"{' or '.join(good) or 'another runner'}")
        toolset = m.get("msvc_toolset")
        if toolset is not None:
            needs = r["msvc_toolset"].get(str(toolset))
            if needs and Version(toolkit) not in SpecifierSet(needs):
                bad("msvc_toolset", f"MSVC toolset {toolset} needs CUDA toolkit {needs} "
                                    f"({r['msvc_toolset']['why']}); use toolset 14.40 or older "
                                    "or a newer toolkit")
    elif m.get("msvc_toolset") is not None:
        bad("msvc_toolset", "msvc_toolset only applies to windows rows; remove it")
    manylinux = str(m.get("manylinux") or DEFAULT_MANYLINUX)
    if platform == "windows" and m.get("manylinux") is not None:
        bad("manylinux", "manylinux only applies to linux rows; remove it")
    elif not re.fullmatch(r"2_\d+", manylinux):
        bad("manylinux", f"manylinux must be a glibc policy like 2_28, got {manylinux!r}")

    if out:
        return None, out
    return Row(id=row_id, platform=platform, torch=str(m["torch"]), cuda=cuda, toolkit=toolkit,
               triton=str(m["triton"]), abi=abi, python=tags, python_min=python_min,
               archs=archs, runner=runner, msvc_toolset=m.get("msvc_toolset"),
               manylinux=manylinux, line=line, lines=lines), out


def _check_triton(spec: str, platform: str, torch: str, series: str, r: dict, bad) -> None:
    want_pkg = r["triton_package"][platform]
    nxt = f"{Version(series).major}.{Version(series).minor + 1}"
    fix = f"{want_pkg}<{nxt}" if platform == "windows" else f"{want_pkg}=={series}.*"
    try:
        req = Requirement(spec)
    except (InvalidRequirement, InvalidSpecifier) as exc:
        bad("triton", f"triton {spec!r} is not a valid requirement ({exc}); use {fix}")
        return
    if req.name.lower() != want_pkg:
        bad("triton", f"{req.name} is the wrong package on {platform} "
                      f"({r['triton_package']['why']}); use {fix}")
        return
    admitted = [f"{series}.{p}" for p in range(10) if req.specifier.contains(f"{series}.{p}")]
    newer = [f"{nxt}.{p}" for p in range(3) if req.specifier.contains(f"{nxt}.{p}")]
    if not admitted:
        bad("triton", f"{spec} admits no {series}.x but torch {torch} needs the {series} series "
                      f"({r['triton_series']['why']}); use {fix}")
    elif newer or req.specifier.contains("99.0"):
        bad("triton", f"{spec} admits {nxt}.x but torch {torch} needs the {series} series "
                      f"({r['triton_series']['why']}); use {fix}")


def load_rules(path: Path = RULES) -> dict:
    return json.loads(json.dumps(load_yaml(path)))  # plain dicts and lists


def expand(rows: list, version: str) -> list:
    return [{
        "id": row.id, "platform": row.platform, "runner": row.runner, "torch": row.torch,
        "cuda": row.cuda, "toolkit": row.toolkit, "triton": row.triton, "abi": row.abi,
        "python": row.python, "python_min": row.python_min, "archs": " ".join(row.archs),
        "msvc_toolset": row.msvc_toolset, "local_version": row.local_version,
        "wheels": row.wheel_names(version),
    } for row in rows]


def markdown(entries: list, version: str) -> str:
    lines = [
        "# Compatibility of the prebuilt wheels",
        "",
        "Generated from build_matrix.yaml by `python scripts/matrix.py expand --format markdown`",
        "(tests/test_matrix.py fails when this file is stale). Install the wheel of the row that",
        "matches your platform, torch version and its CUDA variant (`python -c \"import torch;",
        "print(torch.__version__)\"`), and the Triton requirement of that row; never let pip",
        "replace torch.",
        "",
        "| platform | torch | CUDA variant | Python | Triton | GPU archs | wheel |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        torch = f"{e['torch']} and later (stable ABI)" if e["abi"] == "stable" else e["torch"]
        python = f"{e['python_min']}+ (abi3)" if e["abi"] in ("abi3", "stable") else ", ".join(e["python"])
        wheels = "<br>".join(f"`{w}`" for w in e["wheels"])
        lines.append(f"| {e['platform']} | {torch} | {e['cuda']} (toolkit {e['toolkit']}) | "
                     f"{python} | `{e['triton']}` | {e['archs']} | {wheels} |")
    lines += ["", f"Package version of these names: {version}.", ""]
    return "\n".join(lines)


def package_version() -> str:
    text = (ROOT / "sageattention" / "_version.py").read_text(encoding="utf-8")
    return re.search(r"""__version__\s*=\s*["']([^"']+)""", text).group(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("check", "expand"):
        p = sub.add_parser(name)
        p.add_argument("--matrix", type=Path, default=MATRIX)
        p.add_argument("--rules", type=Path, default=RULES)
        if name == "expand":
            p.add_argument("--platform", choices=PLATFORMS)
            p.add_argument("--format", choices=("json", "github", "markdown"), required=True)
    args = ap.parse_args(argv)
    shown = str(args.matrix)
    try:
        matrix = load_yaml(args.matrix)
        rules = load_rules(args.rules)
    except OSError as exc:
        print(f"{exc.filename}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    except YAMLError as exc:
        print(f"{shown}: not valid YAML: {exc}", file=sys.stderr)
        return 1
    rows, problems = check_rows(matrix, rules)
    if args.command == "check" or problems:
        for p in sorted(problems, key=lambda p: p.line):
            print(p.render(shown))
        if problems:
            print(f"{len(problems)} problem(s) in {shown}", file=sys.stderr)
            return 1
        print(f"{shown}: {len(rows)} rows, no problems")
        return 0
    if args.platform:
        rows = [r for r in rows if r.platform == args.platform]
    version = package_version()
    entries = expand(rows, version)
    if args.format == "json":
        print(json.dumps(entries, indent=1))
    elif args.format == "github":
        print(json.dumps({"include": entries}, separators=(",", ":")))
    else:
        print(markdown(entries, version), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
