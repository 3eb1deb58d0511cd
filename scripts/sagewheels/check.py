"""Inspect a built wheel: archive, name and tags, WHEEL, METADATA, RECORD, _build_info, binaries.

    python scripts/sagewheels/check.py WHEEL [--row ID | --host] [--archs "8.0"] [--matrix FILE]

Exit status 0 when the wheel is sound, 1 with one line per problem, 2 for a usage error (no such
file, a bad --archs value, an unknown row, an unreadable matrix). It never says ok to a wheel it
could not read, and never prints a traceback: each stage turns what it cannot read into a
problem line and the other stages still run where they can.

Stages, in order:
- archive: a regular file of at most MAX_WHEEL_BYTES that zipfile opens; at most MAX_MEMBERS
  members declaring at most MAX_TOTAL_BYTES uncompressed in all, none over MAX_RATIO:1 once it
  is over RATIO_FLOOR bytes (a zip bomb is a problem line, never a read); member names that are
  relative '/'-paths without '..', backslashes, drive letters or control characters, unique
  (also ignoring case), and no symlinks, devices or FIFOs (the unix mode in external_attr);
  stored or deflated members only, none encrypted;
- RECORD: UTF-8 CSV of path,hash,size rows; every file listed once with a sha256, sha384 or
  sha512 hash (the wheel spec's; md5, sha1, sha224 and others are refused) and a whole-number
  size, each matching the member; every member read in chunks, hash computed on the way, so
  CRC errors and truncated data are problem lines too;
- WHEEL: Wheel-Version 1.x, Root-Is-Purelib true when every platform tag is "any" (py3-none-any)
  and false otherwise, and Tag lines that are exactly the file name's tags;
- METADATA: valid core metadata (packaging.metadata), Name sageattention, the file name's
  Version, a Requires-Python, and no requirement that could make pip replace the user's torch
  or Triton;
- _build_info.py: at most MAX_BUILD_INFO_BYTES of plain NAME = literal assignments (parsed with
  ast, never executed) of the types setup.py writes (BUILD_INFO_TYPES);
- binaries, told by magic bytes as well as by name: none in a py3-none-any wheel, ELF only in
  Linux wheels and PE only in Windows ones, for the tag's CPU; each ELF/PE file must parse in
  full (scripts/sagewheels/binaries.py; at most MAX_BINARIES files). Each compiled unit is checked
  there: a cubin per arch (_C: the row's archs, or without a row the archs _build_info records;
  _C_fp8: those >= 8.9; _C_sm90: 9.0a where the row has 9.0), linked libraries / DLL
  imports, and no torch C++ symbol in stable-ABI units; abi3 wheels with a sound archive also go through `abi3audit --strict`.
- row: with --row / --host, the tags, local version, torch/CUDA and GPU archs recorded in the
  wheel must be the row's (--archs overrides the row's archs, as in `build_wheel.py --archs`).

Members are streamed; only WHEEL, METADATA, RECORD (at most MAX_TEXT_BYTES each), _build_info.py
and compiled files are held whole, after the size limits passed. At most MAX_SHOWN problem lines
are printed (the last line counts them all). External programs come from scripts/sagewheels/tools.py; a
missing optional one is a "note:" line.
"""
from __future__ import annotations

import argparse
import ast
import base64
import csv
import email.errors
import hashlib
import io
import json
import re
import stat
import struct
import subprocess
import sys
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from packaging.metadata import ExceptionGroup, InvalidMetadata, Metadata
from packaging.tags import parse_tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from . import binaries as binary_checks
from . import matrix, tools
from .binaries import one_line

FP8_OLDEST = (8, 9)  # the _C_fp8 unit is built only for these archs and newer (setup.py UNITS)
SM90A = "9.0a"  # the _C_sm90 unit's one target, built where the row has 9.0 (setup.py UNITS)
# Requirements that could make pip replace or upgrade the user's torch (or its Triton).
FORBIDDEN_REQUIRES = ("torch", "triton", "triton-windows")

# Resource limits: a hostile archive costs at most this much to inspect. Module constants so a
# maintainer with a real, bigger wheel (or a test) can raise or lower them.
GiB, MiB = 1 << 30, 1 << 20
MAX_WHEEL_BYTES = 2 * GiB  # GitHub release assets are below 2 GiB too
MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 2 * GiB  # declared uncompressed size of all members together
MAX_RATIO = 200  # uncompressed : compressed, checked for members over RATIO_FLOOR
RATIO_FLOOR = 4 * MiB  # small text files compress far better than binaries; ignore them
MAX_TEXT_BYTES = 4 * MiB  # WHEEL, METADATA, RECORD are read whole (RECORD: ~300 bytes a member)
MAX_BUILD_INFO_BYTES = 64 * 1024  # setup.py writes < 1 KB; ast.parse of megabytes costs gigabytes
MAX_BINARIES = 100  # compiled files parsed and run through readelf / cuobjdump (a wheel has ~3)
CHUNK = 1 * MiB
HEAD = 64 * 1024  # first bytes of each member kept for the magic-byte checks
MAX_SHOWN = 500  # problem lines printed; the count line says how many there were
MAX_LINE = 600  # characters of one printed line
TOOL_TIMEOUT_S = 600  # abi3audit on one wheel

