"""scripts/check_wheel.py on real Windows PE files: a .pyd built with MinGW (Debian's
gcc-mingw-w64-x86-64) that imports what an abi3 torch extension may import, and one that
imports a versioned python3XY.dll and torch_python.dll, each packed into a win_amd64 wheel of
the seed row. Skipped without the MinGW cross compiler (.ci/run installs it where it can)."""
import base64
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GCC = shutil.which("x86_64-w64-mingw32-gcc")
DLLTOOL = shutil.which("x86_64-w64-mingw32-dlltool")

pytestmark = pytest.mark.skipif(GCC is None or DLLTOOL is None,
                                reason="needs gcc-mingw-w64-x86-64 (apt-get install gcc-mingw-w64-x86-64)")
pytest.importorskip("pefile")

ROW = "win-torch2.8.0-cu129"
WHEEL = "sageattention-2.2.0.post1+cu129torch2.8.0-cp39-abi3-win_amd64.whl"


def _import_lib(tmp: Path, dll: str, symbol: str) -> Path:
    stem = dll.split(".")[0]
    (tmp / f"{stem}.def").write_text(f"LIBRARY {dll}\nEXPORTS\n  {symbol}\n")
    lib = tmp / f"lib{stem}.a"
    subprocess.run([DLLTOOL, "-d", str(tmp / f"{stem}.def"), "-l", str(lib)], check=True)
    return lib


def _pyd(tmp: Path, imports: dict) -> bytes:
    """A DLL exporting PyInit__C that calls one function of each imported DLL."""
    decls = "".join(f"extern void {sym}(void);\n" for sym in imports.values())
    calls = "".join(f"  {sym}();\n" for sym in imports.values())
    src = tmp / "m.c"
    src.write_text(decls + "__declspec(dllexport) void *PyInit__C(void) {\n" + calls +
                   "  return 0;\n}\n")
    libs = [str(_import_lib(tmp, dll, sym)) for dll, sym in imports.items()]
    out = tmp / "_C.pyd"
    subprocess.run([GCC, "-shared", "-o", str(out), str(src), *libs], check=True)
    return out.read_bytes()


def _wheel(tmp: Path, pyd: bytes) -> Path:
    dist = "sageattention-2.2.0.post1+cu129torch2.8.0.dist-info"
    files = {
        "sageattention/__init__.py": b"",
        "sageattention/_C.pyd": pyd,
        "sageattention/_build_info.py": (
            b"VERSION = '2.2.0.post1+cu129torch2.8.0'\nTORCH_VERSION = '2.8.0'\n"
            b"CUDA_VERSION = '12.9'\nCUDA_ARCHS = ('8.0', '8.6', '8.9', '9.0', '12.0')\n"
            b"ABI_FLAVOUR = 'abi3'\nCOMPILED_EXTENSION = True\nOPTIONAL_PATHS = {}\n"),
        f"{dist}/METADATA": (b"Metadata-Version: 2.1\nName: sageattention\n"
                             b"Version: 2.2.0.post1+cu129torch2.8.0\nRequires-Python: >=3.9\n"
                             b"Requires-Dist: packaging\n"),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp39-abi3-win_amd64\n",
    }
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    record += f"{dist}/RECORD,,\n"
    path = tmp / WHEEL
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist}/RECORD", record)
    return path


def _check(wheel: Path):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "check_wheel.py"), str(wheel),
                           "--row", ROW], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)


def test_abi3_clean_pyd_passes(tmp_path):
    pyd = _pyd(tmp_path, {"python3.dll": "PyModule_Create2", "c10.dll": "c10_fn",
                          "torch_cuda.dll": "torch_fn", "cudart64_12.dll": "cudaLaunchKernel"})
    assert pyd[:2] == b"MZ"  # a real PE file
    proc = _check(_wheel(tmp_path, pyd))
    assert proc.returncode == 0, proc.stdout


def test_versioned_python_and_torch_python_imports_are_rejected(tmp_path):
    pyd = _pyd(tmp_path, {"python312.dll": "PyModule_Create2", "torch_python.dll": "THPVariable_Wrap",
                          "libfoo.dll": "foo"})
    proc = _check(_wheel(tmp_path, pyd))
    assert proc.returncode == 1
    assert "imports python312.dll: a versioned Python DLL breaks abi3" in proc.stdout
    assert "imports torch_python.dll: not abi3-clean" in proc.stdout
    assert "imports libfoo.dll, which neither torch nor Windows provides" in proc.stdout
