"""Check and expand build_matrix.yaml against the rules in scripts/compat_rules.yaml.

    python scripts/matrix.py check  [--matrix PATH]
    python scripts/matrix.py expand [--matrix PATH] [--platform windows|linux] [--validations]
                                    [--released DIR] --format json|github|markdown
    python scripts/matrix.py inputs [--matrix PATH] [--released DIR] [--reused]

`check` reports every problem (not just the first) as ``PATH:LINE: row ID: what is wrong;
what to use instead`` and exits 1 if there is any, else 0. A file that cannot be checked at all
(unreadable, not UTF-8, not YAML, too large, aliases that expand too far, `rows` not a list of
mappings) is one line ``PATH:LINE: what is wrong; what to do`` (``PATH: ...`` where no line
applies) and exit status 2. `expand` prints the rows with everything derived (archs, wheel
tags, local version, runner, the GPU runners that validate the row): "github" is one JSON line
``{"include": [...]}`` for ``fromJSON`` in a workflow, "markdown" is docs/compatibility.md. With
--validations it prints one entry per (row, GPU runner, Python) instead: the validation jobs of
.github/workflows/release.yml. `inputs` prints, per row, the key of everything its wheel is built
from (the expanded row and the committed trees of the sources) and, with --released, whether
the `<wheel>.inputs` files of a release in DIR carry the same key (the release reuses that wheel;
--reused lists those wheels). `expand --released DIR` adds both to each row: inputs_key, reuse.
"""
from __future__ import annotations

import argparse
import codecs
import collections
import difflib
import hashlib
import json
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from . import matching

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "build_matrix.yaml"
RULES = ROOT / "scripts" / "compat_rules.yaml"  # data maintainers edit, beside the front ends

ROW_KEYS = ("id", "platform", "python", "python_min", "torch", "cuda", "toolkit", "triton", "abi",
            "archs", "runner", "msvc_toolset", "manylinux")
REQUIRED = ("id", "platform", "python", "torch", "cuda", "toolkit", "triton", "abi")
TEXT_KEYS = tuple(k for k in ROW_KEYS if k not in ("python", "archs"))
PLATFORMS = ("linux", "windows")
ABIS = ("cpython", "abi3", "stable")
DEFAULT_RUNNER = {"linux": "ubuntu-22.04", "windows": "windows-2022"}
# The glibc of the ubuntu-22.04 runner the Linux rows build on (.github/workflows/wheels.yml).
# Rows that release.yml builds inside its manylinux_2_28 image say manylinux: "2_28" themselves.
# Other runners: the linux_runner table of compat_rules.yaml.
DEFAULT_MANYLINUX = "2_35"
# What a maintainer would write, for the "write ... instead" half of type messages.
EXAMPLES = {"id": "win-torch2.8.0-cu129", "platform": "windows", "python": "abi3",
            "python_min": "cp310", "torch": "2.8.0", "cuda": "cu129", "toolkit": "12.9.1",
            "triton": "triton-windows<3.5", "abi": "abi3", "runner": "windows-2022",
            "msvc_toolset": "14.44", "manylinux": "2_35"}

# Ids become CI job names, artifact and file names and shell words: a safe charset, a first
# character that cannot read as an option or a hidden file, and a length a job name can carry.
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ID_MAX = 64
TEXT_MAX = 200  # any other text field: versions, requirements, labels are far shorter
ARCH_RE = re.compile(r"(?P<base>[0-9]+\.[0-9]+)(?P<a>a?)(?P<ptx>\+PTX)?")
RELEASE_RE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
# Bounds that keep a hostile or broken file from costing minutes, gigabytes or megabytes of
# output: a real matrix is a few kB with a few hundred values.
MAX_BYTES = 1_000_000
MAX_VALUES = 100_000  # counted with every alias expanded where it is used
MAX_ROWS = 512
MAX_JOBS = 256  # GitHub Actions runs at most 256 jobs per matrix; CI has one matrix per platform
MAX_SHOWN = 100  # problems printed; the rest are counted

# gpu_runners: the self-hosted runners that validate wheels on a GPU before a release publishes
# them, one entry per platform and GPU family: `linux-sm80: [self-hosted, linux, gpu, sm80]`.
# The family is the GPU's compute capability (sm80 = 8.0, sm120 = 12.0: the last digit is the
# minor); a row is validated on every runner of its platform whose GPU its archs cover.
GPU_RUNNER_RE = re.compile(r"(?P<platform>linux|windows)-sm(?P<major>[1-9][0-9]?)(?P<minor>[0-9])")
# GitHub runner labels: letters, digits, '.', '_', '-' keep them plain words in YAML and logs.
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_LABELS = 20
MAX_GPU_RUNNERS = 64
# The Python a validation job tests an abi3 or stable wheel with, clamped to the row's range:
# every torch in compat_rules.yaml publishes cp312 wheels, and actions/setup-python provides it
# on GitHub's and on self-hosted Linux and Windows runners.
TEST_PYTHON = (3, 12)
# What a wheel is built from besides its row (`inputs`): the committed trees and files of the
# sources, the build tools and the workflow that builds it (its toolchain image and installers).
INPUT_PATHS = ("csrc", "setup.py", "pyproject.toml", "sageattention", "scripts",
               ".github/workflows/release.yml")
INPUTS_SUFFIX = ".inputs"  # release asset <wheel>.inputs: the key the wheel was built from


