"""scripts/fatbin.py against nvcc's own output: the cubins and PTX it lists must be exactly the
-gencode targets a file was built with, in .so files, bare fat binaries, compressed ones and a
real PE DLL carrying the fat binary in a .nv_fatb section (as MSVC builds of .pyd files do).
The scan stays linear on adversarial files (overlapping and nested headers), and the command
line reports an unreadable path in one line with exit status 2."""
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from sagewheels import fatbin, tools

NVCC = tools.find("nvcc")  # where the wheel tools look: the toolkit, then PATH
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="needs nvcc")
KERNEL = """
__global__ void twice(float* x) { x[threadIdx.x] *= 2.f; }
extern "C" void launch(float* x) { twice<<<1, 32>>>(x); }
"""


def _nvcc(tmp_path, out_name, *flags):
    src = tmp_path / "k.cu"
    src.write_text(KERNEL)
    out = tmp_path / out_name
    subprocess.run([NVCC, *flags, str(src), "-o", str(out)], check=True, timeout=300,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return out.read_bytes()


@needs_nvcc
def test_shared_library_lists_exactly_its_gencode_targets(tmp_path):
    data = _nvcc(tmp_path, "k.so", "-shared", "-Xcompiler", "-fPIC",
                 "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
                 "-gencode=arch=compute_120,code=compute_120")
    assert fatbin.archs_of(data, "cubin") == ["8.0", "9.0"]
    assert fatbin.archs_of(data, "ptx") == ["12.0"]


@needs_nvcc
def test_compressed_fat_binary(tmp_path):
    data = _nvcc(tmp_path, "k.so", "-shared", "-Xcompiler", "-fPIC", "-Xfatbin", "-compress-all",
                 "-gencode=arch=compute_86,code=sm_86", "-gencode=arch=compute_89,code=sm_89")
    assert fatbin.archs_of(data, "cubin") == ["8.6", "8.9"]
    assert fatbin.archs_of(data, "ptx") == []


@needs_nvcc
def test_fat_binary_inside_a_pe_dll(tmp_path):
    gcc = shutil.which("x86_64-w64-mingw32-gcc")
    objcopy = shutil.which("x86_64-w64-mingw32-objcopy")
    if gcc is None or objcopy is None:
        pytest.skip("needs gcc-mingw-w64-x86-64 (installed by .ci/run)")
    blob = tmp_path / "k.fatbin"
    blob.write_bytes(_nvcc(tmp_path, "k.fatbin", "-fatbin", "-gencode=arch=compute_89,code=sm_89",
                           "-gencode=arch=compute_120,code=sm_120"))
    (tmp_path / "d.c").write_text("int f(void) { return 1; }\n")
    subprocess.run([gcc, "-shared", str(tmp_path / "d.c"), "-o", str(tmp_path / "d.dll")],
                   check=True)
    # objcopy warns that the new section lies below the image base; the file stays a valid PE.
    subprocess.run([objcopy, f"--add-section=.nv_fatb={blob}", str(tmp_path / "d.dll"),
                    str(tmp_path / "_C.pyd")], check=True, stderr=subprocess.DEVNULL)
    pefile = pytest.importorskip("pefile")
    pe = pefile.PE(str(tmp_path / "_C.pyd"))
    assert any(s.Name.rstrip(b"\0") == b".nv_fatb" for s in pe.sections)
    data = (tmp_path / "_C.pyd").read_bytes()
    assert fatbin.archs_of(data) == ["8.9", "12.0"]
    assert fatbin.archs_of((tmp_path / "d.dll").read_bytes()) == []


@needs_nvcc
def test_truncated_or_damaged_containers_are_ignored(tmp_path):
    data = _nvcc(tmp_path, "k.fatbin", "-fatbin", "-gencode=arch=compute_80,code=sm_80")
    assert fatbin.archs_of(data) == ["8.0"]
    assert fatbin.archs_of(data[: len(data) // 2]) == []  # the header's size runs past the end
    damaged = bytearray(data)
    struct.pack_into("<Q", damaged, 8, len(data) * 4)  # container size beyond the file
    assert fatbin.embedded_code(bytes(damaged)) == []


def test_random_bytes_with_the_magic_yield_nothing():
    rng = random.Random(0)
    magic = struct.pack("<I", fatbin.MAGIC)
    for _ in range(200):
        noise = bytearray(rng.randbytes(rng.randrange(0, 300)))
        at = rng.randrange(0, len(noise) + 1)
        noise[at:at] = magic + struct.pack("<HH", 1, 16)
        assert fatbin.embedded_code(bytes(noise)) == []  # entries never tile noise exactly
    assert fatbin.embedded_code(b"") == []


def test_cli_reports_missing_files_and_binaries_without_gpu_code(tmp_path, capsys):
    plain = tmp_path / "plain.so"
    plain.write_bytes(os.urandom(64))
    assert fatbin.main([str(plain)]) == 0
    assert "no GPU code found" in capsys.readouterr().out
    assert fatbin.main([str(tmp_path / "missing.so")]) == 2
    assert fatbin.main([]) == 2


@needs_nvcc
def test_check_accepts_ptx_and_arch_suffixes(tmp_path):
    from sagewheels import binaries as binary_checks

    data = _nvcc(tmp_path, "k.so", "-shared", "-Xcompiler", "-fPIC",
                 "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_120,code=sm_120",
                 "-gencode=arch=compute_120,code=compute_120")
    problems, _ = binary_checks.gpu_code_problems("_C.so", data, ["9.0a", "12.0+PTX"])
    assert not [p for p in problems if "cuobjdump" not in p], problems
    bare = _nvcc(tmp_path, "k2.so", "-shared", "-Xcompiler", "-fPIC",
                 "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_120,code=sm_120")
    problems, _ = binary_checks.gpu_code_problems("_C.so", bare, ["9.0", "12.0+PTX"])
    assert any("no PTX for 12.0" in p for p in problems), problems


def nested_containers(size):
    """Overlapping containers: each 56-byte block is a container header whose size runs to
    near the end plus an entry header that spans the next block, so every container walks all
    later entries and none tiles (quadratic for a scan that restarts after each failure)."""
    block = 56
    n = size // block * block
    out = bytearray(n)
    for b in range(0, n, block):
        struct.pack_into("<IHHQ", out, b, fatbin.MAGIC, 1, 16, (n - 20) - b - 16)
        struct.pack_into("<HHIQIIHHI", out, b + 16, 2, 0, 56, 0, 0, 0, 0, 8, 80)
    return bytes(out)


@pytest.mark.parametrize("data", [
    nested_containers(4 << 20),
    struct.pack("<IHHQ", fatbin.MAGIC, 1, 16, 1 << 40) * (4 << 16),
    struct.pack("<IHHQ", fatbin.MAGIC, 1, 16, 1000) * (4 << 16),
    struct.pack("<I", fatbin.MAGIC) * (1 << 20),
], ids=["nested", "sizes-past-the-end", "bad-first-entry", "bare-magic"])
def test_fatbin_scan_is_linear_on_adversarial_files(data):
    start = time.monotonic()
    assert fatbin.embedded_code(data) == []
    assert time.monotonic() - start < 2


def test_fatbin_many_valid_containers_are_all_found():
    entry = fatbin.ENTRY.pack(2, 0, fatbin.ENTRY.size, 0, 0, 0, 0, 8, 80)
    one = fatbin.CONTAINER.pack(fatbin.MAGIC, 1, 16, len(entry)) + entry
    start = time.monotonic()
    codes = fatbin.embedded_code(one * 50_000)
    assert time.monotonic() - start < 2 and len(codes) == 50_000 and codes[0].arch == "8.0"


def test_fatbin_cli_unreadable_paths(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, words in ((tmp_path, "is a directory"), (fifo, "not a regular file"),
                        (tmp_path / "missing.so", "no such file"), ("bad\0name", "cannot read")):
        assert fatbin.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
