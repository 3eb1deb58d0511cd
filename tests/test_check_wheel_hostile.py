"""scripts/check_wheel.py and scripts/fatbin.py against hostile input: every malformed wheel is
exit status 1 with a line naming the problem (2 for a usage error), never "ok", never a
traceback, in bounded time and output.

Each case starts from a correct minimal wheel of this project (WHEEL, METADATA, RECORD,
_build_info.py and a real compiled unit where nvcc exists) written with zipfile in tmp_path,
and breaks one thing. Most cases call check() in-process (fast); a few run the command line to
prove that nothing reaches the user as a traceback; property-based tests (hypothesis) throw
random bytes, mutations, names and metadata text at main() and fatbin."""
import base64
import contextlib
import hashlib
import io
import os
import stat
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import check as check_wheel
from sagewheels import fatbin, tools

VERSION = "2.2.0.post1+cu130torch2.9.0"
DIST = f"sageattention-{VERSION}.dist-info"
TAG = "cp312-cp312-linux_x86_64"
UNIT = "sageattention/_C.cpython-312-x86_64-linux-gnu.so"
BOUND_S = 10  # one check of one small wheel, on a loaded 2-core machine
# HOSTILE_EXAMPLES=2000 runs a deeper search; the default keeps the file well under 30 s.
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow])
NVCC = tools.find("nvcc")


def wheel_name(tag=TAG, version=VERSION):
    return f"sageattention-{version}-{tag}.whl"


class Blob(bytes):
    """Bytes that hypothesis reports by size: a failing example stays readable."""

    def __repr__(self):
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="session")
def unit(tmp_path_factory):
    """A real extension with an sm_80 cubin (nvcc), or without nvcc an ELF file of this machine
    (cases that need a clean unit skip then)."""
    if NVCC is None:
        return Blob(Path(sys.executable).resolve().read_bytes())
    tmp = tmp_path_factory.mktemp("unit")
    (tmp / "k.cu").write_text('__global__ void k(float* x) { x[0] = 1.f; }\n'
                              'extern "C" void go(float* x) { k<<<1, 1>>>(x); }\n')
    subprocess.run([NVCC, "-shared", "-cudart", "none", "-Xcompiler", "-fPIC",
                    "-gencode=arch=compute_80,code=sm_80", str(tmp / "k.cu"), "-o",
                    str(tmp / "k.so")], check=True, timeout=300)
    return Blob((tmp / "k.so").read_bytes())


def build_info(**change):
    fields = {"VERSION": repr(VERSION), "GIT_SHA": "'unknown'",
              "BUILT_AT": "'2026-01-01T00:00:00+00:00'", "TORCH_VERSION": "'2.9.0'",
              "CUDA_VERSION": "'13.0'", "CUDA_ARCHS": "('8.0',)", "TORCH_BUILT_WITH": "'2.9.0'",
              "ABI_FLAVOUR": "'cpython'", "COMPILED_EXTENSION": "True",
              "OPTIONAL_PATHS": "{'fp8_archs': (), 'fp8_pv_f16_accum': False}", **change}
    return "".join(f"{k} = {v}\n" for k, v in fields.items()).encode()


def wheel_text(tag=TAG, purelib="false"):
    return (f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n"
            .encode())


METADATA = (f"Metadata-Version: 2.4\nName: sageattention\nVersion: {VERSION}\n"
            "Requires-Python: >=3.9\nRequires-Dist: packaging\n").encode()


def base_files(unit, tag=TAG):
    return {"sageattention/__init__.py": b"__version__ = '2.2.0.post1'\n",
            UNIT: unit,
            "sageattention/_build_info.py": build_info(),
            f"{DIST}/METADATA": METADATA,
            f"{DIST}/WHEEL": wheel_text(tag)}


def record_row(name, data, algo="sha256"):
    digest = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
    return f"{name},{algo}={digest},{len(data)}\n"


def record_of(files):
    return ("".join(record_row(n, d) for n, d in files.items()) + f"{DIST}/RECORD,,\n").encode()


