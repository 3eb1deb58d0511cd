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
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import tools

GCC = shutil.which("x86_64-w64-mingw32-gcc")
DLLTOOL = shutil.which("x86_64-w64-mingw32-dlltool")
OBJCOPY = shutil.which("x86_64-w64-mingw32-objcopy")
NVCC = tools.find("nvcc")  # where the wheel tools look: the toolkit, then PATH

pytestmark = [
    pytest.mark.skipif(GCC is None or DLLTOOL is None or OBJCOPY is None,
                       reason="needs gcc-mingw-w64-x86-64 (apt-get install gcc-mingw-w64-x86-64)"),
    pytest.mark.skipif(NVCC is None, reason="needs nvcc (the .pyd files carry real GPU code)"),
]
pytest.importorskip("pefile")

ROW = "win-torch2.8.0-cu129"
ROW_ARCHS = ("80", "86", "89", "90", "120")
_FATBIN = {}


def _fatbin(tmp: Path) -> Path:
    """A fat binary with a cubin for every arch of the seed row, built once by nvcc."""
    if "path" not in _FATBIN:
        (tmp / "k.cu").write_text("__global__ void k(float* x) { x[0] = 1.f; }\n")
        out = tmp / "k.fatbin"
        subprocess.run([NVCC, "-fatbin", *(f"-gencode=arch=compute_{a},code=sm_{a}"
                                           for a in ROW_ARCHS), str(tmp / "k.cu"), "-o", str(out)],
                       check=True, timeout=300)
        _FATBIN["path"] = out
    return _FATBIN["path"]
WHEEL = "sageattention-2.2.0.post1+cu129torch2.8.0-cp39-abi3-win_amd64.whl"


def _import_lib(tmp: Path, dll: str, symbol: str) -> Path:
    stem = dll.split(".")[0]
    (tmp / f"{stem}.def").write_text(f"LIBRARY {dll}\nEXPORTS\n  {symbol}\n")
    lib = tmp / f"lib{stem}.a"
    subprocess.run([DLLTOOL, "-d", str(tmp / f"{stem}.def"), "-l", str(lib)], check=True)
    return lib


def _pyd(tmp: Path, imports: dict) -> bytes:
    """A DLL exporting PyInit__C that calls one function of each imported DLL, with the GPU code
    in a .nv_fatb section as MSVC builds of CUDA extensions have it."""
    decls = "".join(f"extern void {sym}(void);\n" for sym in imports.values())
    calls = "".join(f"  {sym}();\n" for sym in imports.values())
    src = tmp / "m.c"
    src.write_text(decls + "__declspec(dllexport) void *PyInit__C(void) {\n" + calls +
                   "  return 0;\n}\n")
    libs = [str(_import_lib(tmp, dll, sym)) for dll, sym in imports.items()]
    dll = tmp / "_C.dll"
    subprocess.run([GCC, "-shared", "-o", str(dll), str(src), *libs], check=True)
    out = tmp / "_C.pyd"
    # objcopy warns that the new section lies below the image base; the file stays a valid PE.
    subprocess.run([OBJCOPY, f"--add-section=.nv_fatb={_fatbin(tmp)}", str(dll), str(out)],
                   check=True, stderr=subprocess.DEVNULL)
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


def _helper_dll(tmp: Path) -> Path:
    """A real third-party DLL the extension depends on, in its own folder (as on PATH)."""
    folder = tmp / "deps"
    folder.mkdir()
    (tmp / "h.c").write_text("__declspec(dllexport) int sage_helper(void) { return 7; }\n")
    subprocess.run([GCC, "-shared", "-o", str(folder / "sagehelper.dll"), str(tmp / "h.c")],
                   check=True)
    return folder


def _delvewheel_plan_command(tmp: Path, wheel: Path, out: Path, *extra) -> list:
    """The repair command of the seed row's plan (scripts/build_wheel.py), pointed at `wheel`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from sagewheels import build as build_wheel
    from sagewheels import matrix

    rows, _ = matrix.check_rows(matrix.load_yaml(matrix.MATRIX), matrix.load_rules())
    plan = build_wheel.make_plan(next(r for r in rows if r.id == ROW), tmp / "plan",
                                 python=sys.executable)
    cmd = plan.commands[-1]
    assert cmd[1:4] == ["-m", "delvewheel", "repair"] and cmd[4].endswith(WHEEL)
    return cmd[:4] + [str(wheel), "-w", str(out)] + cmd[7:] + list(extra)


@pytest.mark.skipif(pytest.importorskip("importlib").util.find_spec("delvewheel") is None,
                    reason="needs delvewheel (test extra)")
def test_delvewheel_repair_vendors_dependencies_but_never_torch_or_cuda(tmp_path):
    deps = _helper_dll(tmp_path)
    pyd = _pyd(tmp_path, {"python3.dll": "PyModule_Create2", "c10.dll": "c10_fn",
                          "torch_cpu.dll": "torch_cpu_fn", "torch_cuda.dll": "torch_fn",
                          "cudart64_12.dll": "cudaLaunchKernel", "sagehelper.dll": "sage_helper"})
    wheel = _wheel(tmp_path, pyd)
    out = tmp_path / "repaired"
    proc = subprocess.run(_delvewheel_plan_command(tmp_path, wheel, out, "--add-path", str(deps)),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout
    repaired = out / WHEEL
    with zipfile.ZipFile(repaired) as z:
        names = z.namelist()
    vendored = [n for n in names if n.lower().endswith(".dll")]
    assert len(vendored) == 1 and Path(vendored[0]).name.startswith("sagehelper"), vendored
    assert not any(Path(n).name.lower().startswith(("c10", "torch", "cudart", "python"))
                   for n in vendored)
    # The repaired wheel imports the vendored (name-mangled) DLL: check_wheel accepts it.
    proc = _check(repaired)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.skipif(pytest.importorskip("importlib").util.find_spec("delvewheel") is None,
                    reason="needs delvewheel (test extra)")
def test_delvewheel_repair_fails_on_a_dependency_it_cannot_find(tmp_path):
    pyd = _pyd(tmp_path, {"python3.dll": "PyModule_Create2", "c10.dll": "c10_fn",
                          "sagehelper.dll": "sage_helper"})
    wheel = _wheel(tmp_path, pyd)
    proc = subprocess.run(_delvewheel_plan_command(tmp_path, wheel, tmp_path / "repaired"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False, timeout=300)
    assert proc.returncode != 0
    assert "sagehelper.dll" in proc.stdout
    assert "c10.dll" not in proc.stdout.split("sagehelper.dll")[0][-200:]  # excluded, not missing