class MatrixError(Exception):
    """A file that cannot be checked at all: reported as one line, exit status 2."""

    def __init__(self, path, line: int | None, message: str):
        super().__init__(message)
        self.path, self.line, self.message = path, line, message

    def render(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        return f"{where}: {' '.join(self.message.split())}"  # one line, whatever the parser said


@dataclass
class Problem:
    line: int
    row: str
    message: str

    def render(self, path: str) -> str:
        return f"{path}:{self.line}: row {self.row}: {self.message}"


@dataclass
class GpuRunner:
    """One entry of gpu_runners: a pool of self-hosted runners with one GPU family."""
    name: str  # linux-sm80
    platform: str
    gpu: str  # the compute capability, "8.0"
    labels: list
    line: int = 0

    @property
    def family(self) -> str:
        return self.name.split("-", 1)[1]


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
    # Set by check_rows: the GPU runners that validate this row, and the Pythons they test with.
    validate_on: list = field(default_factory=list)
    test_pythons: list = field(default_factory=list)

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


# ---------------------------------------------------------------------------------------------
# Small helpers

def _cp(tag) -> tuple | None:
    m = re.fullmatch(r"cp3([0-9]+)", tag) if isinstance(tag, str) else None
    return (3, int(m.group(1))) if m else None


def _variant_cuda(variant: str) -> tuple | None:
    """cu129 -> (12, 9); cu130 -> (13, 0)."""
    m = re.fullmatch(r"cu([0-9]+)([0-9])", variant)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _xy(version: str) -> tuple:
    v = Version(version)
    return v.major, v.minor


def arch_tuple(arch: str) -> tuple:
    base = str(arch).replace("+PTX", "").rstrip("af")
    major, minor = base.split(".")
    return int(major), int(minor)


def _kind(value) -> str:
    """What a value is, in words: never the value itself, which may be huge or shared."""
    if value is None:
        return "no value (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        text = repr(float(value)) if isinstance(value, float) else str(value)
        return f"the number {text[:20]}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "text"
    return f"a {type(value).__name__} value"


def _show(value, limit: int = 60) -> str:
    """A value quoted for a message: one line (repr escapes breaks) and bounded in length."""
    if not isinstance(value, str):
        return _kind(value)
    text = repr(value[:limit])
    return text if len(value) <= limit else text[:-1] + "...'"


def _line(node, key=None) -> int:
    """1-based line of a key in a ruamel mapping (or of the mapping itself), 0 if unknown.

    A key that came in through a merge key (``<<: *common``) has no line in the row: its line
    is the one where the anchored mapping writes it (followed through nested merges)."""
    seen = 0
    while node is not None and seen < 100:
        seen += 1
        lc = getattr(node, "lc", None)
        if lc is None:
            return 0
        if key is None:
            return lc.line + 1
        try:
            return lc.key(key)[0] + 1
        except (KeyError, TypeError, AttributeError):
            pass
        source = next((s for s in _merge_sources(node) if _has(s, key)), None)
        if source is None:
            return lc.line + 1
        node = source
    return 0


def _has(mapping, key) -> bool:
    try:
        return key in mapping
    except TypeError:  # an unhashable key
        return False


def _merge_sources(node) -> list:
    """The mappings a ruamel CommentedMap merged in, first (winning) first. ruamel 0.18 keeps
    (position, mapping) pairs, 0.19 the mappings."""
    merged = getattr(node, "merge", None) or []
    return [m[1] if isinstance(m, tuple) else m for m in merged]


# ---------------------------------------------------------------------------------------------
# Reading a file: bytes -> text -> YAML -> bounded plain structure

def read_text(path, option: str = "--matrix") -> str:
    """The file's text; MatrixError for anything that is not a readable UTF-8 file."""
    path = Path(path)
    try:
        if path.is_dir():
            raise MatrixError(path, None, f"cannot read: it is a folder; pass {option} the YAML "
                                          "file itself")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)  # bounded even for /dev/zero or a lying stat
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MatrixError(path, None, f"cannot read: {reason}; pass {option} an existing, "
                                      "readable YAML file") from None
    if len(data) > MAX_BYTES:
        raise MatrixError(path, None, f"is larger than {MAX_BYTES // 1000} kB; a build matrix "
                                      "is a few kB of rows: pass the right file, or split it")
    return _decode(data, path)


_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def _decode(data: bytes, path) -> str:
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise MatrixError(path, 1, f"is {name} text; save it as UTF-8 (Notepad: Save as, "
                                       "Encoding UTF-8)")
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise MatrixError(path, line, "holds NUL bytes (UTF-16 text without a byte order mark, "
                                      "or not a text file); save it as UTF-8 text")
    try:
        return data.decode("utf-8-sig")  # a UTF-8 byte order mark is harmless
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise MatrixError(path, line, f"is not UTF-8: byte 0x{data[exc.start]:02x} at column "
                                      f"{column} is not valid UTF-8; save the file as UTF-8 (it "
                                      "may be in a legacy encoding such as Windows-1252)") from None


class _Constructor(RoundTripConstructor):
    """ruamel lets a ValueError escape for a scalar Python cannot convert (a date such as
    2020-13-45, an integer of 5000 digits): raise it as a YAML error with the value's line."""

    def construct_non_recursive_object(self, node, tag=None):
        try:
            return super().construct_non_recursive_object(node, tag)
        except (ValueError, TypeError, OverflowError) as exc:
            if "unhashable" in str(exc):
                message = "a list or mapping is used as a key; keys are plain text such as 'torch'"
            else:
                value = _show(node.value) if isinstance(node.value, str) else "this value"
                message = f"cannot read {value} ({exc})"
            raise ConstructorError(None, None, message, node.start_mark) from None