def write_wheel(path, files, record=None, infos=()):
    """`files` (name -> bytes) plus RECORD (computed unless given) and extra (ZipInfo, bytes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names: some cases want them
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)
            for info, data in infos:
                z.writestr(info, data)
            z.writestr(f"{DIST}/RECORD", record_of(files) if record is None else record)
    return path


def make(tmp_path, unit, tag=TAG, change=None, drop=(), record=None, infos=()):
    files = {k: v for k, v in base_files(unit, tag).items() if k not in drop}
    files.update(change or {})
    return write_wheel(tmp_path / wheel_name(tag), files, record, infos)


def problems_of(wheel, row=None, archs=None):
    start = time.monotonic()
    problems, _notes = check_wheel.check(wheel, row, archs)
    assert time.monotonic() - start < BOUND_S
    assert not [p for p in problems if "internal error" in p], problems
    return problems


def assert_line(problems, *parts):
    """Some problem line holds every one of `parts`."""
    assert any(all(p in line for p in parts) for line in problems), (parts, problems)


def cli(*args, timeout=120):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_wheel.py"), *map(str, args)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                          timeout=timeout)
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc


def run_main(*args):
    """main() in-process: (exit status, stdout + stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = check_wheel.main([str(a) for a in args])
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text and "internal error" not in text, text
    assert len(text) < 200_000
    return rc, text


# ---- the correct wheel ----------------------------------------------------------------------

@pytest.mark.skipif(NVCC is None, reason="needs nvcc for a unit with real GPU code")
def test_the_minimal_wheel_is_ok(tmp_path, unit):
    wheel = make(tmp_path, unit)
    assert problems_of(wheel) == []
    proc = cli(wheel)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(": ok"), proc.stdout


@pytest.mark.skipif(NVCC is None, reason="needs nvcc for a unit with real GPU code")
@pytest.mark.parametrize("algo", ["sha384", "sha512"])
def test_stronger_hashes_are_accepted(tmp_path, unit, algo):
    files = base_files(unit)
    record = "".join(record_row(n, d, algo) for n, d in files.items()) + f"{DIST}/RECORD,,\n"
    assert problems_of(write_wheel(tmp_path / wheel_name(), files, record.encode())) == []


# ---- member names and special files ---------------------------------------------------------

@pytest.mark.parametrize("name, words", [
    ("/etc/cron.d/evil", "is an absolute path"),
    ("sageattention/../../evil.py", "has a '..' component"),
    ("sageattention\\evil.py", "contains a backslash"),
    ("C:/Windows/evil.dll", "starts with a drive letter"),
    ("sageattention//evil.py", "has an empty or '.' path component"),
    ("sageattention/ev\nil.py", "has control characters"),
])
def test_hostile_member_names(tmp_path, unit, name, words):
    problems = problems_of(make(tmp_path, unit, change={name: b"x = 1\n"}))
    assert_line(problems, "member", words)
    assert all("\n" not in p for p in problems)


def test_nul_in_a_member_name(tmp_path, unit):
    wheel = make(tmp_path, unit, change={"sageattention/evil#.py": b""})
    wheel.write_bytes(wheel.read_bytes().replace(b"evil#.py", b"evil\0.py"))  # both headers
    assert_line(problems_of(wheel), "member sageattention/evil\\x00.py has control characters")


def test_duplicate_and_case_colliding_members(tmp_path, unit):
    dup = zipfile.ZipInfo("sageattention/__init__.py")
    problems = problems_of(make(tmp_path, unit, infos=[(dup, b"evil = 1\n")],
                                change={"sageattention/Core.py": b"", "sageattention/core.py": b""}))
    assert_line(problems, "member sageattention/__init__.py is in the archive 2 times")
    assert_line(problems, "sageattention/Core.py and sageattention/core.py differ only in case")


@pytest.mark.parametrize("mode, words", [
    (stat.S_IFLNK | 0o777, "is a symbolic link"),
    (stat.S_IFIFO | 0o644, "is a FIFO"),
    (stat.S_IFCHR | 0o644, "is a character device"),
    (stat.S_IFBLK | 0o644, "is a block device"),
    (stat.S_IFSOCK | 0o644, "is a socket"),
])
def test_special_files(tmp_path, unit, mode, words):
    info = zipfile.ZipInfo("sageattention/special")
    info.create_system = 3
    info.external_attr = mode << 16
    problems = problems_of(make(tmp_path, unit, infos=[(info, b"/etc/passwd")]))
    assert_line(problems, "member sageattention/special", words, "regular files only")


# ---- WHEEL ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    (None, f"no {DIST}/WHEEL in the wheel"),
    (b"\x00\x01\x02 not a header\n", "does not parse"),
    (b"Wheel-Version: 1.0\nTag: \xff\n", "WHEEL is not UTF-8"),
    (b"Root-Is-Purelib: false\nTag: " + TAG.encode() + b"\n", "WHEEL has no Wheel-Version"),
    (b"Wheel-Version: 2.0\nRoot-Is-Purelib: false\nTag: " + TAG.encode() + b"\n",
     "major version 2 is not supported"),
    (b"Wheel-Version: one\nRoot-Is-Purelib: false\nTag: " + TAG.encode() + b"\n",
     "Wheel-Version 'one' is not MAJOR.MINOR"),
    (wheel_text(purelib="true"), "Root-Is-Purelib: true, but the file name's platform is linux_x86_64"),
    (wheel_text(purelib="maybe"), "Root-Is-Purelib 'maybe' is neither true nor false"),
    (wheel_text(tag="cp39-abi3-linux_x86_64"),
     "Tag lines say cp39-abi3-linux_x86_64, the file name says cp312-cp312-linux_x86_64"),
    (b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\n", "WHEEL has no Tag lines"),
    (b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp312\n", "is not python-abi-platform"),
])
def test_bad_wheel_file(tmp_path, unit, text, words):
    name = f"{DIST}/WHEEL"
    wheel = make(tmp_path, unit, drop=[name] if text is None else (),
                 change={} if text is None else {name: text})
    assert_line(problems_of(wheel), words)


def test_purelib_false_in_a_pure_wheel(tmp_path, unit):
    tag = "py3-none-any"
    wheel = make(tmp_path, unit, tag=tag, drop=[UNIT], change={f"{DIST}/WHEEL": wheel_text(tag)})
    assert_line(problems_of(wheel), "Root-Is-Purelib: false, but the file name says py3-none-any")


# ---- binaries and the platform tag ----------------------------------------------------------

def tiny_pe(machine=0x8664):
    """The headers of a PE32+ file with no sections: pefile reads it, it imports nothing."""
    dos = bytearray(64)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 64)
    optional = bytearray(240)
    struct.pack_into("<H", optional, 0, 0x20B)
    for offset, value in ((32, 0x1000), (36, 0x200), (56, 0x1000), (60, 0x200), (108, 16)):
        struct.pack_into("<I", optional, offset, value)
    coff = struct.pack("<HHIIIHH", machine, 0, 0, 0, 0, len(optional), 0x2022)
    head = bytes(dos) + b"PE\0\0" + coff + bytes(optional)
    return head + bytes(0x200 - len(head))


