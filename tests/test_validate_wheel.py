"""scripts/validate_wheel.py without a GPU: bad input is one line and exit status 2, the wheel is
installed into a folder of its own (torch untouched) and the child imports that copy, not the
checkout's. The GPU half (sagewheels/validate_gpu.py) runs on a GPU machine."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import build, validate

SCRIPT = ROOT / "scripts" / "validate_wheel.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def pure_wheel(tmp_path_factory):
    """A wheel of the checkout without the compiled extension (quick to build)."""
    src = tmp_path_factory.mktemp("src") / "repo"
    build.stage_sources(src)
    out = src.parent / "dist"
    env = dict(os.environ, SAGEATTENTION_SKIP_CUDA_BUILD="1")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(src)], env=env, check=True, timeout=600)
    return next(out.glob("sageattention-*.whl"))


@pytest.mark.parametrize("make, words", [
    (lambda tmp: tmp / "missing.whl", "no such file"),
    (lambda tmp: tmp / "notawheel.whl", "not a wheel file name"),
    (lambda tmp: tmp / "other-1.0-py3-none-any.whl", "not a sageattention wheel"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, make, words):
    path = make(tmp_path)
    if path.name != "missing.whl":
        path.write_bytes(b"PK")
    proc = _run(path)
    assert proc.returncode == 2, proc
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_row_and_row_mismatch(tmp_path, pure_wheel):
    proc = _run(pure_wheel, "--row", "no-such-row")
    assert proc.returncode == 2 and "no valid row 'no-such-row'" in proc.stderr, proc.stderr
    proc = _run(pure_wheel, "--row", "win-torch2.8.0-cu129")
    assert proc.returncode == 2, proc.stderr
    assert "pass the row it was built from" in proc.stderr, proc.stderr


def test_host_row_is_the_build_machines_and_excludes_row(pure_wheel):
    """--host is the row build_wheel.py --host builds here: the checkout's pure wheel carries no
    local version, so it is refused as built for another row; --host with --row is a usage error."""
    proc = _run(pure_wheel, "--host")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "pass the row it was built from" in proc.stderr or "--host:" in proc.stderr, proc.stderr
    proc = _run(pure_wheel, "--host", "--row", "win-torch2.8.0-cu129")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU refusal")
def test_without_a_gpu_it_refuses_in_one_line(pure_wheel):
    proc = _run(pure_wheel, "--no-bench")
    assert proc.returncode == 2
    assert "no CUDA GPU visible to torch" in proc.stderr and "Traceback" not in proc.stderr


def test_installs_into_its_own_folder_and_the_child_imports_that_copy(tmp_path, pure_wheel):
    torch_file = torch.__file__
    target = tmp_path / "site"
    report = validate.validate(pure_wheel, None, target, bench=False, require_gpu=False)
    assert (target / "sageattention" / "__init__.py").is_file()
    assert not (target / "torch").exists()  # --no-deps: pip brought nothing else
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["installed copy"]["ok"], checks
    assert str(target.resolve()) in report["package"]["file"]
    if not torch.cuda.is_available():
        assert not checks["CUDA GPU"]["ok"]
        assert validate.failures(report)  # never "ok" without having run on a GPU
    assert report["sha256"] and report["wheel"] == pure_wheel.name
    # The running torch is untouched.
    proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.__file__)"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == torch_file
    json.dumps(report)  # the report is JSON as it is