HASHES = ("sha256", "sha384", "sha512")  # the wheel spec: sha256 or stronger
WEAK_HASHES = ("md5", "sha1", "sha224")
BUILD_INFO = "sageattention/_build_info.py"
SIGNATURES = ("RECORD.jws", "RECORD.p7s")  # listed in RECORD without a hash, like RECORD
EXTENSION = re.compile(r"\.(so|pyd)$")  # a Python extension module (linked-library checks)
LIBRARY = re.compile(r"\.(so|pyd|dll|dylib)$|\.so\.\d", re.IGNORECASE)  # any compiled library
NOTHING = object()  # a _build_info key that is not assigned
NOT_LITERAL = object()  # a _build_info key assigned something other than a literal

# Errors zipfile and its decompressors raise on damaged or crafted archives.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
              struct.error, zlib.error, OverflowError, NotImplementedError, RuntimeError,
              IndexError, KeyError, TypeError)


@dataclass
class Found:
    """What the stages found: problem lines and notes, in order."""
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def add(self, pair: tuple) -> None:
        problems, notes = pair
        self.problems += problems
        self.notes += [n for n in notes if n not in self.notes]


@dataclass
class Member:
    """One member as read from the archive: its size, the hash RECORD names, its first bytes,
    and all of it only when it is a compiled file."""
    name: str
    size: int
    algo: str
    digest: str
    head: bytes
    data: bytes | None


def clean_line(text: str) -> str:
    """One printable line: control characters escaped (member names come from the archive),
    long lines cut."""
    text = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda m: f"\\x{ord(m.group()):02x}"
                  if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + "..."


def show(name: str, limit: int = 160) -> str:
    return name if len(name) <= limit else name[:limit] + "..."


def size_text(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


# ---- archive --------------------------------------------------------------------------------

def filename_problems(wheel: Path, found: Found) -> tuple | None:
    """(name, version, tags) from the file name, or None (with a problem) when it is not one."""
    try:
        name, version, _build, tags = parse_wheel_filename(wheel.name)
    except (InvalidWheelFilename, InvalidVersion, ValueError) as exc:
        found.problems.append(f"not a valid wheel file name: {one_line(exc)}")
        return None
    if name != "sageattention":
        found.problems.append(f"distribution name is {name}, not sageattention")
    if version < Version("2.1.1"):
        found.problems.append(f"version {version} < 2.1.1 (diffusers requires >= 2.1.1)")
    return name, version, tags


def open_archive(wheel: Path, found: Found) -> zipfile.ZipFile | None:
    """The opened zip archive, or None (with a problem) when it is not a readable one."""
    try:
        st = wheel.stat()
    except OSError as exc:
        found.problems.append(f"cannot read the file: {exc.strerror or one_line(exc)}")
        return None
    if not stat.S_ISREG(st.st_mode):
        found.problems.append("not a regular file")
        return None
    if st.st_size > MAX_WHEEL_BYTES:
        found.problems.append(f"the file is {size_text(st.st_size)}, over the limit of "
                              f"{size_text(MAX_WHEEL_BYTES)} (check_wheel.MAX_WHEEL_BYTES)")
        return None
    try:
        return zipfile.ZipFile(wheel)
    except ZIP_ERRORS as exc:
        found.problems.append(f"not a readable zip archive ({one_line(exc)}): the file is "
                              "truncated or not a wheel; build or download it again")
        return None


def name_problems(name: str) -> list:
    """What is wrong with one member name (as stored in the archive): installers join it to
    site-packages, so it must be a plain relative '/'-path."""
    why = []
    if "\\" in name:
        why.append("contains a backslash: wheel paths use '/' only")
    if name.startswith(("/", "\\")):
        why.append("is an absolute path: an installer would write outside site-packages")
    if re.match(r"[A-Za-z]:", name):
        why.append("starts with a drive letter: an installer would write outside site-packages")
    parts = re.split(r"[/\\]", name.removesuffix("/"))
    if ".." in parts:
        why.append("has a '..' component: an installer would write outside site-packages")
    elif "." in parts or "" in parts[1:]:
        why.append("has an empty or '.' path component")
    if re.search(r"[\x00-\x1f\x7f]", name):
        why.append("has control characters in its name")
    return [f"member {show(name)} {reason}" for reason in why]


SPECIAL = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a character device",
           stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


def special_file_problem(info: zipfile.ZipInfo) -> str | None:
    """A member whose unix mode (high 16 bits of external_attr) is not a file or directory."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind in (0, stat.S_IFREG, stat.S_IFDIR):
        return None
    what = SPECIAL.get(kind, f"a special file (mode {oct(info.external_attr >> 16)})")
    return f"member {show(info.filename)} is {what}: a wheel holds regular files only"


def duplicate_problems(infos: list) -> list:
    problems = []
    counts = Counter(i.filename for i in infos)
    for name, n in counts.items():
        if n > 1:
            problems.append(f"member {show(name)} is in the archive {n} times: installers would "
                            "keep one copy, RECORD can describe only one")
    folded = defaultdict(set)
    for name in counts:
        if not name.endswith("/"):
            folded[name.casefold()].add(name)
    for names in folded.values():
        if len(names) > 1:
            listed = " and ".join(show(n) for n in sorted(names))
            problems.append(f"members {listed} differ only in case: one would overwrite the "
                            "other on Windows and macOS")
    return problems


def unreadable_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a member will not be read at all (its bytes are never decompressed), or None."""
    if info.flag_bits & 0x1:
        return "is encrypted: a wheel's members are plain"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return (f"uses compression method {info.compress_type}: a wheel's members are stored or "
                "deflated")
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return (f"declares {size_text(info.file_size)} from {info.compress_size} compressed bytes"
                f" (over {MAX_RATIO}:1): a zip bomb; not read")
    return None


def listing_problems(z: zipfile.ZipFile, found: Found) -> list | None:
    """The members that may be read, or None when the archive is over a resource limit (then
    nothing is read at all). Names, duplicates and special files are problems here."""
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        found.problems.append(f"the archive has {len(infos)} members, over the limit of "
                              f"{MAX_MEMBERS} (check_wheel.MAX_MEMBERS): not a wheel of this "
                              "project; nothing was read")
        return None
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        found.problems.append(f"the members declare {size_text(total)} uncompressed, over the "
                              f"limit of {size_text(MAX_TOTAL_BYTES)} (check_wheel."
                              "MAX_TOTAL_BYTES): a zip bomb or not a wheel; nothing was read")
        return None
    readable = []
    for info in infos:
        found.problems += name_problems(info.orig_filename)
        special = special_file_problem(info)
        if special:
            found.problems.append(special)
        why = unreadable_reason(info)
        if why:
            found.problems.append(f"member {show(info.filename)} {why}")
        else:
            readable.append(info)
    found.problems += duplicate_problems(infos)
    return readable


def dist_info_dir(infos: list, name: str, version: Version, found: Found) -> str | None:
    """The wheel's one .dist-info directory (named after the file name's distribution and
    version), or None when there is none."""
    dirs = sorted({i.filename.split("/", 1)[0] for i in infos
                   if "/" in i.filename and i.filename.split("/", 1)[0].endswith(".dist-info")})
    if not dirs:
        found.problems.append("no .dist-info directory: not a wheel")
        return None
    if len(dirs) > 1:
        found.problems.append(f"{len(dirs)} .dist-info directories ({', '.join(map(show, dirs))}):"
                              " installers would not know which one describes the wheel")

    def matches(d: str) -> bool:
        stem, _, ver = d[: -len(".dist-info")].rpartition("-")
        try:
            return canonicalize_name(stem) == name and Version(ver) == version
        except InvalidVersion:
            return False

    good = [d for d in dirs if matches(d)]
    if not good:
        found.problems.append(f"{show(dirs[0])} does not match the file name's {name} {version}")
    return (good or dirs)[0]


def read_text_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int,
                     found: Found) -> bytes | None:
    """The bytes of a small metadata file, or None (with a problem)."""
    if info.file_size > limit:
        found.problems.append(f"{show(info.filename)} declares {size_text(info.file_size)}, over "
                              f"the limit of {size_text(limit)} for this metadata file")
        return None
    try:
        with z.open(info) as f:
            return f.read(limit + 1)
    except ZIP_ERRORS as exc:
        found.problems.append(damaged(info.filename, exc))
        return None