def test_elf_in_a_windows_wheel(tmp_path, unit):
    tag = "cp312-cp312-win_amd64"
    wheel = make(tmp_path, unit, tag=tag, drop=[UNIT],
                 change={"sageattention/_C.pyd": unit, f"{DIST}/WHEEL": wheel_text(tag)})
    assert_line(problems_of(wheel), "sageattention/_C.pyd is an ELF (Linux) binary in a win_amd64 "
                                    "wheel")


def test_pe_in_a_linux_wheel_told_by_magic_not_name(tmp_path, unit):
    wheel = make(tmp_path, unit, change={"sageattention/data.bin": tiny_pe()})
    assert_line(problems_of(wheel), "sageattention/data.bin is a PE (Windows) binary in a "
                                    "linux_x86_64 wheel")


def test_binary_for_another_cpu(tmp_path, unit):
    tag = "cp312-cp312-win_amd64"
    wheel = make(tmp_path, unit, tag=tag, drop=[UNIT], change={
        "sageattention/_C.pyd": tiny_pe(machine=0xAA64), f"{DIST}/WHEEL": wheel_text(tag)})
    assert_line(problems_of(wheel), "sageattention/_C.pyd is built for aarch64")


@pytest.mark.parametrize("member, data, words", [
    ("sageattention/payload.bin", None, "is a compiled ELF file"),
    ("sageattention/helper.dll", tiny_pe(), "is a compiled PE file"),
    ("sageattention/_C.abi3.so", b"not really a library", "named like a compiled library"),
])
def test_compiled_files_in_a_pure_wheel(tmp_path, unit, member, data, words):
    tag = "py3-none-any"
    wheel = make(tmp_path, unit, tag=tag, drop=[UNIT], change={
        member: unit if data is None else data, f"{DIST}/WHEEL": wheel_text(tag, purelib="true")})
    assert_line(problems_of(wheel), member, words, "tagged py3-none-any (pure Python)")


