"""scripts/build_wheel.py: plans for every row (Windows ones too) and the toolchain refusal.
The real build of the host row runs in tests/test_build_wheel_host.py."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import build as build_wheel
from sagewheels import matrix, tools


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


@pytest.mark.skipif(tools.find("nvcc") is None, reason="needs nvcc")
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


# ---------------------------------------------------------------------------------------------
# main(): --archs, --out and --matrix refused in one line; the staged copy removed after a build

HOST_ROW = "linux-torch2.14.1-cu130"


def _main(capsys, *args):
    rc = build_wheel.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.mark.parametrize("archs, message", [
    ("foo", "--archs 'foo': arch 'foo' must look like 8.6, 9.0a or 12.0+PTX"),
    ("", "--archs '': no GPU arch given; list at least one, such as \"8.0\""),
    ("8.0;99.9", "--archs '8.0;99.9': arch 99.9 is not a GPU arch scripts/compat_rules.yaml knows"),
    ("8.9a", ("--archs '8.9a': arch 8.9a does not exist: only 9.0a, 10.0a, 10.3a, 12.0a, 12.1a have an "
             "arch-specific target; write 8.9")),
    ("7.0 8.0", "--archs '7.0 8.0': CUDA 13 cannot build arch 7.0; its oldest is 7.5"),
])
def test_bad_archs_are_one_line_naming_the_option(capsys, tmp_path, archs, message):
    rc, out, err = _main(capsys, "--row", HOST_ROW, "--dry-run", "--out", str(tmp_path), "--archs", archs)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith(message), err


def test_good_archs_reach_the_plan(capsys, tmp_path):
    rc, out, _ = _main(capsys, "--row", HOST_ROW, "--dry-run", "--out", str(tmp_path), "--archs",
                       "8.0;9.0a 12.0+PTX")
    assert rc == 0 and "TORCH_CUDA_ARCH_LIST=8.0 9.0a 12.0+PTX" in out


def test_out_inside_the_checkout_is_refused_but_wheelhouse(capsys, tmp_path):
    for out_dir in (ROOT / "scripts", ROOT / "sageattention" / "wheels", ROOT):
        rc, out, err = _main(capsys, "--row", HOST_ROW, "--dry-run", "--out", str(out_dir))
        assert rc == 2 and out == "" and err == (
            f"--out {out_dir}: inside the source tree, which the build copies into OUT/staged-source; "
            f"use {ROOT / 'wheelhouse'} (the default) or a folder outside {ROOT}\n")
    for out_dir in (ROOT / "wheelhouse", ROOT / "wheelhouse" / "ci", tmp_path):
        rc, out, _ = _main(capsys, "--row", HOST_ROW, "--dry-run", "--out", str(out_dir))
        assert rc == 0 and f"repaired wheel: {out_dir}/" in out
    a_file = tmp_path / "file"
    a_file.write_text("x")
    rc, _, err = _main(capsys, "--row", HOST_ROW, "--dry-run", "--out", str(a_file))
    assert rc == 2 and err == f"--out {a_file}: exists and is not a folder; name a folder for the wheels\n"


@pytest.mark.parametrize("content, message", [
    (None, "cannot read: No such file or directory; pass --matrix an existing, readable YAML file"),
    (b"rows: [\n", ":2: not valid YAML: expected the node content"),
    (b"rows: {id: a}\n", ":1: 'rows' must be a non-empty list of rows, not a mapping"),
    ("rows: []\n".encode("utf-16"), ":1: is UTF-16 text; save it as UTF-8"),
])
def test_a_broken_matrix_is_one_line(capsys, tmp_path, content, message):
    path = tmp_path / "m.yaml"
    if content is not None:
        path.write_bytes(content)
    rc, out, err = _main(capsys, "--row", HOST_ROW, "--dry-run", "--matrix", str(path))
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and message in err, err
    assert err.startswith(str(path))


def test_no_traceback_from_the_command_line(tmp_path):
    script = str(ROOT / "scripts" / "build_wheel.py")
    for args in (["--matrix", str(tmp_path)], ["--archs", "foo"], ["--out", str(ROOT / "csrc")]):
        proc = subprocess.run([sys.executable, script, "--row", HOST_ROW, "--dry-run", *args],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and proc.stdout == "", proc.stderr


def _fake_build(monkeypatch, tmp_path, fail: bool):
    """main() with the toolchain accepted and the build commands faked: (rc, staged-source
    seen while the commands ran, the staging folder)."""
    from sagewheels import check as check_wheel

    monkeypatch.setattr(build_wheel, "toolchain_mismatch", lambda *a: [])
    monkeypatch.setattr(build_wheel.tools, "find", lambda name: f"/opt/fake/{name}")
    monkeypatch.setattr(check_wheel, "check", lambda wheel, row, archs: ([], []))
    staged = tmp_path / "staged-source"
    seen = []

    def call(cmd, **kwargs):
        seen.append((staged / "setup.py").is_file())
        if fail:
            return 3
        if "repair" in cmd:  # what the repair step would leave in --out
            row = next(r for r in _rows() if r.id == HOST_ROW)
            (tmp_path / row.wheel_names(matrix.package_version())[0]).write_bytes(b"wheel")
        return 0

    monkeypatch.setattr(build_wheel.subprocess, "call", call)
    rc = build_wheel.main(["--row", HOST_ROW, "--out", str(tmp_path), "--archs", "8.0"])
    return rc, seen, staged


def test_a_failed_build_removes_its_staging_folder(monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch")
    rc, seen, staged = _fake_build(monkeypatch, tmp_path, fail=True)
    assert rc == 3 and seen == [True] and not staged.exists()
    assert "build failed (exit 3)" in capsys.readouterr().err


def test_a_finished_build_removes_its_staging_folder(monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch")
    rc, seen, staged = _fake_build(monkeypatch, tmp_path, fail=False)
    assert rc == 0 and seen == [True, True] and not staged.exists()
    assert "check: ok" in capsys.readouterr().out


def test_every_plan_pins_source_date_epoch_to_the_commit(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    when = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
                          capture_output=True, text=True, check=False).stdout.strip()
    if not when.isdigit():
        pytest.skip("not a git checkout")
    for row in _rows():
        assert build_wheel.make_plan(row, Path("/tmp/out")).env["SOURCE_DATE_EPOCH"] == when
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert build_wheel.make_plan(_rows()[0], Path("/tmp/out")).env["SOURCE_DATE_EPOCH"] == "1700000000"