def damaged(name: str, exc: BaseException) -> str:
    return (f"{show(name)}: cannot read it from the archive ({one_line(exc)}): the wheel is "
            "damaged (bad CRC, truncated or crafted data); build or download it again")


def read_texts(z, infos: list, readable: list, dist: str | None, found: Found) -> dict:
    """{WHEEL, METADATA, RECORD, BUILD_INFO: (member name, bytes or None)}; a missing file is
    a problem, one already reported unreadable is just None."""
    by_name = {i.filename: i for i in readable}
    present = {i.filename for i in infos}
    wanted = {BUILD_INFO: BUILD_INFO}
    if dist is not None:
        wanted.update({key: f"{dist}/{key}" for key in ("WHEEL", "METADATA", "RECORD")})
    texts = {}
    for key, name in wanted.items():
        if name in by_name:
            limit = MAX_BUILD_INFO_BYTES if key == BUILD_INFO else MAX_TEXT_BYTES
            texts[key] = (name, read_text_member(z, by_name[name], limit, found))
        elif name not in present and key != BUILD_INFO:
            found.problems.append(f"no {name} in the wheel")
            texts[key] = (name, None)
        else:
            texts[key] = (name, None)
    return texts


def read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, algo: str) -> Member:
    """Stream one member: hash and size as it is read, the first bytes, and the whole member
    only when it is a compiled file. zipfile never yields more than the declared size (checked
    against the limits already) and checks the CRC at the end."""
    digest = hashlib.new(algo)
    size, head, parts = 0, b"", None
    with z.open(info) as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            if not size:
                head = chunk[:HEAD]
                if LIBRARY.search(info.filename) or binary_checks.binary_kind(head):
                    parts = []
            digest.update(chunk)
            size += len(chunk)
            if parts is not None:
                parts.append(chunk)
    text = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    data = b"".join(parts) if parts is not None else None
    return Member(info.filename, size, algo, text, head, data)


def read_members(z: zipfile.ZipFile, readable: list, record: dict, found: Found) -> dict:
    """{name: Member} for every readable file member; each one that fails to read is a problem."""
    members = {}
    for info in readable:
        if info.filename.endswith("/"):
            continue
        entry = record.get(info.filename)
        algo = entry.algo if entry is not None and entry.algo in HASHES else "sha256"
        try:
            members[info.filename] = read_member(z, info, algo)
        except ZIP_ERRORS as exc:
            found.problems.append(damaged(info.filename, exc))
    return members


# ---- RECORD ---------------------------------------------------------------------------------

@dataclass
class RecordEntry:
    line: int
    algo: str
    digest: str
    size: int | None


def not_utf8(what: str, data: bytes, exc: UnicodeDecodeError) -> str:
    return (f"{what} is not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}): the wheel "
            "spec requires UTF-8")