def parse_yaml(text: str, path):
    """The YAML document of the text (ruamel round-trip types, with line numbers)."""
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ruamel warns on re-used anchors: legal YAML
            return yaml.load(text)
    except MarkedYAMLError as exc:
        raise _yaml_error(exc, path) from None
    except ReaderError as exc:
        line = text[:max(exc.position, 0)].count("\n") + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise MatrixError(path, line, f"not valid YAML: the character {char!r} is not "
                                      "allowed in YAML text; delete it") from None
    except RecursionError:
        raise MatrixError(path, None, "not valid YAML for this checker: collections nested too "
                                      "deeply; a build matrix needs rows of flat fields") from None
    except (YAMLError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        # The parser is third-party: whatever else it raises on odd input is one line too.
        raise MatrixError(path, None, f"not valid YAML ({type(exc).__name__}: {_show(str(exc))}); "
                                      "check the file's syntax") from None


def _yaml_error(exc: MarkedYAMLError, path) -> MatrixError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "syntax error"
    if isinstance(exc, DuplicateKeyError):
        hint = "give each key once in a mapping"
    elif "used as a key" in problem:
        hint = "write the key as text, or remove the '?' or alias in front of it"
    elif "merging" in problem:
        hint = "a merge key takes an alias of a mapping, or a list of them: <<: *common"
    elif "alias" in problem:
        hint = "define the anchor (&name) before its alias (*name), letters and digits only"
    elif isinstance(exc, ConstructorError):
        hint = "quote the value or remove its tag"
    else:
        hint = "check the indentation, the quotes and the ': ' after each key there"
    where = f" (column {mark.column + 1})" if mark is not None else ""
    line = mark.line + 1 if mark is not None else None
    return MatrixError(path, line, f"not valid YAML: {problem[:200]}{where}; {hint}")


def _bound_values(data, path) -> None:
    """Refuse a document that holds more than MAX_VALUES values once aliases are expanded.

    ruamel shares one object per anchor, so loading nested aliases ("billion laughs") is
    cheap; walking or printing them is not (nine levels of nine aliases are 387 million
    values). Every consumer of the data walks it, so it is bounded once, here."""
    count = 0
    stack = [(data, 0, 0)]  # (value, line to blame, depth)
    while stack:
        node, where, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise MatrixError(path, where or None, f"holds more than {MAX_VALUES} values once its "
                              "aliases are expanded (aliases of aliases multiply); write the "
                              "values out, or share row fields with a merge key (<<: *common)")
        stack.extend(_children(node, where, depth))


def _children(node, where: int, depth: int) -> list:
    """The values inside a value, each with the line to blame: a top-level key's, a row's."""
    if isinstance(node, dict):
        return [(v, where or _line(node, k), depth + 1) for k in node for v in (k, node[k])]
    if isinstance(node, (list, tuple)):
        return [(v, where if depth != 1 else _item_line(node, i), depth + 1)
                for i, v in enumerate(node)]
    if isinstance(node, (set, frozenset)):
        return [(v, where, depth + 1) for v in node]
    return []


def load_yaml(path, option: str = "--matrix"):
    """Read, decode and parse a YAML file, bounded in size and alias expansion."""
    data = parse_yaml(read_text(path, option), path)
    _bound_values(data, path)
    return data


def load_matrix(path):
    """The matrix document, checked for the shape every further check relies on."""
    data = load_yaml(path)
    shape = shape_error(data)
    if shape:
        raise MatrixError(path, shape[0], shape[1])
    return data


def shape_error(matrix) -> tuple | None:
    """(line, message) if the document is not a mapping with `rows` a list of row mappings
    (and `defaults`, if present, a mapping), else None."""
    if matrix is None:
        return 1, ("is empty; a build matrix is a mapping with 'rows' (a list of rows) and "
                   "optional 'defaults' (docs/maintainers.md)")
    if not isinstance(matrix, dict):
        return 1, (f"must be a mapping with 'defaults' and 'rows', not {_kind(matrix)}; start the "
                   "file with 'defaults:' or 'rows:' at the left margin")
    defaults = matrix.get("defaults")
    if defaults is not None and not isinstance(defaults, dict):
        return _line(matrix, "defaults"), (
            f"'defaults' must be a mapping of field: value, not {_kind(defaults)}; write "
            "'defaults:' with the fields indented below it, such as 'abi: abi3'")
    if "rows" not in matrix:
        return 1, "has no 'rows'; add 'rows:' with a list of rows, each starting '- id: ...'"
    rows = matrix["rows"]
    if not isinstance(rows, list) or not rows:
        what = "empty" if isinstance(rows, list) else f"{_kind(rows)}"
        return _line(matrix, "rows"), (f"'rows' must be a non-empty list of rows, not {what}; "
                                       "write each row as '- id: ...' with its fields indented "
                                       "below it")
    if len(rows) > MAX_ROWS:
        return _line(matrix, "rows"), (f"'rows' has {len(rows)} rows, more than {MAX_ROWS}; CI runs "
                                       f"at most {MAX_JOBS} jobs per platform: drop rows")
    for index, raw in enumerate(rows):
        if not isinstance(raw, dict):
            return _item_line(rows, index), (
                f"row #{index + 1} must be a mapping of field: value, not {_kind(raw)}; write "
                "'- id: ...' and indent the row's other fields under 'id'")
    return None


def _item_line(seq, index: int) -> int:
    try:
        return seq.lc.item(index)[0] + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return _line(seq)


# ---------------------------------------------------------------------------------------------
# The rules file

def _is_version(text) -> bool:
    try:
        Version(text)
        return isinstance(text, str)
    except (InvalidVersion, TypeError):
        return False


def _is_spec(text) -> bool:
    try:
        SpecifierSet(text)
        return isinstance(text, str)
    except (InvalidSpecifier, TypeError):
        return False


def _matches(pattern: str):
    return lambda text: isinstance(text, str) and re.fullmatch(pattern, text) is not None


_ARCH_FORM = _matches(r"[0-9]+\.[0-9]+a?")
_LABEL = _matches(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# rules: name -> fixed sub-keys and their checks, or ("map", key check, value check).
_RULES_SCHEMA = {
    "triton_series": {}, "cuda_variant": {}, "python_range": {}, "toolkit_matches_variant": {},
    "abi3_python_min": {},
    "triton_package": {"linux": _LABEL, "windows": _LABEL},
    "abi_min_torch": {"cpython": _is_version, "abi3": _is_version, "stable": _is_version},
    "arch_min_toolkit": ("map", _ARCH_FORM, _is_version),
    "arch_max_toolkit": ("map", _matches(r"[0-9]+"), _ARCH_FORM),
    "default_archs": {"archs": [_ARCH_FORM]},
    "known_archs": {"archs": [_ARCH_FORM], "arch_specific": [_ARCH_FORM]},
    "windows_runner": ("map", _LABEL, _is_spec),
    "linux_runner": ("map", _LABEL, _matches(r"2_[0-9]+")),
    "msvc_toolset": ("map", _matches(r"[0-9]+\.[0-9]+"), _is_spec),
}
_TORCH_SCHEMA = {"triton_series": _matches(r"[0-9]+\.[0-9]+"), "cuda": [_matches(r"cu[0-9]+")],
                 "python": lambda v: isinstance(v, list) and len(v) == 2 and all(map(_cp, v)),
                 "limited_api_min": _matches(r"cp3[0-9]+")}


def _schema_error(node, schema, where: str) -> tuple | None:
    """(line, what) of the first entry of `node` that `schema` does not admit."""
    if not isinstance(schema, dict):  # a check of one value, or [check] for a list of them
        ok = (isinstance(node, list) and node and all(schema[0](v) for v in node)
              if isinstance(schema, list) else schema(node))
        return None if ok else (0, f"{where} has an unexpected value {_show(node)}")
    if not isinstance(node, dict):
        return 0, f"{where} must be a mapping"
    for key, check in schema.items():
        if key not in node:
            return _line(node), f"{where} lacks {key!r}"
        found = _schema_error(node[key], check, f"{where}.{key}")
        if found:
            return found[0] or _line(node, key), found[1]
    return None


def _rules_error(rules) -> tuple | None:
    if not isinstance(rules, dict) or not isinstance(rules.get("torch"), dict) \
            or not isinstance(rules.get("rules"), dict):
        return 1, "must be a mapping with 'torch' and 'rules'"
    for minor, entry in rules["torch"].items():
        if not _matches(r"[0-9]+\.[0-9]+")(minor):
            return _line(rules["torch"], minor), (f"torch entry {_show(minor)} must be an X.Y version "
                                                  "in quotes (\"2.10\")")
        found = _schema_error(entry, _TORCH_SCHEMA, f"torch.{minor}")
        if found:
            return found[0] or _line(rules["torch"], minor), found[1]
    for name, spec in _RULES_SCHEMA.items():
        node = rules["rules"].get(name)
        where = f"rules.{name}"
        if not isinstance(node, dict) or not isinstance(node.get("why"), str):
            return _line(rules["rules"], name) or 1, f"{where} must be a mapping with a 'why' text"
        if isinstance(spec, tuple):
            for key, value in node.items():
                if key != "why" and not (spec[1](key) and spec[2](value)):
                    return _line(node, key), f"{where} has an unexpected entry {_show(key)}"
        else:
            found = _schema_error(node, spec, where)
            if found:
                return found[0] or _line(node), found[1]
    return None


def _plain(node):
    """ruamel's round-trip types as plain dicts, lists and scalars."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if isinstance(node, (str, bool, int, float)) or node is None:
        return node
    return str(node)


def load_rules(path: Path = RULES) -> dict:
    """The rules as plain dicts and lists; MatrixError if the file is unusable."""
    raw = load_yaml(path, option="--rules")
    found = _rules_error(raw)
    if found:
        raise MatrixError(path, found[0] or None, f"{found[1]}; restore the structure that "
                                                  "docs/maintainers.md describes")
    return _plain(raw)


# ---------------------------------------------------------------------------------------------
# GPU archs: one implementation for matrix rows and the --archs of the build and check tools

def split_archs(text: str) -> list:
    """TORCH_CUDA_ARCH_LIST syntax: separated by spaces or semicolons."""
    return text.replace(";", " ").split()


def _arch_text(value) -> str | None:
    """An arch as text. YAML reads an unquoted `- 8.0` as the float 8.0: every CUDA arch has a
    one-digit minor, so the float's shortest form ("8.0", "10.0", "12.0") is the arch and is
    accepted; an integer (`- 9`) is kept as "9" for the form check to reject."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def arch_list(archs) -> list:
    """The archs of a row's `archs` value (text, a list, or one number) as strings."""
    items = split_archs(archs) if isinstance(archs, str) else (
        list(archs) if isinstance(archs, (list, tuple)) else [archs])
    return [a for a in map(_arch_text, items) if a is not None]


def arch_problems(archs, toolkit: str | None, rules: dict) -> list:
    """What is wrong with an arch list for this toolkit (empty: nothing). `archs` is a row's
    value (a list, or text like "8.0 9.0a") or the text of an --archs option; without a
    toolkit (a wheel checked without its row) only the forms and known archs are checked."""
    items = split_archs(archs) if isinstance(archs, str) else (
        list(archs) if isinstance(archs, (list, tuple)) else [archs])
    if not items:
        return [("no GPU arch given; list at least one, such as \"8.0\" or \"8.0 8.9 9.0a\", or "
                "leave archs out for the default list (minus what the toolkit cannot build)")]
    problems, seen = [], set()
    for item in items:
        arch = _arch_text(item)
        if arch is None:
            problems.append(f"arch entries must be text like \"8.6\", not {_kind(item)}; write "
                            "e.g. archs: [\"8.0\", \"9.0a\"]")
            continue
        why = _arch_problem(arch, toolkit, rules)
        if why is None and arch in seen:
            why = f"arch {arch} is listed twice; list each arch once"
        seen.add(arch)
        if why:
            problems.append(why)
    return problems


def _arch_problem(arch: str, toolkit: str | None, rules: dict) -> str | None:
    m = ARCH_RE.fullmatch(arch)
    if m is None:
        return (f"arch {_show(arch)} must look like 8.6, 9.0a or 12.0+PTX (major.minor, an "
                "optional a for the arch-specific target, an optional +PTX to embed PTX)")
    known = rules["rules"]["known_archs"]
    base = m["base"]
    if base not in known["archs"]:
        return (f"arch {arch} is not a GPU arch scripts/compat_rules.yaml knows; use one of "
                f"{', '.join(known['archs'])}")
    if m["a"] and base not in known["arch_specific"]:
        return (f"arch {arch} does not exist: only {', '.join(a + 'a' for a in known['arch_specific'])} "
                f"have an arch-specific target; write {base}{m['ptx'] or ''}")
    return buildable(arch, toolkit, rules) if toolkit else None


def default_archs(toolkit: str, rules: dict) -> list:
    """The default arch list minus what this toolkit cannot build."""
    archs = list(rules["rules"]["default_archs"]["archs"])
    return [a for a in archs if buildable(a, toolkit, rules) is None]


def buildable(arch: str, toolkit: str, rules: dict) -> str | None:
    """None if the toolkit can build the arch, else why not (with the fix). The `a` and +PTX
    forms need what their base arch needs (or their own entry, such as 9.0a)."""
    r = rules["rules"]
    tk = Version(toolkit)
    form = str(arch).replace("+PTX", "")
    need = r["arch_min_toolkit"].get(form) or r["arch_min_toolkit"].get(form.rstrip("a"))
    if need and tk < Version(need):
        return (f"arch {arch} needs CUDA toolkit >= {need} ({r['arch_min_toolkit']['why']}); "
                f"drop it or raise the toolkit to {need} or newer")
    oldest = r["arch_max_toolkit"].get(str(tk.major))
    if oldest and arch_tuple(arch) < arch_tuple(oldest):
        return (f"CUDA {tk.major} cannot build arch {arch}; its oldest is {oldest} "
                f"({r['arch_max_toolkit']['why']}); drop it or use CUDA {tk.major - 1}")
    return None


# ---------------------------------------------------------------------------------------------
# Rows

def check_rows(matrix, rules: dict) -> tuple:
    """(rows, problems): every row that parsed, and every problem found in the file."""
    shape = shape_error(matrix)
    if shape:
        return [], [Problem(shape[0], "-", shape[1])]
    problems = _top_level_problems(matrix)
    defaults = matrix.get("defaults") or {}
    default_problems, bad_defaults = _defaults_problems(defaults)
    problems += default_problems
    inherited = {k: v for k, v in defaults.items() if k in ROW_KEYS and k != "id"}
    rows: list = []
    seen: dict = {}
    for index, raw in enumerate(matrix["rows"]):
        label = _row_label(raw, index)
        problems += _duplicate_id(raw, label, seen)
        row, found = _check_raw_row(raw, label, inherited, bad_defaults, rules)
        problems += found
        if row is not None:
            rows.append(row)
    problems += _job_count_problems(rows, matrix)
    problems += _validation_problems(rows, matrix, rules)
    return rows, problems


def _top_level_problems(matrix) -> list:
    # Top-level keys starting with x- are free (as in compose files): a place for anchors of
    # shared row fields that is not a row itself.
    return [Problem(_line(matrix, key), "-", f"unknown top-level key {_show(key)}; use 'defaults', "
                                             "'rows' and 'gpu_runners' (and x-... keys for anchors)")
            for key in matrix if key not in ("defaults", "rows", "gpu_runners")
            and not (isinstance(key, str) and key.startswith("x-"))]


# ---------------------------------------------------------------------------------------------
# GPU runners: which self-hosted runners validate which rows

GPU_RUNNER_EXAMPLE = "linux-sm80: [self-hosted, linux, gpu, sm80]"


def gpu_runners(matrix, rules: dict) -> tuple:
    """(runners, problems) of the top-level gpu_runners mapping; ([], []) without one."""
    if not isinstance(matrix, dict) or "gpu_runners" not in matrix:
        return [], []
    node = matrix["gpu_runners"]
    where = _line(matrix, "gpu_runners")
    if not isinstance(node, dict) or not node:
        what = "empty" if isinstance(node, dict) else _kind(node)
        return [], [Problem(where, "gpu_runners", f"gpu_runners must be a mapping of PLATFORM-smXY to "
                            f"runner labels, not {what}; write e.g. {GPU_RUNNER_EXAMPLE}")]
    if len(node) > MAX_GPU_RUNNERS:
        return [], [Problem(where, "gpu_runners", f"gpu_runners has {len(node)} entries, more than "
                            f"{MAX_GPU_RUNNERS}; declare one per platform and GPU family")]
    known = rules["rules"]["known_archs"]["archs"]
    runners, problems = [], []
    for key, labels in node.items():
        line = _line(node, key) or where
        why = _runner_key_problem(key, known) or _labels_problem(key, labels)
        if why:
            problems.append(Problem(line, "gpu_runners", why))
            continue
        m = GPU_RUNNER_RE.fullmatch(key)
        runners.append(GpuRunner(name=key, platform=m["platform"], gpu=f"{m['major']}.{m['minor']}",
                                 labels=list(labels), line=line))
    return runners, problems


def _runner_key_problem(key, known: list) -> str | None:
    m = GPU_RUNNER_RE.fullmatch(key) if isinstance(key, str) else None
    if m is None:
        return (f"gpu_runners key {_show(key)} must name a platform and a GPU family, "
                f"PLATFORM-smXY (linux-sm80, windows-sm89, linux-sm120); write e.g. {GPU_RUNNER_EXAMPLE}")
    gpu = f"{m['major']}.{m['minor']}"
    if gpu not in known:
        return (f"gpu_runners key {key}: sm{m['major']}{m['minor']} is GPU {gpu}, not a GPU arch "
                f"scripts/compat_rules.yaml knows; use one of "
                f"{', '.join('sm' + a.replace('.', '') for a in known)}")
    return None


def _labels_problem(key: str, labels) -> str | None:
    """Why a runner's labels would not select a self-hosted runner of that platform and GPU."""
    platform, family = key.split("-", 1)
    example = f"{key}: [self-hosted, {platform}, gpu, {family}]"
    if not isinstance(labels, list) or not labels:
        what = "an empty list" if isinstance(labels, list) else _kind(labels)
        return f"gpu_runners {key} must be a list of runner labels, not {what}; write {example}"
    if len(labels) > MAX_LABELS:
        return f"gpu_runners {key} has {len(labels)} labels, more than {MAX_LABELS}; write {example}"
    for label in labels:
        if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
            shown = _show(label) if isinstance(label, str) else _kind(label)
            return (f"gpu_runners {key}: label {shown} must be a word of letters, digits, '.', '_' or "
                    f"'-' (at most 100); write {example}")
    lower = [label.lower() for label in labels]
    if labels[0] != "self-hosted":
        # A GitHub-hosted label (ubuntu-latest) has no GPU: the validation would fail or, worse,
        # be picked up by a runner the project does not control.
        return (f"gpu_runners {key}: the first label must be self-hosted, not {_show(labels[0])}; "
                f"write {example}")
    if len(set(lower)) != len(lower):
        return f"gpu_runners {key} lists a label twice (labels ignore case); write {example}"
    # Labels match case-insensitively on GitHub; self-hosted runners carry Linux/Windows.
    if platform not in lower:
        return (f"gpu_runners {key} lacks the label {platform}: a runner of the other platform could "
                f"take the job; write {example}")
    if family not in lower:
        return (f"gpu_runners {key} lacks the label {family}: a runner with another GPU could take the "
                f"job; write {example}")
    return None


def _covering(row: Row, runners: list) -> list:
    """The runners of the row's platform whose GPU the row's archs cover (the installer's rule,
    sagewheels/matching.py: a GPU X.Y runs X.Z cubins with Z <= Y, X.Ya, and +PTX <= X.Y)."""
    return [r for r in runners if r.platform == row.platform and matching.gpu_covered(r.gpu, row.archs)]


def validation_pythons(row: Row, rules: dict) -> list:
    """The Pythons (X.Y) a validation of the row runs: each tag of a cpython row; one for an
    abi3 or stable row, TEST_PYTHON clamped to python_min .. the newest of the row's torch."""
    if row.abi == "cpython":
        return [f"{_cp(t)[0]}.{_cp(t)[1]}" for t in row.python]
    newest = _cp(rules["torch"][row.torch_minor]["python"][1])
    pick = max(min(TEST_PYTHON, newest), _cp(row.python_min))
    return [f"{pick[0]}.{pick[1]}"]


def _validation_problems(rows: list, matrix, rules: dict) -> list:
    """Problems of gpu_runners, and, once it is sound, every row that no runner validates (a
    release publishes only validated wheels) and a validation matrix over GitHub's job limit."""
    runners, problems = gpu_runners(matrix, rules)
    for row in rows:
        row.validate_on = _covering(row, runners)
        row.test_pythons = validation_pythons(row, rules)
    if problems or not runners:
        return problems
    for row in rows:
        if not row.validate_on:
            base = (row.archs or ["8.0"])[0].replace("+PTX", "").rstrip("a")
            family = "sm" + base.replace(".", "")
            problems.append(Problem(row.line, row.id, (
                f"no GPU runner in gpu_runners validates this {row.platform} row (archs "
                f"{' '.join(row.archs)}): a release publishes only validated wheels; add a runner, e.g. "
                f"{row.platform}-{family}: [self-hosted, {row.platform}, gpu, {family}] "
                "(docs/releasing.md, Adding a GPU runner)")))
    jobs = sum(len(r.validate_on) * len(r.test_pythons) for r in rows)
    if jobs > MAX_JOBS:
        problems.append(Problem(_line(matrix, "gpu_runners"), "gpu_runners", (
            f"{jobs} validation jobs (rows x their GPU runners); GitHub Actions runs at most {MAX_JOBS} "
            "per matrix: drop runners or rows")))
    return problems


def _defaults_problems(defaults) -> tuple:
    """(problems, keys whose default value is unusable)."""
    problems, bad = [], set()
    for key, value in defaults.items():
        if key not in ROW_KEYS or key == "id":
            problems.append(Problem(_line(defaults, key), "defaults", f"unknown key {_show(key)}; "
                                    f"known: {', '.join(k for k in ROW_KEYS if k != 'id')}"))
            continue
        why = _type_problem(key, value)
        if why:
            problems.append(Problem(_line(defaults, key), "defaults", why))
            bad.add(key)
    return problems, bad


def _row_label(raw, index: int) -> str:
    row_id = raw.get("id")
    return row_id if isinstance(row_id, str) and ID_RE.fullmatch(row_id) else f"#{index + 1}"


def _duplicate_id(raw, label: str, seen: dict) -> list:
    if label.startswith("#"):
        return []
    if label in seen:
        return [Problem(_line(raw, "id"), label, f"duplicate id (first on line {seen[label]}); "
                        "give every row its own id")]
    seen[label] = _line(raw, "id")
    return []


def _check_raw_row(raw, label: str, inherited: dict, bad_defaults: set, rules: dict) -> tuple:
    """(Row or None, problems) of one row mapping as the file writes it."""
    line = _line(raw)
    problems = [Problem(_line(raw, key), label, _unknown_key(key)) for key in raw
                if key not in ROW_KEYS]
    own = {k: v for k, v in raw.items() if k in ROW_KEYS}
    # Problems with a value inherited from defaults are reported at the row; a merged key's
    # at the line of the anchored mapping that writes it (_line).
    lines = {k: _line(raw, k) for k in own}
    typed = [Problem(lines[k], label, why) for k, v in own.items() if (why := _type_problem(k, v))]
    if typed:
        return None, problems + typed
    merged = {**inherited, **own}
    if any(k in bad_defaults and k not in own for k in merged):
        return None, problems  # the default's problem is reported once, at defaults
    missing = [k for k in REQUIRED if k not in merged]
    if missing:
        return None, problems + [Problem(line, label, f"missing {', '.join(missing)}; set them in "
                                         "the row or in defaults")]
    written = [Problem(lines.get(k, line), label, why)
               for k, why in _written_row_problems(merged, own)]
    row, found = _check_row(label, merged, lines, line, rules)
    return (None if written else row), problems + written + found


def _unknown_key(key) -> str:
    short = isinstance(key, str) and len(key) < 40
    close = difflib.get_close_matches(key, ROW_KEYS, n=1) if short else []
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(ROW_KEYS)}"
    return f"unknown key {_show(key)}; {hint}"


def _type_problem(key: str, value) -> str | None:
    """Why a field's value has the wrong type or form for any row, else None."""
    if key == "python":
        return _python_type_problem(value)
    if key == "archs":
        return _archs_type_problem(value)
    return _text_problem(key, value)


def _python_type_problem(value) -> str | None:
    if isinstance(value, str):
        return _text_problem("python", value)
    if not isinstance(value, list):
        return (f"python must be abi3 or a list of cpXY tags, not {_kind(value)}; write "
                "python: abi3 or python: [cp311, cp312]")
    if not value:
        return ("python is an empty list; list the CPython tags (python: [cp311, cp312]) or "
                "write python: abi3")
    bad = [tag for tag in value if not isinstance(tag, str)]
    if bad:
        return (f"python entries must be text like cp312, not {_kind(bad[0])}; write "
                "python: [cp311, cp312]")
    return None


def _archs_type_problem(value) -> str | None:
    # Entries are checked by arch_problems; numbers are accepted there (see _arch_text).
    if isinstance(value, str):
        return _text_problem("archs", value)
    if isinstance(value, list) or isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    return (f"archs must be a list such as [\"8.0\", \"9.0a\"], not {_kind(value)}; or leave it "
            "out for the default list")


def _text_problem(key: str, value) -> str | None:
    example = EXAMPLES.get(key, "8.0 9.0a")
    if value is None:
        return f"{key} has no value; write e.g. {key}: \"{example}\", or leave the key out"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (f"{key} must be text, but YAML reads the unquoted value as {_kind(value)}; quote "
                f"it: {key}: \"{example}\"")
    if not isinstance(value, str):
        return f"{key} must be text, not {_kind(value)}; write e.g. {key}: \"{example}\""
    limit = ID_MAX if key == "id" else TEXT_MAX
    if len(value) > limit:
        return f"{key} is {len(value)} characters long; keep it within {limit}, e.g. {key}: \"{example}\""
    if not value.isprintable():
        return f"{key} holds a line break or control character; write it on one line: {key}: \"{example}\""
    if not value.strip():
        return f"{key} is blank; write e.g. {key}: \"{example}\", or leave the key out"
    return None


def _written_row_problems(merged: dict, own: dict) -> list:
    """(key, message) for what only a row written in the file can get wrong: its id, the
    toolkit's form (host rows carry nvcc's X.Y), python_min set on a cpython row."""
    out = []
    if not ID_RE.fullmatch(merged["id"]):
        out.append(("id", (f"id {_show(merged['id'])} must be 1 to {ID_MAX} letters, digits, '.', '_' "
                          "or '-', starting with a letter or digit (it becomes a CI job name, file "
                          "names and a shell word); write e.g. id: win-torch2.8.0-cu129")))
    toolkit = merged["toolkit"]
    if _is_version(toolkit) and not RELEASE_RE.fullmatch(toolkit):
        v = Version(toolkit)
        out.append(("toolkit", (f"toolkit {_show(toolkit)} must be a full X.Y.Z release (the CI "
                               "installer, Jimver/cuda-toolkit, takes nothing else); write e.g. "
                               f"toolkit: \"{v.major}.{v.minor}.0\" or the update you install")))
    if merged["abi"] == "cpython" and "python_min" in own:
        out.append(("python_min", ("python_min only applies to abi3 and stable rows (a cpython "
                                  "row builds one wheel per tag in python); remove it, or set "
                                  "abi: abi3 and python: abi3")))
    return out


def _job_count_problems(rows: list, matrix) -> list:
    counts = collections.Counter(r.platform for r in rows)
    return [Problem(_line(matrix, "rows"), "-", f"{n} {plat} rows; CI runs each platform's rows as "
                    f"one GitHub Actions matrix of at most {MAX_JOBS} jobs: drop rows")
            for plat, n in counts.items() if n > MAX_JOBS]


def _check_row(row_id: str, m: dict, lines: dict, line: int, rules: dict):
    out: list = []

    def bad(key, message):
        out.append(Problem(lines.get(key, line), row_id, message))

    r = rules["rules"]
    platform = str(m["platform"])
    if platform not in PLATFORMS:
        bad("platform", f"platform {_show(platform)} is not one of {', '.join(PLATFORMS)}")
        return None, out
    abi = str(m["abi"])
    if abi not in ABIS:
        bad("abi", f"abi {_show(abi)} is not one of {', '.join(ABIS)}")
        return None, out
    torch = str(m["torch"])
    toolkit = str(m["toolkit"])
    if not _is_version(torch):
        bad("torch", f"torch {_show(torch)} is not a version; write an exact release, quoted: "
                     "torch: \"2.8.0\"")
        return None, out
    if not _is_version(toolkit):
        bad("toolkit", f"toolkit {_show(toolkit)} is not a version; write the CUDA toolkit "
                       "release, quoted: toolkit: \"12.9.1\"")
        return None, out
    torch_v = Version(torch)
    if not RELEASE_RE.fullmatch(torch):
        bad("torch", f"torch must be an exact release like \"2.8.0\", got {_show(torch)}")
    minor = f"{torch_v.major}.{torch_v.minor}"
    known = rules["torch"].get(minor)
    if known is None:
        bad("torch", f"torch {minor} has no entry in scripts/compat_rules.yaml; add its Triton "
                     f"series, CUDA variants and Python range there (known: "
                     f"{', '.join(rules['torch'])})")
        return None, out

    cuda = str(m["cuda"])
    _check_cuda(cuda, toolkit, minor, known, r, bad)
    _check_triton(str(m["triton"]), platform, torch, known["triton_series"], r, bad)
    tags, python_min = _check_python(m, abi, torch_v, minor, known, r, bad)
    archs = m.get("archs")
    if archs is None:
        archs = default_archs(toolkit, rules)
    else:
        for why in arch_problems(archs, toolkit, rules):
            bad("archs", why)
        archs = arch_list(archs)
    runner = str(m.get("runner") or DEFAULT_RUNNER[platform])
    _check_runner(runner, platform, toolkit, r, bad)
    toolset = m.get("msvc_toolset")
    _check_toolset(toolset, platform, toolkit, r, bad)
    manylinux = _check_manylinux(m.get("manylinux"), platform, runner, r, bad)

    if out:
        return None, out
    return Row(id=row_id, platform=platform, torch=torch, cuda=cuda, toolkit=toolkit,
               triton=str(m["triton"]), abi=abi, python=tags, python_min=python_min,
               archs=archs, runner=runner, msvc_toolset=toolset,
               manylinux=manylinux, line=line, lines=lines), out


def _check_cuda(cuda: str, toolkit: str, minor: str, known: dict, r: dict, bad) -> None:
    variant = _variant_cuda(cuda)
    if variant is None:
        bad("cuda", f"cuda must look like cu129, got {_show(cuda)}")
    elif cuda not in known["cuda"]:
        bad("cuda", f"torch {minor} is not published for {cuda} ({r['cuda_variant']['why']}); "
                    f"use one of {', '.join(known['cuda'])}")
    elif _xy(toolkit) != variant:
        bad("toolkit", f"toolkit {toolkit} does not match {cuda} "
                       f"({r['toolkit_matches_variant']['why']}); use toolkit "
                       f"{variant[0]}.{variant[1]}.x")


def _check_python(m: dict, abi: str, torch_v: Version, minor: str, known: dict, r: dict, bad):
    """(python tags, python_min) of the row, reporting what does not fit its torch."""
    min_torch = r["abi_min_torch"][abi]
    if torch_v < Version(min_torch):
        bad("abi", f"abi {abi} needs torch >= {min_torch} ({r['abi_min_torch']['why']}); use "
                   "abi cpython with a list of Python tags")
    lo, hi = (_cp(t) for t in known["python"])
    python = m["python"]
    if abi == "cpython":
        tags = list(python) if isinstance(python, list) else [python]
        for index, tag in enumerate(tags):
            v = _cp(tag)
            if v is None:
                bad("python", f"python entries must look like cp312, got {_show(tag)}")
            elif not lo <= v <= hi:
                bad("python", f"torch {minor} has no wheels for {tag} ({r['python_range']['why']}); "
                              f"use {known['python'][0]} to {known['python'][1]}")
            elif tag in tags[:index]:
                bad("python", f"python lists {tag} twice; list each tag once")
        return tags, None
    python_min = m.get("python_min")
    if str(python) != "abi3":
        bad("python", f"abi {abi} builds one wheel for all Pythons: set python: abi3 and "
                      "python_min")
    floor = known["limited_api_min"]
    if python_min is None:
        bad("python", f"abi3 needs python_min; use python_min: {floor}")
    elif _cp(python_min) is None:
        bad("python_min", f"python_min must look like cp310, got {_show(python_min)}")
    elif _cp(python_min) < _cp(floor):
        bad("python_min", f"torch {minor} headers define Py_LIMITED_API for {floor} "
                          f"({r['abi3_python_min']['why']}); use python_min: {floor}")
    elif _cp(python_min) > hi:
        bad("python_min", f"python_min {python_min} is newer than torch {minor}'s newest "
                          f"Python ({known['python'][1]}); use at most {known['python'][1]}")
    return ["abi3"], python_min


def _table(r: dict, name: str) -> dict:
    return {k: v for k, v in r[name].items() if k != "why"}


def _check_runner(runner: str, platform: str, toolkit: str, r: dict, bad) -> None:
    runners = _table(r, f"{platform}_runner")
    if runner not in runners:
        other = "linux" if platform == "windows" else "windows"
        what = (f"is a {other} runner" if runner in _table(r, f"{other}_runner")
                else "is not in scripts/compat_rules.yaml")
        bad("runner", f"runner {_show(runner)} {what}; {platform} rows use "
                      f"{' or '.join(runners)} (add a new label to {platform}_runner there)")
        return
    if platform == "windows" and Version(toolkit) not in SpecifierSet(runners[runner]):
        good = [k for k, v in runners.items() if Version(toolkit) in SpecifierSet(v)]
        bad("runner", f"runner {runner} needs CUDA toolkit {runners[runner]} "
                      f"({r['windows_runner']['why']}); use "
                      f"{' or '.join(good) or 'another runner'}")


def _check_toolset(toolset, platform: str, toolkit: str, r: dict, bad) -> None:
    if toolset is None:
        return
    if platform != "windows":
        bad("msvc_toolset", "msvc_toolset only applies to windows rows; remove it")
        return
    toolsets = _table(r, "msvc_toolset")
    if toolset not in toolsets:
        bad("msvc_toolset", f"MSVC toolset {_show(toolset)} is not in scripts/compat_rules.yaml; "
                            f"use one of {', '.join(toolsets)}, leave msvc_toolset out, or add "
                            "it there with the toolkits it works with")
    elif Version(toolkit) not in SpecifierSet(toolsets[toolset]):
        good = [k for k, v in toolsets.items() if Version(toolkit) in SpecifierSet(v)]
        fix = f"toolset {' or '.join(good)}" if good else "a newer toolkit"
        bad("msvc_toolset", f"MSVC toolset {toolset} needs CUDA toolkit {toolsets[toolset]} "
                            f"({r['msvc_toolset']['why']}); use {fix}")


def _check_manylinux(value, platform: str, runner: str, r: dict, bad) -> str:
    """The row's glibc policy: as written, else the glibc of its Linux runner."""
    if platform == "windows":
        if value is not None:
            bad("manylinux", "manylinux only applies to linux rows; remove it")
        return DEFAULT_MANYLINUX
    manylinux = str(value or _table(r, "linux_runner").get(runner) or DEFAULT_MANYLINUX)
    if not re.fullmatch(r"2_[0-9]+", manylinux):
        bad("manylinux", f"manylinux must be a glibc policy like \"2_28\", got {_show(manylinux)}")
    return manylinux


def _check_triton(spec: str, platform: str, torch: str, series: str, r: dict, bad) -> None:
    want_pkg = r["triton_package"][platform]
    nxt = f"{Version(series).major}.{Version(series).minor + 1}"
    fix = f"{want_pkg}<{nxt}" if platform == "windows" else f"{want_pkg}=={series}.*"
    try:
        req = Requirement(spec)
    except (InvalidRequirement, InvalidSpecifier) as exc:
        bad("triton", f"triton {_show(spec)} is not a valid requirement "
                      f"({' '.join(str(exc).split())[:120]}); use {fix}")
        return
    if req.url or req.marker is not None:
        what = "a URL" if req.url else f"an environment marker ({req.marker})"
        bad("triton", f"triton {_show(spec)} carries {what}: the row's platform already picks the "
                      f"package and the installer takes it from the package index; use {fix}")
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


# ---------------------------------------------------------------------------------------------
# Output

def expand(rows: list, version: str) -> list:
    return [{
        "id": row.id, "platform": row.platform, "runner": row.runner, "torch": row.torch,
        "cuda": row.cuda, "toolkit": row.toolkit, "triton": row.triton, "abi": row.abi,
        "python": row.python, "python_min": row.python_min, "archs": " ".join(row.archs),
        "msvc_toolset": row.msvc_toolset, "local_version": row.local_version,
        "wheels": row.wheel_names(version),
        "gpu_runners": [r.name for r in row.validate_on],
    } for row in rows]


def validations(rows: list, version: str) -> list:
    """The validation jobs: one per row, GPU runner that covers it and Python to test with,
    each naming the one wheel it validates and the runner labels to run on."""
    out = []
    for row, entry in zip(rows, expand(rows, version)):
        wheels = dict(zip(row.test_pythons, entry["wheels"])) if row.abi == "cpython" else \
            {row.test_pythons[0]: entry["wheels"][0]}
        for runner in row.validate_on:
            for python, wheel in wheels.items():
                out.append({**entry, "wheel": wheel, "test_python": python, "gpu_runner": runner.name,
                            "gpu_family": runner.family, "gpu_arch": runner.gpu,
                            "gpu_labels": list(runner.labels)})
    return out


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
        "| platform | torch | CUDA variant | Python | Triton | GPU archs | validated on | wheel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        torch = f"{e['torch']} and later (stable ABI)" if e["abi"] == "stable" else e["torch"]
        python = f"{e['python_min']}+ (abi3)" if e["abi"] in ("abi3", "stable") else ", ".join(e["python"])
        wheels = "<br>".join(f"`{w}`" for w in e["wheels"])
        gpus = ", ".join(name.split("-", 1)[1] for name in e["gpu_runners"]) or "-"
        lines.append(f"| {e['platform']} | {torch} | {e['cuda']} (toolkit {e['toolkit']}) | "
                     f"{python} | `{e['triton']}` | {e['archs']} | {gpus} | {wheels} |")
    lines += [
        "",
        "\"validated on\": the GPU families (sm89 = compute capability 8.9) on which the release",
        "workflow runs every kernel path of the wheel against an fp64 reference before it publishes",
        "the wheel (docs/releasing.md).",
        "",
        f"Package version of these names: {version}.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Inputs: what a row's wheel is built from, as one key

def _git(*args) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def source_ids() -> dict:
    """Path -> git object id at HEAD (a tree for a folder, a blob for a file; "absent" for a
    path HEAD lacks) of every INPUT_PATHS entry. Object ids name content, not the checkout's
    location or time: the same commit gives the same ids anywhere."""
    if _git("rev-parse", "--verify", "HEAD") is None:
        raise MatrixError(ROOT, None, "is not a git checkout with a commit (git rev-parse HEAD failed); "
                                      "the inputs key names the committed sources: run it in a clone")
    changed = _git("status", "--porcelain", "--", *INPUT_PATHS)
    if changed:
        # Only the committed sources count: a key from a dirty tree would claim what is not built.
        print(f"note: uncommitted changes under {', '.join(INPUT_PATHS)} are not part of the key",
              file=sys.stderr)
    return {path: _git("rev-parse", "--verify", "--quiet", f"HEAD:{path}") or "absent"
            for path in INPUT_PATHS}


def inputs_key(entry: dict, sources: dict) -> str:
    """sha256 of the expanded row (without gpu_runners: where a wheel is validated does not change
    it) and the source ids, as canonical JSON."""
    row = {k: v for k, v in entry.items() if k != "gpu_runners"}
    text = json.dumps({"row": row, "sources": sources}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def released_key(folder: Path, wheel: str) -> str | None:
    """The key in FOLDER/<wheel>.inputs (a release asset downloaded there), None without one."""
    path = Path(folder) / (wheel + INPUTS_SUFFIX)
    try:
        with open(path, "rb") as f:
            data = f.read(200)  # "sha256:" + 64 hex digits and a line break
    except OSError:
        return None
    return data.decode("ascii", "replace").strip()


def inputs(rows: list, version: str, released: Path | None = None) -> dict:
    """Row id -> {"key", "wheels", "reuse"}: reuse when every wheel of the row has a released
    <wheel>.inputs with the same key."""
    sources = source_ids()
    out = {}
    for entry in expand(rows, version):
        key = inputs_key(entry, sources)
        reuse = released is not None and all(released_key(released, w) == key for w in entry["wheels"])
        out[entry["id"]] = {"key": key, "wheels": entry["wheels"], "reuse": reuse}
    return out


def package_version() -> str:
    text = (ROOT / "sageattention" / "_version.py").read_text(encoding="utf-8")
    return re.search(r"""__version__\s*=\s*["']([^"']+)""", text).group(1)


def print_problems(problems: list, shown: str, file=sys.stdout) -> None:
    """The problems by line, at most MAX_SHOWN of them (a broken file can hold thousands)."""
    ordered = sorted(problems, key=lambda p: p.line)
    for p in ordered[:MAX_SHOWN]:
        print(p.render(shown), file=file)
    if len(ordered) > MAX_SHOWN:
        print(f"{shown}: {len(ordered) - MAX_SHOWN} more problem(s) not shown; fix these first",
              file=file)


def _parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("check", "expand", "inputs"):
        p = sub.add_parser(name)
        p.add_argument("--matrix", type=Path, default=MATRIX)
        p.add_argument("--rules", type=Path, default=RULES)
        if name == "expand":
            p.add_argument("--platform", choices=PLATFORMS)
            p.add_argument("--format", choices=("json", "github", "markdown"), required=True)
            p.add_argument("--validations", action="store_true",
                           help="one entry per (row, GPU runner, Python): the validation jobs")
        if name in ("expand", "inputs"):
            p.add_argument("--released", type=Path, metavar="DIR",
                           help="folder with a release's <wheel>.inputs assets (expand: adds each "
                                "row's inputs_key and reuse)")
        if name == "inputs":
            p.add_argument("--reused", action="store_true",
                           help="print the wheels the release reuses, one per line")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    shown = str(args.matrix)
    try:
        rules = load_rules(args.rules)
        matrix = load_matrix(args.matrix)
    except MatrixError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    rows, problems = check_rows(matrix, rules)
    if problems:
        # expand keeps stdout for its JSON: a workflow step must never read problems as rows.
        print_problems(problems, shown, sys.stdout if args.command == "check" else sys.stderr)
        print(f"{len(problems)} problem(s) in {shown}", file=sys.stderr)
        return 1
    if args.command == "check":
        print(f"{shown}: {len(rows)} rows, no problems")
        return 0
    version = package_version()
    if args.command == "inputs":
        return _print_inputs(rows, version, args)
    if args.platform:
        rows = [r for r in rows if r.platform == args.platform]
    if args.validations:
        if "gpu_runners" not in matrix:
            print(f"{shown}: declares no gpu_runners; a release validates every wheel on a GPU "
                  "before it publishes it: add gpu_runners (docs/releasing.md, Adding a GPU runner)",
                  file=sys.stderr)
            return 1
        if args.format == "markdown":
            print("--validations: use --format json or github", file=sys.stderr)
            return 2
        entries = validations(rows, version)
    else:
        entries = expand(rows, version)
        if args.released is not None:
            try:
                found = inputs(rows, version, args.released)
            except MatrixError as exc:
                print(exc.render(), file=sys.stderr)
                return 2
            for entry in entries:
                entry.update(inputs_key=found[entry["id"]]["key"], reuse=found[entry["id"]]["reuse"])
    if args.format == "json":
        print(json.dumps(entries, indent=1))
    elif args.format == "github":
        print(json.dumps({"include": entries}, separators=(",", ":")))
    else:
        print(markdown(entries, version), end="")
    return 0


def _print_inputs(rows: list, version: str, args) -> int:
    try:
        found = inputs(rows, version, args.released)
    except MatrixError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    if args.reused:
        for item in found.values():
            if item["reuse"]:
                print("\n".join(item["wheels"]))
    else:
        print(json.dumps(found, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
