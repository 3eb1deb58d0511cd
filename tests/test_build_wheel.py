"""scripts/build_wheel.py: plans for every row (Windows ones too) and the toolchain refusal.
The real build of the host row runs in tests/test_build_wheel_host.py."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import build_wheel
import matrix


def _rows():
    rows, problems = matrix.check_rows(matrix.load_yaml(matrix.MATRIX), matrix.load_rules())
    assert not problems
    return rows


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r.id)
def test_dry_run_plan_of_every_row(row, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_wheel.py"), "--row",
                           row.id, "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"TORCH_CUDA_ARCH_LIST={' '.join(row.archs)}" in out
    assert f"SAGEATTENTION_LOCAL_VERSION={row.local_version}" in out
    assert f"SAGEATTENTION_ABI={row.abi}" in out
    assert ("SAGEATTENTION_TORCH_TARGET=" in out) == (row.abi == "stable")
    assert ("DISTUTILS_USE_SDK=1" in out) == (row.platform == "windows")
    assert "--no-build-isolation" in out  # built against the installed torch, never replacing it
    name = row.wheel_names(matrix.package_version())[0]
    assert name in out
    if row.platform == "windows":
        assert name.endswith("-win_amd64.whl")
        assert "delvewheel repair" in out and "--exclude torch_cuda.dll" in out
        assert f"unrepaired/{name}" in out.replace("\\", "/")
    else:
        assert name.endswith(f"-manylinux_{row.manylinux}_x86_64.whl")
        assert "auditwheel repair" in out and "--exclude libtorch*" in out
        assert f"--plat manylinux_{row.manylinux}_x86_64" in out


def test_parallelism_follows_cores_and_memory():
    gib = 1024 ** 3
    # Three sources per unit: 16 cores go to 3 jobs x 5 per-arch nvcc threads.
    assert build_wheel.parallelism(16, 128 * gib, n_archs=5, n_sources=3) == (3, 5)
    assert build_wheel.parallelism(16, 128 * gib, n_archs=1, n_sources=3) == (3, 1)
    assert build_wheel.parallelism(16, 24 * gib, n_archs=5, n_sources=3) == (3, 4)  # memory
    assert build_wheel.parallelism(2, 24 * gib, n_archs=5, n_sources=3) == (2, 1)
    assert build_wheel.parallelism(8, 2 * gib, n_archs=5, n_sources=3) == (1, 1)
    assert build_wheel.sources_per_unit() == 3  # csrc/: quant.cu, attn_fp16.cu, ops.cpp


def test_mismatched_toolchain_is_refused_with_both_sides():
    row = next(r for r in _rows() if r.id == "win-torch2.8.0-cu129")
    why = build_wheel.toolchain_mismatch(row, "linux", "2.14.1+cu130", "13.0", "13.0")
    text = "\n".join(why)
    for part in ("row is for windows, this machine runs linux", "needs torch 2.8.0, installed is 2.14.1",
                 "needs a cu129 torch, installed is cu130", "needs CUDA toolkit 12.9, nvcc is 13.0"):
        assert part in text, part
    host = next(r for r in _rows() if r.id == "linux-torch2.14.1-cu130")
    assert build_wheel.toolchain_mismatch(host, "linux", "2.14.1+cu130", "13.0", "13.0") == []
    assert build_wheel.toolchain_mismatch(host, "linux", "2.14.1+cu130", "13.0", None)


def test_unknown_row_and_broken_matrix_are_errors(tmp_path):
    script = str(ROOT / "scripts" / "build_wheel.py")
    proc = subprocess.run([sys.executable, script, "--row", "nope", "--dry-run"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "no row 'nope'" in proc.stderr
    proc = subprocess.run([sys.executable, script, "--row", "win-seed", "--dry-run", "--matrix",
                           str(ROOT / "tests" / "data" / "broken_matrix.yaml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "fix " in proc.stderr


def test_local_version_is_validated_by_setup(tmp_path):
    env = {"SAGEATTENTION_LOCAL_VERSION": "cu129torch2.8.0", "SAGEATTENTION_SKIP_CUDA_BUILD": "1"}
    proc = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env={**__import__("os").environ, **env}, check=False)
    assert proc.stdout.strip().splitlines()[-1].endswith("+cu129torch2.8.0"), proc.stdout
    env["SAGEATTENTION_LOCAL_VERSION"] = "CU 129"
    proc = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env={**__import__("os").environ, **env}, check=False)
    assert proc.returncode != 0 and "not a PEP 440 local version" in proc.stdout


def test_stable_rows_target_their_torch_and_build_against_any_later_one():
    row = next(r for r in _rows() if r.id == "linux-torch2.10-stable-cu130")
    plan = build_wheel.make_plan(row, Path("/tmp/out"))
    assert plan.env["SAGEATTENTION_ABI"] == "stable"
    assert plan.env["SAGEATTENTION_TORCH_TARGET"] == "2.10"
    assert plan.wheel.startswith("sageattention-") and "+cu130torch2.10andhigher-" in plan.wheel
    # Any torch >= the target may be built against; an older one is refused.
    assert build_wheel.toolchain_mismatch(row, "linux", "2.14.1+cu130", "13.0", "13.0") == []
    assert build_wheel.toolchain_mismatch(row, "linux", "2.10.0+cu130", "13.0", "13.0") == []
    why = build_wheel.toolchain_mismatch(row, "linux", "2.9.1+cu130", "13.0", "13.0")
    assert why == [("the row (stable ABI) needs torch 2.10.0 or newer to build against, "
                    "installed is 2.9.1+cu130")]


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="needs nvcc")
@pytest.mark.parametrize("env, message", [
    ({"SAGEATTENTION_ABI": "limited"}, "SAGEATTENTION_ABI='limited': use one of cpython, abi3, stable"),
    ({"SAGEATTENTION_ABI": "stable", "SAGEATTENTION_TORCH_TARGET": "2.9"},
     "SAGEATTENTION_TORCH_TARGET='2.9': give the oldest torch"),
    ({"SAGEATTENTION_ABI": "stable", "SAGEATTENTION_TORCH_TARGET": "3.0"},
     "SAGEATTENTION_TORCH_TARGET='3.0': give the oldest torch"),
])
def test_bad_abi_settings_stop_the_build_with_what_to_set(env, message):
    import torch

    if torch.version.cuda is None:
        pytest.skip("needs a CUDA build of torch")
    proc = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env={**__import__("os").environ, **env}, check=False)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout[-2000:]