def record_rows(data: bytes, name: str, found: Found) -> list | None:
    """The CSV rows of RECORD, at most one per possible member (MAX_MEMBERS) and its own."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        found.problems.append(not_utf8(name, data, exc))
        return None
    rows = []
    try:
        for row in csv.reader(io.StringIO(text, newline="")):
            if len(rows) > MAX_MEMBERS:
                found.problems.append(f"{name} has more than {MAX_MEMBERS} rows, more than the "
                                      "archive may hold: the rest were not read")
                break
            rows.append(row)
    except csv.Error as exc:
        found.problems.append(f"{name} is not valid CSV ({one_line(exc)})")
        return None
    return rows


def record_entry(name: str, line: int, row: list, found: Found) -> RecordEntry:
    """One path,hash,size row checked for form: a hash the spec allows and a whole size."""
    path, digest, size = row
    algo, sep, value = digest.partition("=")
    if Path(path).name in SIGNATURES or path == name:
        return RecordEntry(line, "", "", None)  # listed without hash and size, by the spec
    if not digest:
        found.problems.append(f"{name} has no hash for {show(path)}: every file but RECORD needs "
                              "sha256 or stronger")
    elif not sep or algo not in HASHES:
        strength = "a weak" if algo.lower() in WEAK_HASHES else "an unknown"
        found.problems.append(f"{name} uses {strength} hash {show(algo, 20)!r} for {show(path)}: "
                              f"the wheel spec allows {', '.join(HASHES)} only")
    if not re.fullmatch(r"[0-9]{1,20}", size):
        found.problems.append(f"{name} gives size {show(size, 30)!r} for {show(path)}: not a whole "
                              "number of bytes")
    return RecordEntry(line, algo if sep else "", value,
                       int(size) if re.fullmatch(r"[0-9]{1,20}", size) else None)


def parse_record(data: bytes | None, name: str, found: Found) -> dict | None:
    """{path: RecordEntry}; rows of the wrong form are problems. None: no usable RECORD."""
    if data is None:
        return None
    rows = record_rows(data, name, found)
    if rows is None:
        return None
    entries = {}
    for line, row in enumerate(rows, 1):
        if not row:
            continue
        if len(row) != 3:
            found.problems.append(f"{name} line {line} has {len(row)} field(s): a row is "
                                  "path,hash,size")
            continue
        if row[0] in entries:
            found.problems.append(f"{name} lists {show(row[0])} twice (lines "
                                  f"{entries[row[0]].line} and {line})")
            continue
        entries[row[0]] = record_entry(name, line, row, found)
    return entries


def record_problems(entries: dict, members: dict, infos: list, name: str) -> list:
    """Every file is in RECORD and every RECORD row matches its member's hash and size."""
    problems = []
    files = {i.filename for i in infos if not i.filename.endswith("/")}
    for path, entry in entries.items():
        if path == name or Path(path).name in SIGNATURES:
            continue
        if path not in files:
            problems.append(f"RECORD lists {show(path)}, which is not in the wheel")
            continue
        member = members.get(path)
        if member is None:
            continue  # unreadable: already a problem
        if entry.algo in HASHES and entry.digest != member.digest:
            problems.append(f"RECORD hash mismatch for {show(path)}: the file was changed after "
                            "build")
        if entry.size is not None and entry.size != member.size:
            problems.append(f"RECORD size mismatch for {show(path)}: RECORD says {entry.size} "
                            f"bytes, the archive holds {member.size}")
    for path in sorted(files - set(entries)):
        problems.append(f"{show(path)} is in the wheel but not in RECORD")
    return problems


# ---- WHEEL ----------------------------------------------------------------------------------