@pytest.mark.parametrize("member, cut, words", [
    (UNIT, "half", "not a readable ELF file"),
    (UNIT, "garbage", "not a readable ELF file"),
    (UNIT, "text", "is neither an ELF nor a PE file"),
    ("sageattention/helper.dll", "pe-half", "not a readable PE file"),
    ("sageattention/helper.dll", "pe-garbage", "not a readable PE file"),
])
def test_truncated_or_garbage_binaries(tmp_path, unit, member, cut, words):
    data = {"half": unit[: len(unit) // 2], "garbage": b"\x7fELF" + os.urandom(300),
            "text": b"#!/bin/sh\necho not a library\n", "pe-half": tiny_pe()[:200],
            "pe-garbage": tiny_pe()[:64 + 4] + os.urandom(16)}[cut]
    tag = "cp312-cp312-win_amd64" if cut.startswith("pe") else TAG
    change = {member: data, f"{DIST}/WHEEL": wheel_text(tag)}
    problems = problems_of(make(tmp_path, unit, tag=tag, change=change))
    assert_line(problems, member, words)


# ---- RECORD ---------------------------------------------------------------------------------

def record_with(unit, edit):
    """RECORD of the base files with the line of sageattention/__init__.py replaced."""
    lines = record_of(base_files(unit)).decode().splitlines(keepends=True)
    return "".join(edit(line) if line.startswith("sageattention/__init__.py,") else line
                   for line in lines).encode()


INIT = base_files(b"")["sageattention/__init__.py"]


@pytest.mark.parametrize("edit, words", [
    (lambda line: "sageattention/__init__.py,sha256=abc\n", "line 1 has 2 field(s)"),
    (lambda line: line.rsplit(",", 1)[0] + ",12.5\n", "gives size '12.5' for sageattention/__init__.py"),
    (lambda line: line.rsplit(",", 1)[0] + ",\n", "gives size '' for sageattention/__init__.py"),
    (lambda line: record_row("sageattention/__init__.py", INIT, "md5"),
     "uses a weak hash 'md5' for sageattention/__init__.py"),
    (lambda line: record_row("sageattention/__init__.py", INIT, "sha1"), "uses a weak hash 'sha1'"),
    (lambda line: record_row("sageattention/__init__.py", INIT, "sha224"), "uses a weak hash 'sha224'"),
    (lambda line: record_row("sageattention/__init__.py", INIT, "blake2b"),
     "uses an unknown hash 'blake2b'"),
    (lambda line: "sageattention/__init__.py,,29\n", "has no hash for sageattention/__init__.py"),
    (lambda line: line + line, "lists sageattention/__init__.py twice (lines 1 and 2)"),
    (lambda line: line.replace("sha256=", "sha256=AAAA"),
     "RECORD hash mismatch for sageattention/__init__.py"),
    (lambda line: line.rsplit(",", 1)[0] + ",5\n", "RECORD size mismatch for sageattention/__init__.py"),
    (lambda line: line + "sageattention/gone.py,sha256=x,1\n",
     "RECORD lists sageattention/gone.py, which is not in the wheel"),
    (lambda line: "", "sageattention/__init__.py is in the wheel but not in RECORD"),
    (lambda line: line + "x," + "y" * 200_000 + ",1\n", "RECORD is not valid CSV (field larger than"),
])
def test_bad_record(tmp_path, unit, edit, words):
    problems = problems_of(make(tmp_path, unit, record=record_with(unit, edit)))
    assert_line(problems, words)


def test_record_missing_or_not_utf8(tmp_path, unit):
    files = base_files(unit)
    wheel = tmp_path / wheel_name()
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    assert_line(problems_of(wheel), f"no {DIST}/RECORD in the wheel")
    wheel = make(tmp_path, unit, record=record_of(files) + b"sageattention/\xff.py,sha256=x,1\n")
    assert_line(problems_of(wheel), "RECORD is not UTF-8 (byte 0xff")


# ---- METADATA -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    (METADATA.replace(VERSION.encode(), b"2.x"), "METADATA: '2.x' is invalid for 'version'"),
    (METADATA + b"Requires-Dist: pack aging >= [\n", "is invalid for 'requires-dist'"),
    (METADATA.replace(b"Name: sageattention", b"Name: sage\xffattention"), "METADATA is not UTF-8"),
    (METADATA.replace(b"Name: sageattention\n", b""), "METADATA: 'name' is a required field"),
    (METADATA.replace(f"Version: {VERSION}\n".encode(), b""), "'version' is a required field"),
    (METADATA.replace(VERSION.encode(), b"2.2.1"), "METADATA Version 2.2.1 differs"),
    (METADATA + b"Requires-Dist: torch>=2.0\n", "METADATA requires torch>=2.0"),
    (METADATA.replace(b"Requires-Python: >=3.9\n", b""), "METADATA has no Requires-Python"),
    (b"\x00garbage", "METADATA: None is not a valid metadata version"),
])
def test_bad_metadata(tmp_path, unit, text, words):
    assert_line(problems_of(make(tmp_path, unit, change={f"{DIST}/METADATA": text})), words)


