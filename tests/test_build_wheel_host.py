"""End to end on this machine: build the host row's wheel and the stable-ABI row's wheel for
real (one arch each), check their names, tags and contents, install each into a fresh venv and
load the op library without a GPU.

Skipped without nvcc or a CUDA build of torch; SAGEATTENTION_SKIP_BUILD_TEST=1 skips it.
"""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch
from build_env import NEEDS_BUILD

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import tools
from sagewheels.build import stage_sources

pytestmark = NEEDS_BUILD


STABLE_ROW = "linux-torch2.10-stable-cu130"


def _build(tmp_path_factory, *which):
    src = tmp_path_factory.mktemp("wheel") / "repo"
    stage_sources(src)  # the checkout without build outputs (scripts/build_wheel.py)
    out = src / "wheelhouse"
    # A stale in-place build for other archs must not end up in the wheel (it is staged out).
    (src / "sageattention" / "_C_fp8.abi3.so").write_bytes(b"stale binary of another build")
    env = dict(os.environ, MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    proc = subprocess.run([sys.executable, "scripts/build_wheel.py", *which, "--archs", "8.0",
                           "--out", str(out)], cwd=src, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "built " in proc.stdout and "for sm 8.0" in proc.stdout
    assert "check: ok" in proc.stdout  # build_wheel.py checks what it built
    wheels = list(out.glob("sageattention-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return _build(tmp_path_factory, "--host")


@pytest.fixture(scope="module")
def stable_wheel(tmp_path_factory):
    # Built against this machine's torch (2.14.1) for every torch from 2.10 on.
    return _build(tmp_path_factory, "--row", STABLE_ROW)


def test_name_tags_and_contents(wheel):
    from packaging.utils import parse_wheel_filename

    cuda = "cu" + torch.version.cuda.replace(".", "")
    base = torch.__version__.split("+")[0]
    _name, version, _, tags = parse_wheel_filename(wheel.name)
    assert version.local == f"{cuda}torch{base}"
    assert {(t.interpreter, t.abi) for t in tags} <= {("cp39", "abi3"), ("cp310", "abi3")}
    assert all(t.platform.startswith("manylinux_2_") for t in tags)  # repaired by auditwheel
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert any(n.startswith("sageattention/_C.") and n.endswith(".abi3.so") for n in names)
        assert not any("_C_fp8" in n or "_C_sm90" in n for n in names)  # sm_80: no FP8, no sm_90a
        assert not any(".libs/" in n for n in names)  # torch / CUDA libraries never vendored
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(meta).decode()
        info = z.read("sageattention/_build_info.py").decode()
    assert f"Version: {version}" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not any("torch" in r or "triton" in r for r in requires), requires
    assert "COMPILED_EXTENSION = True" in info and "CUDA_ARCHS = ('8.0',)" in info


def test_stable_wheel_name_and_build_info(stable_wheel):
    from packaging.utils import parse_wheel_filename

    _name, version, _, tags = parse_wheel_filename(stable_wheel.name)
    assert version.local == "cu130torch2.10andhigher"
    assert {(t.interpreter, t.abi) for t in tags} == {("cp310", "abi3")}
    with zipfile.ZipFile(stable_wheel) as z:
        info = z.read("sageattention/_build_info.py").decode()
    assert "ABI_FLAVOUR = 'stable'" in info and "TORCH_VERSION = '2.10.0'" in info
    assert f"TORCH_BUILT_WITH = '{torch.__version__.split('+')[0]}'" in info


@pytest.mark.parametrize("which", ["wheel", "stable_wheel"])
def test_installs_into_a_fresh_venv_and_loads(which, request, tmp_path):
    wheel = request.getfixturevalue(which)
    venv = tmp_path / "fresh-venv"
    # torch comes from the environment running the tests (a .pth line appends its
    # site-packages after the fresh venv's own; --system-site-packages would expose the base
    # interpreter instead, which has no torch when the suite runs in .venv). The wheel itself
    # goes into the fresh venv only, so it is what imports.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    running = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    Path(site, "running-environment.pth").write_text("\n".join(running) + "\n")
    proc = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    assert proc.returncode == 0, proc.stdout
    code = """
import sageattention, torch
from sageattention import ops
assert 'fresh-venv' in sageattention.__file__, sageattention.__file__
assert ops.load() is not None, ops._state.reason
print(torch.ops.sageattention_C.attn_int8_fp16.default._schema)
print('version', sageattention.__version__)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=False)
    assert proc.returncode == 0, proc.stdout
    assert "sageattention_C::attn_int8_fp16" in proc.stdout


def _check_wheel(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "check_wheel.py"), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)


def test_check_wheel_accepts_the_host_wheel(wheel):
    proc = _check_wheel(str(wheel), "--host", "--archs", "8.0")
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.strip().endswith(": ok")
    assert "_C.abi3.so: cubins sm 8.0" in proc.stdout
    if tools.find("abi3audit"):
        assert "abi3audit: ok" in proc.stdout


def test_check_wheel_accepts_the_stable_wheel(stable_wheel):
    proc = _check_wheel(str(stable_wheel), "--row", STABLE_ROW, "--archs", "8.0")
    assert proc.returncode == 0, proc.stdout
    assert "_C.abi3.so: stable ABI, no torch C++ symbols" in proc.stdout


def test_check_wheel_catches_a_regular_build_in_a_stable_wheel(wheel, stable_wheel, tmp_path):
    # The ATen build's _C (tied to one torch) packaged as if it were the stable one.
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.startswith("sageattention/_C."))
        regular = z.read(member)
    swapped = _replace_member(stable_wheel, tmp_path / stable_wheel.name, member, regular)
    proc = _check_wheel(str(swapped))
    assert proc.returncode == 1
    assert "is built for the stable ABI but calls torch's C++ API" in proc.stdout, proc.stdout


def test_check_wheel_names_every_mismatch_with_another_row(wheel):
    proc = _check_wheel(str(wheel), "--row", "win-torch2.8.0-cu129")
    assert proc.returncode == 1
    for part in ("local version", "tags", "platform", "built against torch", "sm 8.0",
                 "has no cubin for sm 8.6 8.9 9.0 12.0 (it has 8.0)"):
        assert part in proc.stdout, part


def _replace_member(wheel, out, member, blob):
    """A copy of `wheel` with `member` replaced by `blob` and RECORD updated to match, so only
    the content checks (not the RECORD hash) can tell."""
    import base64
    import hashlib

    digest = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = [line for line in data.decode().splitlines()
                         if not line.startswith(member + ",")]
                data = ("\n".join(lines + [f"{member},sha256={digest},{len(blob)}"]) + "\n").encode()
            elif item.filename == member:
                continue
            dst.writestr(item, data)
        dst.writestr(member, blob)
    return out


def test_check_wheel_catches_a_unit_built_for_other_archs(wheel, tmp_path):
    # A _C compiled for sm_90 only, packaged into the wheel whose build recorded sm_80.
    src = tmp_path / "k.cu"
    src.write_text("__global__ void k(float* x) { x[0] = 1.f; }\n"
                   "extern \"C\" void go(float* x) { k<<<1, 1>>>(x); }\n")
    lib = tmp_path / "k.so"
    subprocess.run([tools.require("nvcc"), "-shared", "-Xcompiler", "-fPIC",
                    "-gencode=arch=compute_90,code=sm_90", str(src), "-o", str(lib)], check=True)
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.startswith("sageattention/_C."))
    swapped = _replace_member(wheel, tmp_path / wheel.name, member, lib.read_bytes())
    proc = _check_wheel(str(swapped))
    assert proc.returncode == 1
    assert "has no cubin for sm 8.0 (it has 9.0)" in proc.stdout, proc.stdout
    assert "cubins for sm 9.0, which the build did not record" in proc.stdout


def test_check_wheel_catches_a_file_changed_after_the_build(wheel, tmp_path):
    tampered = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "sageattention/core.py":
                data += b"\n# changed\n"
            dst.writestr(item, data)
    proc = _check_wheel(str(tampered))
    assert proc.returncode == 1 and "RECORD hash mismatch for sageattention/core.py" in proc.stdout


def test_check_wheel_catches_a_stale_binary(wheel, tmp_path):
    import base64
    import hashlib

    polluted = tmp_path / wheel.name
    blob = b"stale binary of another build"
    digest = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(polluted, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data += f"sageattention/_C_fp8.abi3.so,sha256={digest},{len(blob)}\n".encode()
            dst.writestr(item, data)
        dst.writestr("sageattention/_C_fp8.abi3.so", blob)
    proc = _check_wheel(str(polluted))
    assert proc.returncode == 1 and "stale binary from another build" in proc.stdout, proc.stdout