def wheel_fields(data: bytes, name: str, found: Found):
    """The parsed 'Key: value' lines of WHEEL, or None (with a problem)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        found.problems.append(not_utf8(name, data, exc))
        return None
    fields = Parser().parsestr(text, headersonly=True)
    if not fields.keys():
        found.problems.append(f"{name} has no 'Key: value' lines: it does not parse")
        return None
    return fields


def single_field(fields, key: str, name: str, found: Found):
    values = fields.get_all(key) or []
    if not values:
        found.problems.append(f"{name} has no {key}")
        return None
    if len(values) > 1:
        found.problems.append(f"{name} has {len(values)} {key} lines")
    return str(values[0]).strip()


def wheel_version_problems(fields, name: str, found: Found) -> None:
    value = single_field(fields, "Wheel-Version", name, found)
    if value is None:
        return
    m = re.fullmatch(r"(\d{1,6})\.(\d{1,6})", value)
    if m is None:
        found.problems.append(f"{name} Wheel-Version {show(value, 40)!r} is not MAJOR.MINOR")
    elif int(m.group(1)) != 1:
        found.problems.append(f"{name} Wheel-Version {value}: major version {m.group(1)} is not "
                              "supported (pip and this check know 1.x)")


def purelib_problems(fields, name: str, tags, found: Found) -> None:
    value = single_field(fields, "Root-Is-Purelib", name, found)
    if value is None:
        return
    pure_tags = {t.platform for t in tags} == {"any"}
    if value.lower() not in ("true", "false"):
        found.problems.append(f"{name} Root-Is-Purelib {show(value, 40)!r} is neither true nor "
                              "false")
    elif value.lower() == "true" and not pure_tags:
        found.problems.append(f"{name} says Root-Is-Purelib: true, but the file name's platform "
                              f"is {', '.join(sorted({t.platform for t in tags}))}: a compiled "
                              "wheel installs into platlib (set it to false)")
    elif value.lower() == "false" and pure_tags:
        found.problems.append(f"{name} says Root-Is-Purelib: false, but the file name says "
                              f"{tag_text(tags)} (pure Python, any platform)")


def tag_text(tags) -> str:
    return ".".join(sorted(str(t) for t in tags))


def tag_line_problems(fields, name: str, tags, found: Found) -> None:
    listed = set()
    for value in fields.get_all("Tag") or []:
        try:
            listed |= set(parse_tag(str(value).strip()))
        except ValueError:
            found.problems.append(f"{name} Tag {show(str(value).strip(), 60)!r} is not "
                                  "python-abi-platform")
    if not listed:
        found.problems.append(f"{name} has no Tag lines (the file name says {tag_text(tags)})")
    elif listed != set(tags):
        found.problems.append(f"{name} Tag lines say {tag_text(listed)}, the file name says "
                              f"{tag_text(tags)}: installers use the file name, so one is wrong")


def wheel_file_problems(data: bytes | None, name: str, tags, found: Found) -> None:
    """Wheel-Version 1.x, Root-Is-Purelib agreeing with the platform, Tag lines = file name."""
    if data is None:
        return
    fields = wheel_fields(data, name, found)
    if fields is None:
        return
    wheel_version_problems(fields, name, found)
    purelib_problems(fields, name, tags, found)
    tag_line_problems(fields, name, tags, found)


# ---- METADATA -------------------------------------------------------------------------------

def metadata_problems(data: bytes | None, name: str, version: Version) -> list:
    """METADATA: valid core metadata, the name and version of the file name, Requires-Python,
    and no requirement that could replace torch."""
    if data is None:
        return []
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [not_utf8(name, data, exc)]
    try:
        meta = Metadata.from_email(data, validate=True)
    except ExceptionGroup as group:
        return [f"METADATA: {one_line(exc)}" for exc in group.exceptions]
    except (InvalidMetadata, ValueError, TypeError, email.errors.MessageError) as exc:
        return [f"METADATA: {one_line(exc)}"]
    problems = []
    if canonicalize_name(meta.name) != "sageattention":
        problems.append(f"METADATA Name is {meta.name}")
    if meta.version != version:
        problems.append(f"METADATA Version {meta.version} differs from the file name's "
                        f"{version}")
    if not meta.requires_python:
        problems.append("METADATA has no Requires-Python")
    for req in meta.requires_dist or []:
        if req.name.lower() in FORBIDDEN_REQUIRES and (req.marker is None
                                                       or "extra" not in str(req.marker)):
            problems.append(f"METADATA requires {req}: pip could replace the user's {req.name}; "
                            "drop it")
    return problems


# ---- _build_info.py -------------------------------------------------------------------------

# What setup.py writes (build_info_source): name -> (allowed types, how to say them).
BUILD_INFO_TYPES = {
    "VERSION": ((str,), "a str"),
    "GIT_SHA": ((str,), "a str"),
    "BUILT_AT": ((str,), "a str"),
    "TORCH_VERSION": ((str, type(None)), "a str (or None without a compiled extension)"),
    "TORCH_BUILT_WITH": ((str, type(None)), "a str or None"),
    "CUDA_VERSION": ((str, type(None)), "a str or None"),
    "CUDA_ARCHS": ((list, tuple), "a list or tuple of archs such as '8.0'"),
    "ABI_FLAVOUR": ((str,), "a str"),
    "COMPILED_EXTENSION": ((bool,), "a bool"),
    "OPTIONAL_PATHS": ((dict,), "a dict"),
}
REQUIRED_BUILD_INFO = ("TORCH_VERSION", "CUDA_VERSION", "CUDA_ARCHS", "ABI_FLAVOUR",
                       "COMPILED_EXTENSION", "OPTIONAL_PATHS")
BUILD_INFO_ERRORS = (SyntaxError, ValueError, TypeError, RecursionError, MemoryError,
                     OverflowError)


def not_literal(node: ast.AST) -> str:
    """What makes an expression more than a literal, in words."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            return "a call"
        if isinstance(sub, ast.JoinedStr):
            return "an f-string"
        if isinstance(sub, ast.Name):
            return f"the name {sub.id}"
    return f"an expression ({type(node).__name__})"


def parse_build_info(source: str) -> tuple:
    """({NAME: value} or None when it does not parse, problems) of a _build_info.py: plain
    NAME = literal assignments, read with ast and never executed. A name assigned something
    else maps to NOT_LITERAL (its problem is already in the list)."""
    where = BUILD_INFO
    try:
        tree = ast.parse(source, filename=where)
    except BUILD_INFO_ERRORS as exc:
        line = getattr(exc, "lineno", None)
        at = f" (line {line})" if line else ""
        why = exc.msg if isinstance(exc, SyntaxError) and exc.msg else exc
        return None, [f"{where} does not parse{at}: {one_line(why)}; rebuild the wheel"]
    info, lines, problems = {}, {}, []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            continue  # a docstring
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            problems.append(f"{where} line {node.lineno}: a statement ({type(node).__name__}), "
                            "not a NAME = literal assignment (setup.py writes only those)")
            continue
        key = node.targets[0].id
        try:
            value = ast.literal_eval(node.value)
        except BUILD_INFO_ERRORS:
            problems.append(f"{where} line {node.lineno}: {key} is {not_literal(node.value)}, not "
                            "a literal")
            value = NOT_LITERAL
        if key in info:
            problems.append(f"{where} assigns {key} twice (lines {lines[key]} and {node.lineno})")
        info[key], lines[key] = value, node.lineno
    return info, problems