# ---- _build_info.py -------------------------------------------------------------------------

@pytest.mark.parametrize("source, words", [
    (b"CUDA_ARCHS = ('8.0',\n", "does not parse"),
    (build_info(TORCH_VERSION="__import__('os').system('true')"), "TORCH_VERSION is a call"),
    (build_info(TORCH_VERSION="f'{1}'"), "TORCH_VERSION is an f-string"),
    (build_info(CUDA_VERSION="cuda"), "CUDA_VERSION is the name cuda"),
    (build_info() + b"import os\n", "a statement (Import), not a NAME = literal assignment"),
    (build_info(COMPILED_EXTENSION="'yes'"), "COMPILED_EXTENSION is 'yes', setup.py writes a bool"),
    (build_info(COMPILED_EXTENSION="1"), "COMPILED_EXTENSION is 1, setup.py writes a bool"),
    (build_info(CUDA_ARCHS="'8.0'"), "CUDA_ARCHS is '8.0', setup.py writes a list or tuple"),
    (build_info(CUDA_ARCHS="(8.0,)"), "CUDA_ARCHS is (8.0,)"),
    (build_info(TORCH_VERSION="2.9"), "TORCH_VERSION is 2.9, setup.py writes a str"),
    (build_info(CUDA_VERSION="13"), "CUDA_VERSION is 13, setup.py writes a str or None"),
    (build_info(OPTIONAL_PATHS="[]"), "OPTIONAL_PATHS is [], setup.py writes a dict"),
    (build_info(OPTIONAL_PATHS="{'fp8_archs': 'all'}"), "OPTIONAL_PATHS['fp8_archs'] is 'all'"),
    (build_info(OPTIONAL_PATHS="{'sm90a_archs': ('9.0',)}"), "OPTIONAL_PATHS['sm90a_archs'] is"),
    (build_info(OPTIONAL_PATHS="{'sm90a_archs': '9.0a'}"), "OPTIONAL_PATHS['sm90a_archs'] is '9.0a'"),
    (build_info(ABI_FLAVOUR="None"), "ABI_FLAVOUR is None, setup.py writes a str"),
    (build_info() + b"ABI_FLAVOUR = 'stable'\n", "assigns ABI_FLAVOUR twice"),
    (build_info().replace(b"CUDA_ARCHS = ('8.0',)\n", b""), "_build_info.py has no CUDA_ARCHS"),
    (b"X = " + b"(" * 300 + b")" * 300 + b"\n", "does not parse"),
    (b"X = '\xff'\n", "_build_info.py is not UTF-8"),
])
def test_bad_build_info(tmp_path, unit, source, words):
    problems = problems_of(make(tmp_path, unit, change={"sageattention/_build_info.py": source}))
    assert_line(problems, words)


@pytest.mark.parametrize("paths, extra, words", [
    ("{'sm90a_archs': ()}", {"sageattention/_C_sm90.cpython-312-x86_64-linux-gnu.so": None},
     "carries _C_sm90 but its build recorded no sm_90a archs"),
    ("{'sm90a_archs': ('9.0a',)}", {}, "recorded sm_90a archs 9.0a but the wheel has no _C_sm90"),
])
def test_the_sm90a_unit_agrees_with_the_build(tmp_path, unit, paths, extra, words):
    change = {"sageattention/_build_info.py": build_info(OPTIONAL_PATHS=paths)}
    change.update({name: unit for name in extra})
    assert_line(problems_of(make(tmp_path, unit, change=change)), words)


