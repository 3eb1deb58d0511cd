"""`python -m sageattention doctor`: one test per pitfall (docs/install.md, troubleshooting), on
simulated environments (probe dicts as sageattention/_installer.py returns them), the command
line here, and the import guard when torch itself is broken."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sageattention import doctor, ops

ROOT = Path(__file__).resolve().parents[1]
BUILT = ops.BuildInfo(version="2.2.0.post1+cu129torch2.8.0", torch_version="2.8.0", cuda_version="12.9",
                      cuda_archs=("8.0", "8.6", "8.9", "9.0", "12.0"), abi_flavour="abi3",
                      compiled_extension=True)
SEED_ENV = {"platform": "windows", "python_tag": "cp312", "python_version": "3.12.10",
            "implementation": "cpython", "executable": r"C:\ComfyUI\python_embeded\python.exe",
            "prefix": r"C:\ComfyUI\python_embeded", "torch": "2.8.0+cu129", "torch_cuda": "12.9",
            "gpu_archs": ["8.9"], "gpu_names": ["NVIDIA GeForce RTX 4080"],
            "triton": {"triton-windows": "3.4.0.post20"}, "sageattention": "2.2.0.post1+cu129torch2.8.0",
            "embedded": {"pth": "python312._pth", "include": True, "libs": True},
            "msvc_runtime": "14.44.35211.0"}


def env(**change):
    return {**SEED_ENV, **change}


def test_seed_environment_passes_every_check():
    checks = [doctor.python_check(SEED_ENV), doctor.torch_check(SEED_ENV),
              doctor.build_info_check(SEED_ENV, BUILT), doctor.triton_check(SEED_ENV),
              doctor.triton_packages_check(SEED_ENV), doctor.embedded_check(SEED_ENV),
              doctor.msvc_check(SEED_ENV), doctor.gpu_check(SEED_ENV, BUILT)]
    assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    assert all(set(c) == {"name", "ok", "detail", "fix"} for c in checks)


def test_wrong_triton_series_names_the_comfyui_trap():
    c = doctor.triton_check(env(triton={"triton-windows": "3.5.0.post21"}))
    assert not c["ok"] and "Triton only support CUDA 10.0 or higher" in c["detail"]
    assert "triton-windows<3.5" in c["fix"]
    older = doctor.triton_check(env(triton={"triton-windows": "3.3.1.post19"}))
    assert not older["ok"] and "Triton only support" not in older["detail"]


def test_missing_triton_on_windows():
    c = doctor.triton_check(env(triton={}))
    assert not c["ok"] and "triton-windows is not installed" in c["detail"]
    assert 'pip install "triton-windows<3.5"' in c["fix"]


def test_linux_triton_series_from_torch():
    c = doctor.triton_check(env(platform="linux", torch="2.9.1+cu130", triton={"triton": "3.5.1"}))
    assert c["ok"], c


def test_both_triton_packages():
    c = doctor.triton_packages_check(env(triton={"triton": "3.4.0", "triton-windows": "3.4.0.post20"}))
    assert not c["ok"] and "both" in c["detail"] and "pip uninstall -y triton" in c["fix"]
    c = doctor.triton_packages_check(env(triton={"triton": "3.4.0"}))
    assert not c["ok"] and "only triton-windows works" in c["detail"]


def test_embedded_python_without_include_and_libs():
    c = doctor.embedded_check(env(embedded={"pth": "python312._pth", "include": False, "libs": False}))
    assert not c["ok"] and "embedded Python" in c["detail"] and "include/ and no libs/" in c["detail"]
    assert "3.12.10" in c["fix"] and "python_embeded" in c["fix"]
    assert doctor.embedded_check(env(platform="linux", embedded={})).get("ok")


@pytest.mark.parametrize("version, ok", [("14.44.35211.0", True), ("14.42.34433.0", True),
                                         ("14.38.33135.0", False), (None, False)])
def test_msvc_runtime(version, ok):
    c = doctor.msvc_check(env(msvc_runtime=version))
    assert c["ok"] is ok and (ok or "vc_redist" in c["fix"])


@pytest.mark.parametrize("torch_v, words", [
    ("2.9.1+cu129", "this wheel is for torch 2.8.0"),
    ("2.8.0+cu128", "for cu129 builds of torch"),
    ("2.8.0+cpu", "not a CUDA build"),
])
def test_build_info_against_the_running_torch(torch_v, words):
    c = doctor.build_info_check(env(torch=torch_v), BUILT)
    assert not c["ok"] and words in c["detail"] and "install_sageattention.py" in c["fix"]


def test_stable_build_runs_on_newer_torch():
    stable = ops.BuildInfo(version="x", torch_version="2.10.0", cuda_version="13.0", abi_flavour="stable",
                           compiled_extension=True, cuda_archs=("8.9",))
    assert doctor.build_info_check(env(torch="2.11.0+cu130"), stable)["ok"]
    assert not doctor.build_info_check(env(torch="2.11.0+cu128"), stable)["ok"]


def test_gpu_not_covered_and_no_gpu():
    c = doctor.gpu_check(env(gpu_archs=["7.5"], gpu_names=["Tesla T4"]), BUILT)
    assert not c["ok"] and "sm 7.5" in c["detail"]
    c = doctor.gpu_check(env(gpu_archs=["12.0"]), BUILT)
    assert c["ok"], c
    c = doctor.gpu_check(env(gpu_archs=[], gpu_names=[]), BUILT)
    assert not c["ok"] and "no CUDA GPU" in c["detail"]
    c = doctor.gpu_check(env(cuda_error="RuntimeError: driver too old"), BUILT)
    assert not c["ok"] and "driver" in c["fix"]


def test_cpu_torch_and_broken_torch():
    c = doctor.torch_check(env(torch="2.8.0+cpu", torch_cuda=None))
    assert not c["ok"] and "CPU-only" in c["detail"]
    c = doctor.torch_check(env(torch=None, torch_error="OSError: [WinError 126] DLL load failed"))
    assert not c["ok"] and "DLL load failed" in c["detail"] and "never" in c["fix"]


def test_loader_failure_is_explained():
    c = doctor.loader_check(BUILT, "the extension failed to load (DLL load failed while importing _C)")
    assert not c["ok"] and "DLL load failed" in c["detail"] and "Triton kernels still run" in c["fix"]
    assert doctor.loader_check(BUILT, None)["ok"]


def test_load_error_reads_the_loaders_reason(monkeypatch):
    monkeypatch.setattr(ops, "build_info", lambda: BUILT)
    monkeypatch.setattr(ops.torch, "__version__", "2.8.0+cu129")
    monkeypatch.setattr(ops.torch.version, "cuda", "12.9")

    def broken(name):
        raise ImportError("undefined symbol: _ZN3c10")

    why = doctor.load_error(importer=broken)
    assert "failed to load" in why and "undefined symbol" in why
    assert os.environ.get("SAGEATTENTION_STRICT") is None or os.environ["SAGEATTENTION_STRICT"] != "1"


def test_better_published_wheel():
    seed = "sageattention-2.2.0.post1+cu129torch2.8.0-cp39-abi3-win_amd64.whl"
    entry = {"filename": seed, "version": "2.2.0.post1+cu129torch2.8.0", "platform": "windows",
             "python_tag": "cp39", "abi_flavour": "abi3", "torch": "2.8.0", "cuda": "cu129",
             "archs": ["8.9"], "triton": "triton-windows<3.5", "sha256": "0" * 64, "size": 1}
    manifest = {"schema_version": 1, "wheels": [entry]}
    same = doctor.better_wheel_check(SEED_ENV, manifest, None, "2.2.0.post1+cu129torch2.8.0")
    assert same["ok"] and seed in same["detail"]
    older = doctor.better_wheel_check(SEED_ENV, manifest, None, "2.1.1+cu129torch2.8.0")
    assert not older["ok"] and seed in older["detail"] and "install_sageattention.py" in older["fix"]
    newer = doctor.better_wheel_check(SEED_ENV, manifest, None, "2.3.0+cu129torch2.8.0")
    assert newer["ok"] and "newer" in newer["detail"]  # never advise a downgrade
    other = doctor.better_wheel_check(SEED_ENV, manifest, None, "2.3.0+cu128torch2.9.1")
    assert not other["ok"] and seed in other["detail"]  # another build variant: name the fit
    none = doctor.better_wheel_check(env(torch="2.9.1+cu130"), manifest, None, "2.2.0.post1")
    assert none["ok"] and "no published wheel fits" in none["detail"]
    unread = doctor.better_wheel_check(SEED_ENV, None, "cannot connect", None)
    assert unread["ok"] and "not read" in unread["detail"]


def test_source_and_ngc_torch_builds_are_cuda_builds():
    ngc = ops.BuildInfo(version="x", torch_version="2.8.0a0", cuda_version="12.9", abi_flavour="abi3",
                        compiled_extension=True, cuda_archs=("9.0",))
    c = doctor.build_info_check(env(torch="2.8.0a0+5228986c39.nv25.05", torch_cuda="12.9"), ngc)
    assert c["ok"], c
    assert ops.environment_mismatch(ngc, "2.8.0a0+5228986c39.nv25.05", "12.9") is None


def test_import_guard_message_names_both_sides_and_the_installer(monkeypatch):
    ops.reset()
    monkeypatch.delenv("SAGEATTENTION_STRICT", raising=False)
    monkeypatch.setattr(ops.torch, "__version__", "2.9.1+cu128")
    monkeypatch.setattr(ops.torch.version, "cuda", "12.8")
    with pytest.warns(RuntimeWarning) as rec:
        assert ops.load(BUILT, importer=lambda name: pytest.fail("must not import")) is None
    msg = str(rec[0].message)
    for part in ("torch 2.8.0", "cu129", "GPU archs 8.0 8.6 8.9 9.0 12.0", "torch 2.9.1+cu128",
                 "install_sageattention.py", "doctor", "Triton kernels instead"):
        assert part in msg, part
    ops.reset()


def _doctor(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "sageattention", "doctor", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env={**os.environ, **(env or {})}, check=False)


def test_command_line_json():
    proc = _doctor("--json", "--no-manifest")
    out = json.loads(proc.stdout)
    assert proc.returncode == (0 if out["ok"] else 1)
    names = [c["name"] for c in out["checks"]]
    for name in ("python", "torch", "build info", "extension", "triton", "triton packages",
                 "python headers and libs", "msvc runtime", "gpu", "published wheels"):
        assert name in names, name
    assert all(set(c) == {"name", "ok", "detail", "fix"} for c in out["checks"])
    if not out["checks"][names.index("gpu")]["ok"]:  # this CPU machine
        assert proc.returncode == 1
    proc = _doctor("--bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "sageattention", "cure"], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert proc.returncode == 2 and "unknown command 'cure'" in proc.stderr


def test_broken_torch_import_is_explained_and_doctor_still_runs(tmp_path):
    """torch that fails to import ("DLL load failed"): the API says what to do, doctor runs."""
    fake = tmp_path / "site"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text(
        "raise OSError('[WinError 126] DLL load failed while importing _C: the module was not found')\n")
    env = {"PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, "-c", "from sageattention import sageattn"], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, **env}, check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "ImportError" in last and "DLL load failed" in last and "doctor" in last, proc.stderr
    proc = _doctor("--json", "--no-manifest", env=env, cwd=tmp_path)
    out = json.loads(proc.stdout)
    torch_check = next(c for c in out["checks"] if c["name"] == "torch")
    assert proc.returncode == 1 and not torch_check["ok"] and "DLL load failed" in torch_check["detail"]


def test_a_named_manifest_that_cannot_be_read_fails_the_check(tmp_path):
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    proc = _doctor("--json", "--no-self-test", "--manifest", str(bad))
    out = json.loads(proc.stdout)
    check = next(c for c in out["checks"] if c["name"] == "published wheels")
    assert proc.returncode == 1 and not check["ok"] and "not a JSON manifest" in check["detail"]