def short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def build_info_type_problems(info: dict) -> list:
    """Known keys of the wrong type are problems and are dropped from `info`, so the later
    checks only ever see the types setup.py writes."""
    problems = []
    rejected = [k for k, v in info.items() if v is NOT_LITERAL]
    for key in rejected:
        del info[key]  # already a problem; the later checks must not see it
    for key, (types, words) in BUILD_INFO_TYPES.items():
        value = info.get(key, NOTHING)
        if value is NOTHING:
            if key in REQUIRED_BUILD_INFO and key not in rejected:
                problems.append(f"{BUILD_INFO} has no {key}")
            continue
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if ok and key == "CUDA_ARCHS":
            ok = all(binary_checks.is_arch(a) for a in value)
        if not ok:
            problems.append(f"{BUILD_INFO}: {key} is {short_repr(value)}, setup.py writes {words}")
            del info[key]
    problems += optional_path_problems(info)
    return problems


def optional_path_problems(info: dict) -> list:
    paths = info.get("OPTIONAL_PATHS")
    if paths is None:
        return []
    problems = []
    fp8 = paths.get("fp8_archs", ())
    if not (isinstance(fp8, (list, tuple)) and all(binary_checks.is_arch(a) for a in fp8)):
        problems.append(f"{BUILD_INFO}: OPTIONAL_PATHS['fp8_archs'] is {short_repr(fp8)}, setup.py "
                        "writes a tuple of archs")
        paths = {**paths, "fp8_archs": ()}
    sm90 = paths.get("sm90a_archs", ())
    if not (isinstance(sm90, (list, tuple)) and all(a == SM90A for a in sm90) and len(sm90) <= 1):
        problems.append(f"{BUILD_INFO}: OPTIONAL_PATHS['sm90a_archs'] is {short_repr(sm90)}, "
                        f"setup.py writes () or ({SM90A!r},)")
        paths = {**paths, "sm90a_archs": ()}
    if not isinstance(paths.get("fp8_pv_f16_accum", False), bool):
        problems.append(f"{BUILD_INFO}: OPTIONAL_PATHS['fp8_pv_f16_accum'] is not a bool")
    if not all(isinstance(k, str) for k in paths):
        problems.append(f"{BUILD_INFO}: OPTIONAL_PATHS has keys that are not str")
    info["OPTIONAL_PATHS"] = paths
    return problems


def build_info_problems(data: bytes | None, found: Found) -> dict | None:
    """The checked build record, or None when the wheel has none."""
    if data is None:
        return None
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        found.problems.append(not_utf8(BUILD_INFO, data, exc))
        return {}
    info, problems = parse_build_info(source)
    found.problems += problems
    if info is None:
        return {}
    found.problems += build_info_type_problems(info)
    return info


# ---- binaries -------------------------------------------------------------------------------

def platform_arch(platforms: set) -> str | None:
    """The one CPU the platform tags name ("x86_64", "aarch64", "x86"), or None."""
    archs = set()
    for plat in platforms:
        if plat.endswith(("x86_64", "amd64")):
            archs.add("x86_64")
        elif plat.endswith(("aarch64", "arm64")):
            archs.add("aarch64")
        elif plat.endswith(("i686", "win32")):
            archs.add("x86")
        else:
            return None
    return archs.pop() if len(archs) == 1 else None


def platform_fit_problems(members: dict, tags) -> list:
    """Compiled files, told by magic bytes or by name, must fit the platform tag."""
    plats = {t.platform for t in tags}
    shown = ", ".join(sorted(plats))
    linux = all(p.startswith(("linux", "manylinux", "musllinux")) for p in plats)
    windows = all(p.startswith("win") for p in plats)
    cpu = platform_arch(plats)
    problems = []
    for name, member in members.items():
        kind = binary_checks.binary_kind(member.head)
        if kind is None and not LIBRARY.search(name):
            continue
        if plats == {"any"}:
            what = f"a compiled {kind} file" if kind else "named like a compiled library"
            problems.append(f"{show(name)} is {what}, but the wheel is tagged {tag_text(tags)} "
                            "(pure Python): tag the wheel for its platform or drop the file")
        elif kind == "ELF" and not linux:
            problems.append(f"{show(name)} is an ELF (Linux) binary in a {shown} wheel: it cannot "
                            "load there")
        elif kind == "PE" and not windows:
            problems.append(f"{show(name)} is a PE (Windows) binary in a {shown} wheel: it cannot "
                            "load there")
        elif kind and cpu and binary_checks.machine(member.head) not in (None, cpu):
            problems.append(f"{show(name)} is built for {binary_checks.machine(member.head)}, the "
                            f"wheel is tagged {shown}")
    return problems


def binary_structure(members: dict, found: Found) -> set:
    """Check that every compiled file parses; the names of those that do not."""
    broken = set()
    for name, member in members.items():
        if member.data is None:
            continue
        problems, notes = binary_checks.structure_problems(show(name), member.data)
        found.add((problems, notes))
        if problems:
            broken.add(name)
    return broken


def abi3audit_problems(wheel: Path) -> tuple:
    """(problems, note) from `abi3audit --strict --report`, or ([], why not run)."""
    tool = tools.find("abi3audit")
    if tool is None:
        return [], "abi3audit not installed: abi3 symbols not audited"
    try:
        proc = subprocess.run([tool, "--strict", "--report", str(wheel)], capture_output=True,
                              text=True, errors="replace", check=False, timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"abi3audit could not run: {one_line(exc)}"], ""
    try:
        report = json.loads(proc.stdout)
        specs = report.get("specs", {})
    except (json.JSONDecodeError, AttributeError):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return [f"abi3audit failed: {one_line(lines[-1]) if lines else 'no output'}"], ""
    problems = []
    for spec in specs.values():
        for obj in spec.get("wheel", []):
            result = obj.get("result", {})
            if result.get("non_abi3_symbols"):
                problems.append(f"{obj.get('name')} uses non-abi3 symbols "
                                f"{', '.join(map(str, result['non_abi3_symbols'][:5]))} (abi3audit)")
            if not result.get("is_abi3_baseline_compatible", True):
                problems.append(f"{obj.get('name')} needs Python {result.get('computed')} but the "
                                f"wheel claims {result.get('baseline')} (abi3audit)")
    return problems, "abi3audit: " + ("ok" if not problems else "problems found")