def test_build_info_is_never_executed(tmp_path, unit):
    marker = tmp_path / "ran"
    source = build_info(TORCH_VERSION=f"open({str(marker)!r}, 'w').write('x') and '2.9.0'")
    problems_of(make(tmp_path, unit, change={"sageattention/_build_info.py": source}))
    assert not marker.exists()


# ---- the archive ----------------------------------------------------------------------------

def test_not_a_zip_truncated_and_bad_crc(tmp_path, unit):
    wheel = tmp_path / wheel_name()
    wheel.write_bytes(os.urandom(5000))
    assert_line(problems_of(wheel), "not a readable zip archive")
    data = make(tmp_path, unit).read_bytes()
    wheel.write_bytes(data[: len(data) // 2])
    assert_line(problems_of(wheel), "not a readable zip archive", "truncated")
    payload = b"PAYLOAD-" * 64
    files = {**base_files(unit), "sageattention/payload.txt": payload}
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as z:
        for name, blob in files.items():
            z.writestr(name, blob)
        z.writestr(f"{DIST}/RECORD", record_of(files))
    raw = bytearray(wheel.read_bytes())
    raw[raw.index(payload) + 10] ^= 0xFF
    wheel.write_bytes(bytes(raw))
    assert_line(problems_of(wheel), "sageattention/payload.txt: cannot read it from the archive",
                "Bad CRC-32")


def test_zip_bomb_by_compression_ratio(tmp_path, unit):
    # 50 MB of zeros deflate to about 50 KB (1000:1): refused from the header, never inflated.
    wheel = make(tmp_path, unit, change={"sageattention/zeros.bin": bytes(50_000_000)})
    start = time.monotonic()
    problems = problems_of(wheel)
    assert time.monotonic() - start < 2
    assert_line(problems, "member sageattention/zeros.bin declares 47.7 MiB", "a zip bomb")


def patch_declared_size(wheel, member, size):
    """Make the central directory claim `size` uncompressed bytes for `member`."""
    raw = bytearray(wheel.read_bytes())
    at = raw.index(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46: at + 46 + name_len] == member.encode():
            struct.pack_into("<I", raw, at + 24, size)
            wheel.write_bytes(bytes(raw))
            return
        at = raw.find(b"PK\x01\x02", at + 46)
    raise AssertionError(member)


def test_zip_bomb_by_declared_size_with_the_default_limit(tmp_path, unit):
    wheel = make(tmp_path, unit, change={"sageattention/big.bin": os.urandom(1000)})
    patch_declared_size(wheel, "sageattention/big.bin", 3 << 30)
    problems = problems_of(wheel)
    assert_line(problems, "the members declare 3.0 GiB uncompressed, over the limit of 2.0 GiB",
                "nothing was read")


def test_total_size_limit_is_a_module_constant(tmp_path, unit, monkeypatch):
    monkeypatch.setattr(check_wheel, "MAX_TOTAL_BYTES", 1 << 20)
    wheel = make(tmp_path, unit, change={"sageattention/blob.bin": os.urandom(2 << 20)})
    assert_line(problems_of(wheel), "over the limit of 1.0 MiB (check_wheel.MAX_TOTAL_BYTES)")


def test_too_many_members(tmp_path, unit):
    extra = {f"sageattention/m{i}.py": b"" for i in range(check_wheel.MAX_MEMBERS)}
    wheel = make(tmp_path, unit, change=extra)
    assert_line(problems_of(wheel), "members, over the limit of 10000")


def test_encrypted_and_odd_compression(tmp_path, unit):
    wheel = make(tmp_path, unit, change={"sageattention/secret.py": b"x = 1\n"})
    raw = bytearray(wheel.read_bytes())
    at = raw.index(b"PK\x01\x02")
    while raw[at + 46: at + 46 + 23] != b"sageattention/secret.py":
        at = raw.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<H", raw, at + 8, 1)  # general purpose flag: encrypted
    wheel.write_bytes(bytes(raw))
    assert_line(problems_of(wheel), "member sageattention/secret.py is encrypted")
    struct.pack_into("<H", raw, at + 8, 0)
    struct.pack_into("<H", raw, at + 10, 14)  # compression method: LZMA
    wheel.write_bytes(bytes(raw))
    assert_line(problems_of(wheel), "uses compression method 14")


# ---- the command line -----------------------------------------------------------------------

def test_cli_hostile_wheel_is_one_line_per_problem(tmp_path, unit):
    wheel = make(tmp_path, unit, change={"../evil.py": b"", f"{DIST}/WHEEL": b"\xff\xfe"},
                 record=b"short\n")
    proc = cli(wheel)
    assert proc.returncode == 1
    assert "member ../evil.py has a '..' component" in proc.stdout
    assert "WHEEL is not UTF-8" in proc.stdout and "RECORD line 1 has 1 field(s)" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith("problem(s)")


def test_cli_not_a_zip(tmp_path):
    wheel = tmp_path / wheel_name()
    wheel.write_bytes(b"PK\x03\x04 not really")
    proc = cli(wheel)
    assert proc.returncode == 1 and "not a readable zip archive" in proc.stdout, proc.stdout


@pytest.mark.parametrize("args, words", [
    (["--archs", "8.0 sm_90"], "--archs '8.0 sm_90': arch 'sm_90' must look like 8.6, 9.0a or 12.0+PTX"),
    (["--archs", ""], "--archs '': no GPU arch given"),
    (["--archs", "8.9a"], "arch 8.9a does not exist"),
    (["--row", "no-such-row"], "no valid row 'no-such-row'"),
    (["--row", "x", "--matrix", "MISSING"], "missing.yaml"),
    (["--row", "x", "--matrix", "DIR"], "cannot read the build matrix"),
    (["--row", "x", "--matrix", "BROKEN"], "broken.yaml"),
])
def test_cli_usage_errors_are_one_line_exit_2(tmp_path, unit, args, words):
    wheel = make(tmp_path, unit)
    (tmp_path / "broken.yaml").write_text("rows: [\n  - {id: x\n")
    subs = {"MISSING": tmp_path / "missing.yaml", "DIR": tmp_path, "BROKEN": tmp_path / "broken.yaml"}
    rc, text = run_main(wheel, *[subs.get(a, a) for a in args])
    if "--matrix" in args:
        assert "cannot read the build matrix" in text
    assert rc == 2 and words in text and len(text.strip().splitlines()) == 1, text


def test_cli_missing_wheel_and_directory(tmp_path):
    assert run_main(tmp_path / "missing.whl")[0] == 2
    rc, text = run_main(tmp_path)
    assert rc == 2 and "not a file" in text
    proc = cli(tmp_path / "missing.whl", "--archs", "bogus")
    assert proc.returncode == 2 and len(proc.stdout.strip().splitlines()) == 1, proc.stdout


def test_an_unexpected_error_is_one_line_not_a_traceback(tmp_path, unit, monkeypatch, capsys):
    # The last resort only: the stages above handle every error they expect themselves.
    def boom(*_args):
        raise RuntimeError("boom")

    monkeypatch.setattr(check_wheel, "metadata_problems", boom)
    assert check_wheel.main([str(make(tmp_path, unit))]) == 1
    out = capsys.readouterr().out
    assert "internal error while checking: RuntimeError: boom" in out and "Traceback" not in out


def test_output_is_capped(tmp_path, unit, monkeypatch, capsys):
    monkeypatch.setattr(check_wheel, "MAX_SHOWN", 5)
    wheel = make(tmp_path, unit, change={f"../evil{i}.py": b"" for i in range(20)})
    assert check_wheel.main([str(wheel)]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("note:")]
    assert lines[-2].endswith("... and 15 more problem(s) not shown"), lines
    assert lines[-1].endswith("FAILED, 20 problem(s)") and len(lines) == 7, lines


# ---- property-based -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def good_bytes(scratch, unit):
    return Blob(make(scratch, unit).read_bytes())


def fuzz_main(scratch, data):
    wheel = scratch / wheel_name()
    wheel.write_bytes(data)
    start = time.monotonic()
    rc, text = run_main(wheel)
    assert time.monotonic() - start < BOUND_S
    return rc, text


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_random_bytes(scratch, data):
    rc, text = fuzz_main(scratch, data)
    assert rc == 1 and "FAILED" in text


@FUZZ
@given(cuts=st.lists(st.tuples(st.integers(0, 1 << 20), st.binary(max_size=8)), min_size=1,
                     max_size=6), truncate=st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_fuzz_mutated_wheels(scratch, good_bytes, cuts, truncate):
    data = bytearray(good_bytes)
    for at, blob in cuts:
        at %= len(data)
        data[at:at + len(blob)] = blob
    if truncate is not None:
        data = data[: truncate % (len(data) + 1)]
    rc, _text = fuzz_main(scratch, bytes(data))
    assert rc in (0, 1)
    if bytes(data) != good_bytes and truncate is not None and len(data) < len(good_bytes):
        assert rc == 1  # a truncated archive is never ok


# zipfile cannot write a name that is empty up to its first NUL (test_nul_in_a_member_name
# patches one in), so none is generated.
HOSTILE = st.one_of(st.text(min_size=1, max_size=40).filter(lambda n: n.split("\0")[0]),
                    st.sampled_from(["/abs.py", "../up.py", "a\\b.py", "C:/x.py", "sageattention/",
                                     ".", "a/../b"]))


@FUZZ
@given(name=HOSTILE, data=st.binary(max_size=64))
def test_fuzz_member_names(scratch, unit, name, data):
    files = {**base_files(unit), name: data}
    wheel = write_wheel(scratch / wheel_name(), files)
    rc, text = run_main(wheel)
    assert rc in (0, 1)
    if ".." in name.split("/") or name.startswith("/") or "\\" in name:
        assert rc == 1, text


TEXT = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.lists(st.sampled_from(["Wheel-Version: 1.0", "Wheel-Version: 9.9", "Tag: " + TAG,
                                           "Tag: py3-none-any", "Root-Is-Purelib: true",
                                           "Name: sageattention", f"Version: {VERSION}",
                                           "Metadata-Version: 2.1", "Requires-Dist: torch",
                                           "X = 1", "CUDA_ARCHS = ('8.0',)", "COMPILED_EXTENSION = 1",
                                           "a,b", "a,sha256=x,1", ",,", "\"", "\xff"]),
                          max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8", "replace")))


@FUZZ
@given(which=st.sampled_from(["WHEEL", "METADATA", "RECORD", "BUILD_INFO"]), text=TEXT)
def test_fuzz_metadata_text(scratch, unit, which, text):
    name = "sageattention/_build_info.py" if which == "BUILD_INFO" else f"{DIST}/{which}"
    files = base_files(unit)
    record = None
    if which == "RECORD":
        record = text
    else:
        files[name] = text
    rc, _text = run_main(write_wheel(scratch / wheel_name(), files, record))
    assert rc in (0, 1)


@FUZZ
@given(cuts=st.lists(st.tuples(st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)),
                     max_size=8), keep=st.integers(0, 1 << 16))
def test_fuzz_damaged_binaries(scratch, unit, cuts, keep):
    data = bytearray(unit[: max(keep % (len(unit) + 1), 4)] if keep % 3 else unit)
    for at, blob in cuts:
        at %= len(data)
        data[at:at + len(blob)] = blob
    for tag, member in ((TAG, UNIT), ("cp312-cp312-win_amd64", "sageattention/_C.pyd")):
        blob = bytes(data) if member == UNIT else tiny_pe()[:64] + bytes(data)
        files = {**base_files(unit, tag), member: blob}
        files.pop(UNIT) if member != UNIT else None
        rc, _text = run_main(write_wheel(scratch / wheel_name(tag), files))
        assert rc in (0, 1)


SEEDS = st.one_of(
    st.binary(max_size=64),
    st.just(fatbin.PREFIX),
    st.builds(lambda size: struct.pack("<IHHQ", fatbin.MAGIC, 1, 16, size), st.integers(0, 1 << 12)),
    st.builds(lambda kind, header, payload, arch: struct.pack("<HHIQIIHHI", kind, 0, header, payload,
                                                              0, 0, 0, 0, arch),
              st.sampled_from([1, 2, 3]), st.sampled_from([40, 48, 64, 0]),
              st.integers(0, 256), st.sampled_from([0, 80, 90, 120])),
)


@settings(max_examples=EXAMPLES * 4, deadline=2000, database=None)
@given(parts=st.lists(SEEDS, max_size=40))
def test_fuzz_fatbin_scan(parts):
    data = b"".join(parts)
    codes = fatbin.embedded_code(data)
    assert all(c.kind in ("cubin", "ptx") and c.sm for c in codes)
    assert len(codes) <= len(data) // fatbin.ENTRY.size


@FUZZ
@given(parts=st.lists(SEEDS, max_size=20))
def test_fuzz_fatbin_cli(scratch, parts):
    path = scratch / "lib.so"
    path.write_bytes(b"".join(parts))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert fatbin.main([str(path)]) == 0
    assert len(out.getvalue().splitlines()) == 1
