"""scripts/matrix.py: the build matrix checker and expander (no GPU, no network)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import matrix

BROKEN = ROOT / "tests" / "data" / "broken_matrix.yaml"


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "matrix.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, check=False)


def test_shipped_matrix_is_clean():
    proc = run("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no problems" in proc.stdout


def _problems(path=BROKEN):
    rows, problems = matrix.check_rows(matrix.load_yaml(path), matrix.load_rules())
    return rows, {(p.line, p.row): p.message for p in problems}


def test_every_problem_is_reported_with_its_line():
    rows, found = _problems()
    expected = {
        (4, "defaults"): "unknown key 'colour'",
        (12, "win-seed"): "triton-windows<3.6 admits 3.5.x but torch 2.8.0 needs the 3.4 series",
        (13, "win-seed"): "duplicate id (first on line 6)",
        (18, "win-seed"): "toolkit 13.0.1 does not match cu129",
        (20, "win-seed"): "runner windows-2025 needs CUDA toolkit >=13.2",
        (21, "linux-old-abi3"): "abi abi3 needs torch >= 2.6",  # abi comes from defaults
        (34, "linux-bad-archs"): "triton-windows is the wrong package on linux",
        (35, "linux-bad-archs"): "arch 12.0 needs CUDA toolkit >= 12.8",
        (36, "linux-bad-archs"): "unknown key 'tolkit'; did you mean 'toolkit'?",
        (40, "linux-cpython"): "torch 2.8 has no wheels for cp38",
        (42, "linux-cpython"): "torch 2.8 is not published for cu121",
        (45, "win-missing"): "missing cuda, toolkit, triton",
    }
    for key, text in expected.items():
        assert key in found, (key, found)
        assert text in found[key], (key, found[key])
    assert set(found) == set(expected), set(found) - set(expected)
    assert rows == []  # no broken row survives


def test_fix_is_named_in_the_message():
    _, found = _problems()
    assert found[(12, "win-seed")].endswith("use triton-windows<3.5")
    assert found[(18, "win-seed")].endswith("use toolkit 12.9.x")
    assert found[(20, "win-seed")].endswith("use windows-2022")
    assert found[(34, "linux-bad-archs")].endswith("use triton==3.3.*")


def test_cli_format_and_exit_status():
    proc = run("check", "--matrix", str(BROKEN))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 12
    assert all(line.startswith(f"{BROKEN}:") and ": row " in line for line in lines)
    assert "12 problem(s)" in proc.stderr
    missing = run("check", "--matrix", str(ROOT / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_unknown_torch_asks_for_a_rule(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text('rows:\n  - {id: x, platform: linux, python: abi3, python_min: cp310, '
                    'torch: "2.12.0", cuda: cu130, toolkit: "13.0", triton: "triton==3.6.*", '
                    'abi: abi3}\n')
    _, found = _problems(path)
    assert "torch 2.12 has no entry in scripts/compat_rules.yaml" in found[(2, "x")]


@pytest.mark.parametrize("spec,ok", [("triton-windows<3.5", True), ("triton-windows>=3.4,<3.5", True),
                                     ("triton-windows", False), ("triton-windows<3.4", False),
                                     ("triton-windows==3.5.0", False), ("triton<3.5", False)])
def test_triton_requirement_for_torch_2_8_on_windows(tmp_path, spec, ok):
    path = tmp_path / "m.yaml"
    path.write_text('rows:\n  - {id: x, platform: windows, python: abi3, python_min: cp39, '
                    f'torch: "2.8.0", cuda: cu129, toolkit: "12.9.1", triton: "{spec}", abi: abi3}}\n')
    _rows, found = _problems(path)
    assert (not found) is ok, found


def test_expand_github_matrix_and_platform_filter():
    proc = run("expand", "--format", "github", "--platform", "windows")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1  # one line for $GITHUB_OUTPUT
    data = json.loads(proc.stdout)
    assert data["include"] and all(e["platform"] == "windows" for e in data["include"])
    seed = next(e for e in data["include"] if e["id"] == "win-torch2.8.0-cu129")
    assert seed["wheels"] == [
        f"sageattention-{matrix.package_version()}+cu129torch2.8.0-cp39-abi3-win_amd64.whl"]
    assert seed["archs"] == "8.0 8.6 8.9 9.0 12.0" and seed["runner"] == "windows-2022"
    stable = next(e for e in data["include"] if e["abi"] == "stable")
    assert "+cu130torch2.10andhigher-cp310-abi3-" in stable["wheels"][0]


def test_default_archs_follow_the_toolkit():
    rules = matrix.load_rules()
    assert matrix.default_archs("12.9.1", rules) == ["8.0", "8.6", "8.9", "9.0", "12.0"]
    assert matrix.default_archs("12.6.3", rules) == ["8.0", "8.6", "8.9", "9.0"]
    assert matrix.default_archs("12.3.2", rules) == ["8.0", "8.6", "9.0"]


def test_wheel_names_are_valid_and_sort_as_versions():
    from packaging.utils import parse_wheel_filename
    from packaging.version import Version

    entries = json.loads(run("expand", "--format", "json").stdout)
    for e in entries:
        for name in e["wheels"]:
            dist, version, _, _tags = parse_wheel_filename(name)
            assert dist == "sageattention" and version >= Version("2.1.1")
            assert version.local == e["local_version"]


def test_compatibility_doc_is_up_to_date():
    proc = run("expand", "--format", "markdown")
    assert proc.returncode == 0
    doc = (ROOT / "docs" / "compatibility.md").read_text(encoding="utf-8")
    assert doc == proc.stdout, ("docs/compatibility.md is stale: run "
                                "`python scripts/matrix.py expand --format markdown > docs/compatibility.md`")