def compiled_unit_problems(libs: dict, info: dict, want_archs: list | None,
                           broken=frozenset()) -> tuple:
    """(problems, notes): the compiled units agree with what the build recorded, each carries
    the GPU code of its archs, and stable-ABI units call no torch C++ symbol. `libs` maps the
    wheel's .so/.pyd paths to their bytes; those in `broken` did not parse (already reported).
    `want_archs` None: no row and no usable record of the archs, so GPU code is not compared."""
    problems, notes = [], []
    if not libs:
        return ["no compiled extension in the wheel"], notes
    if "COMPILED_EXTENSION" in info and not info["COMPILED_EXTENSION"]:
        problems.append("_build_info says no compiled extension, but the wheel has one")
    # Every compiled unit must be one the build recorded (a stray in-place build is not).
    for unit, key, what in (("_C_fp8", "fp8_archs", "FP8 archs"),
                            ("_C_sm90", "sm90a_archs", "sm_90a archs")):
        carried = any(Path(lib).name.startswith(unit + ".") for lib in libs)
        recorded = tuple(info.get("OPTIONAL_PATHS", {}).get(key, ()))
        if carried and not recorded:
            problems.append(f"the wheel carries {unit} but its build recorded no {what}: a stale "
                            "binary from another build was packaged")
        if recorded and not carried:
            problems.append(f"the build recorded {what} {' '.join(recorded)} but the wheel has "
                            f"no {unit}")
    for lib, data in libs.items():
        if not re.fullmatch(r"sageattention/_C\w*\.[^/]+", lib) or lib in broken:
            continue  # a vendored dependency, not one of our units; or one that did not parse
        want = want_archs
        if want is not None and Path(lib).name.startswith("_C_fp8."):
            want = [a for a in want_archs if binary_checks.arch_tuple(a) >= FP8_OLDEST]
        if want is not None and Path(lib).name.startswith("_C_sm90."):
            # Only where the row builds 9.0; a toolkit that cannot is refused by the matrix.
            want = [SM90A] if any(binary_checks.arch_tuple(a) == (9, 0) for a in want_archs) else []
        for found, more in (binary_checks.gpu_code_problems(lib, data, want)
                            if want is not None else ([], []),
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


# ---- the whole check ------------------------------------------------------------------------

@dataclass
class Contents:
    """What the archive stages read, for the binary and row stages."""
    opened: bool = False  # the zip archive opened and its listing was within the limits
    members: dict = field(default_factory=dict)
    info: dict | None = None
    sound: bool = False  # no problem with the archive, its names, RECORD or member data


def read_and_record(z: zipfile.ZipFile, readable: list, infos: list, texts: dict,
                    found: Found) -> dict:
    """Stream every readable member against RECORD: {name: Member}."""
    record_name, record_data = texts.get("RECORD", (None, None))
    record = parse_record(record_data, record_name, found)
    members = read_members(z, readable, record or {}, found)
    if record is not None:
        found.problems += record_problems(record, members, infos, record_name)
    return members


def metadata_stage(texts: dict, version: Version, tags, readable: list, found: Found) -> dict | None:
    """WHEEL, METADATA and _build_info.py; the checked build record (None: the wheel has none,
    {}: it has one that could not be read or parsed, already a problem)."""
    if "WHEEL" in texts:
        wheel_file_problems(texts["WHEEL"][1], texts["WHEEL"][0], tags, found)
    if "METADATA" in texts:
        found.problems += metadata_problems(texts["METADATA"][1], texts["METADATA"][0], version)
    info = build_info_problems(texts[BUILD_INFO][1], found)
    if info is None and BUILD_INFO in {i.filename for i in readable}:
        return {}
    return info


def read_archive(wheel: Path, name: str, version: Version, tags, found: Found) -> Contents:
    """The archive, RECORD and metadata stages; what they read, for the later stages."""
    contents = Contents()
    z = open_archive(wheel, found)
    if z is None:
        return contents
    with z:
        before = len(found.problems)
        readable = listing_problems(z, found)
        if readable is None:
            return contents
        contents.opened = True
        infos = z.infolist()
        texts = read_texts(z, infos, readable, dist_info_dir(infos, name, version, found), found)
        contents.members = read_and_record(z, readable, infos, texts, found)
        contents.sound = len(found.problems) == before
    contents.info = metadata_stage(texts, version, tags, readable, found)
    return contents


def usable_archs(archs: list | None, found: Found) -> list | None:
    if archs and not all(binary_checks.is_arch(a) for a in archs):
        found.problems.append(f"archs {' '.join(map(str, archs))} are not archs such as 8.0, 9.0a "
                              "or 12.0+PTX: not used")
        return None
    return archs


def parsed_members(members: dict, found: Found) -> dict:
    """The members whose bytes are held (compiled files), at most MAX_BINARIES of them: each
    one costs a parse and a readelf / cuobjdump run."""
    held = {n: m for n, m in members.items() if m.data is not None}
    if len(held) > MAX_BINARIES:
        found.problems.append(f"the wheel has {len(held)} compiled files, over the limit of "
                              f"{MAX_BINARIES} (check_wheel.MAX_BINARIES): only the first "
                              f"{MAX_BINARIES} were checked")
        held = dict(list(held.items())[:MAX_BINARIES])
    return held


def binary_problems(wheel: Path, tags, contents: Contents, row, archs, found: Found) -> None:
    found.problems += platform_fit_problems(contents.members, tags)
    members = parsed_members(contents.members, found)
    broken = binary_structure(members, found)
    libs = {n: m.data for n, m in members.items() if EXTENSION.search(n) and m.data is not None}
    vendored = frozenset(Path(n).name.lower() for n in contents.members
                         if n.lower().endswith(".dll"))
    for lib, data in libs.items():
        if lib not in broken:
            found.add(binary_checks.linked_library_problems(lib, data, vendored))
    if any(t.abi == "abi3" for t in tags):
        if contents.sound and not broken:
            problems, note = abi3audit_problems(wheel)
            found.add((problems, [note] if note else []))
        else:
            found.notes.append("abi3audit not run: the archive has problems")
    info = contents.info
    if info is None:
        found.problems.append(f"no {BUILD_INFO} in the wheel")
    else:
        # GPU code per unit: the row's archs (or the build's own record without a row).
        want = archs or (row.archs if row is not None else info.get("CUDA_ARCHS"))
        found.add(compiled_unit_problems(libs, info, None if want is None else list(want), broken))


def run_checks(wheel: Path, row: matrix.Row | None, archs: list | None, found: Found) -> None:
    parsed = filename_problems(wheel, found)
    if parsed is None:
        return
    name, version, tags = parsed
    archs = usable_archs(archs, found)
    contents = read_archive(wheel, name, version, tags, found)
    if contents.opened:  # else nothing was read: the binary stage would only repeat that
        binary_problems(wheel, tags, contents, row, archs, found)
    if row is not None:
        found.add(row_problems(version, tags, contents.info or {}, row, archs))


def check(wheel: Path, row: matrix.Row | None, archs: list | None) -> tuple:
    """(problems, notes) for the wheel, each one printable line."""
    found = Found()
    try:
        run_checks(Path(wheel), row, archs, found)
    except Exception as exc:  # noqa: BLE001 - last resort: the stages handle what they expect
        found.problems.append(f"internal error while checking: {type(exc).__name__}: "
                              f"{one_line(exc)} (a bug in scripts/sagewheels/check.py)")
    problems = list(dict.fromkeys(clean_line(p) for p in found.problems))
    return problems, [clean_line(n) for n in found.notes]


# ---- command line ---------------------------------------------------------------------------

def parse_archs(text: str | None, row) -> tuple:
    """(archs or None, error or None) of an --archs value such as "8.0 9.0a;12.0+PTX", checked
    by the matrix's own arch rules (against the row's toolkit when there is a row)."""
    if text is None:
        return None, None
    try:
        why = matrix.arch_problems(text, row.toolkit if row is not None else None,
                                   matrix.load_rules())
    except Exception as exc:  # noqa: BLE001 - a broken rules file is one line too
        return None, f"--archs {text!r}: cannot load the arch rules ({one_line(exc)})"
    if why:
        return None, f"--archs {text!r}: " + " | ".join(why)
    return matrix.split_archs(text), None


def load_row(args) -> tuple:
    """(row or None, error or None) for --host / --row."""
    if args.host:
        from . import host

        try:
            return host.host_row(matrix.load_rules(), host.nvcc_version()), None
        except SystemExit as exc:
            return None, f"--host: {exc.code}"
        except Exception as exc:  # noqa: BLE001 - torch, rules and toolkit lookups all may fail
            return None, f"--host: no row for this machine ({type(exc).__name__}: {one_line(exc)})"
    if not args.row:
        return None, None
    try:
        rows, _ = matrix.check_rows(matrix.load_yaml(args.matrix), matrix.load_rules())
    except Exception as exc:  # noqa: BLE001 - OSError, YAML errors, odd shapes: one line each
        if callable(getattr(exc, "render", None)):  # matrix.MatrixError: one line naming the file
            return None, f"cannot read the build matrix: {exc.render()}"
        return None, (f"{args.matrix}: cannot read the build matrix ({type(exc).__name__}: "
                      f"{one_line(exc)})")
    row = next((r for r in rows if r.id == args.row), None)
    if row is None:
        return None, f"no valid row {args.row!r} in {args.matrix}"
    return row, None


def report(name: str, problems: list, notes: list) -> None:
    for note in notes:
        print(f"note: {note}")
    for problem in problems[:MAX_SHOWN]:
        print(f"{name}: {problem}")
    if len(problems) > MAX_SHOWN:
        print(f"{name}: ... and {len(problems) - MAX_SHOWN} more problem(s) not shown")
    print(f"{name}: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'ok'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path)
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--row", help="a build_matrix.yaml row id")
    which.add_argument("--host", action="store_true", help="the row of this machine")
    ap.add_argument("--archs", help="the archs the wheel was built for, if not the row's")
    ap.add_argument("--matrix", type=Path, default=matrix.MATRIX)
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:  # argparse printed its usage line; callers in-process get a code
        return exc.code if isinstance(exc.code, int) else 2
    for stream in (sys.stdout, sys.stderr):  # names from the archive must never stop a print
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    row, archs = None, None
    why = None
    if not args.wheel.is_file():
        why = f"{args.wheel}: {'not a file' if args.wheel.exists() else 'no such file'}"
    if why is None:
        row, why = load_row(args)
    if why is None:
        archs, why = parse_archs(args.archs, row)
    if why is not None:
        print(clean_line(why), file=sys.stderr)
        return 2
    problems, notes = check(args.wheel, row, archs)
    report(clean_line(args.wheel.name), problems, notes)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
