"""scripts/matrix.py: the build matrix checker and expander (no GPU, no network)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import matrix

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


# ---------------------------------------------------------------------------------------------
# Every validation gap, with the fix the message names. Rows are written as YAML text so that
# the test controls quoting (YAML reads unquoted 12.9 or 14.40 as numbers).

BASE_ROW = {"id": "r", "platform": "windows", "python": "abi3", "python_min": "cp39",
            "torch": '"2.8.0"', "cuda": "cu129", "toolkit": '"12.9.1"',
            "triton": '"triton-windows<3.5"', "abi": "abi3"}
OLD_TOOLKIT = {"torch": '"2.7.1"', "cuda": "cu126", "toolkit": '"12.6.3"',
               "triton": '"triton-windows<3.4"'}


def _row_file(tmp_path, fields):
    row = {**BASE_ROW, **fields}
    text = "rows:\n  - " + "\n    ".join(f"{k}: {v}" for k, v in row.items() if v is not None) + "\n"
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _messages(tmp_path, **fields):
    rows, problems = matrix.check_rows(matrix.load_matrix(_row_file(tmp_path, fields)),
                                       matrix.load_rules())
    return rows, [p.message for p in problems]


def test_the_base_row_is_valid(tmp_path):
    rows, messages = _messages(tmp_path)
    assert messages == [] and rows[0].archs == ["8.0", "8.6", "8.9", "9.0", "12.0"]


GAPS = [
    # (fields, what is wrong, what to write instead)
    ({"id": '"win seed"'}, "id 'win seed' must be 1 to 64 letters, digits",
     "write e.g. id: win-torch2.8.0-cu129"),
    ({"id": "a/b"}, "id 'a/b' must be 1 to 64 letters", "write e.g. id: win-torch2.8.0-cu129"),
    ({"id": "-x"}, "starting with a letter or digit", "write e.g. id: win-torch2.8.0-cu129"),
    ({"id": '""'}, "id is blank", 'write e.g. id: "win-torch2.8.0-cu129"'),
    ({"id": "a" * 65}, "id is 65 characters long; keep it within 64", 'id: "win-torch2.8.0-cu129"'),
    ({"toolkit": '"12.9"'}, "toolkit '12.9' must be a full X.Y.Z release", 'write e.g. toolkit: "12.9.0"'),
    ({"toolkit": '"12"'}, "toolkit '12' must be a full X.Y.Z release", 'toolkit: "12.0.0"'),
    ({"toolkit": "12.9"}, "toolkit must be text, but YAML reads the unquoted value as the number 12.9",
     'quote it: toolkit: "12.9.1"'),
    ({"archs": "[]"}, "no GPU arch given", 'list at least one, such as "8.0"'),
    ({"archs": '""'}, "archs is blank", "leave the key out"),
    ({"archs": '["99.9"]'}, "arch 99.9 is not a GPU arch scripts/compat_rules.yaml knows",
     "use one of 3.5, 3.7, 5.0"),
    ({"archs": '["3.5"]'}, "CUDA 12 cannot build arch 3.5; its oldest is 5.0", "drop it or use CUDA 11"),
    ({**OLD_TOOLKIT, "archs": '["12.0a"]'}, "arch 12.0a needs CUDA toolkit >= 12.8",
     "drop it or raise the toolkit to 12.8 or newer"),
    ({**OLD_TOOLKIT, "archs": '["12.0+PTX"]'}, "arch 12.0+PTX needs CUDA toolkit >= 12.8",
     "raise the toolkit to 12.8"),
    ({"archs": '["8.9a"]'}, "arch 8.9a does not exist: only 9.0a, 10.0a, 10.3a, 12.0a, 12.1a", "write 8.9"),
    ({"archs": '["8.6a+PTX"]'}, "arch 8.6a+PTX does not exist", "write 8.6+PTX"),
    ({"archs": "[9]"}, "arch '9' must look like 8.6, 9.0a or 12.0+PTX", "major.minor"),
    ({"archs": "[true]"}, "arch entries must be text like \"8.6\", not the boolean true",
     'write e.g. archs: ["8.0", "9.0a"]'),
    ({"archs": "[[8.0]]"}, "arch entries must be text like \"8.6\", not a list", 'archs: ["8.0", "9.0a"]'),
    ({"archs": "{a: 1}"}, "archs must be a list such as", "leave it out for the default list"),
    ({"archs": '["8.0", 8.0]'}, "arch 8.0 is listed twice", "list each arch once"),
    ({"runner": "windows-latest"}, "runner 'windows-latest' is not in scripts/compat_rules.yaml",
     "windows rows use windows-2022 or windows-2025"),
    ({"runner": "ubuntu-22.04"}, "runner 'ubuntu-22.04' is a linux runner", "windows rows use windows-2022"),
    ({"msvc_toolset": '"14.29"'}, "MSVC toolset '14.29' is not in scripts/compat_rules.yaml",
     "use one of 14.40, 14.41, 14.42, 14.43, 14.44"),
    ({"msvc_toolset": "14.40"},
     "msvc_toolset must be text, but YAML reads the unquoted value as the number 14.4",
     'quote it: msvc_toolset: "14.44"'),
    ({"abi": "cpython", "python": "[cp312]"}, "python_min only applies to abi3 and stable rows",
     "remove it, or set abi: abi3"),
    ({"triton": "\"triton-windows<3.5; sys_platform == 'win32'\""}, "carries an environment marker",
     "use triton-windows<3.5"),
    ({"triton": '"triton-windows @ https://example.org/t.whl"'}, "carries a URL", "use triton-windows<3.5"),
    ({"torch": "2.8"}, "torch must be text, but YAML reads the unquoted value as the number 2.8",
     'quote it: torch: "2.8.0"'),
    ({"cuda": "[cu129]"}, "cuda must be text, not a list", 'write e.g. cuda: "cu129"'),
    ({"platform": "{os: windows}"}, "platform must be text, not a mapping", 'write e.g. platform: "windows"'),
    ({"triton": "null"}, "triton has no value",
     'write e.g. triton: "triton-windows<3.5", or leave the key out'),
    ({"abi": "true"}, "abi must be text, not the boolean true", 'write e.g. abi: "abi3"'),
    ({"python": "{a: 1}"}, "python must be abi3 or a list of cpXY tags, not a mapping",
     "write python: abi3 or python: [cp311, cp312]"),
    ({"abi": "cpython", "python_min": None, "python": "[3.12]"},
     "python entries must be text like cp312, not the number 3.12", "write python: [cp311, cp312]"),
    ({"abi": "cpython", "python_min": None, "python": "[]"}, "python is an empty list", "write python: abi3"),
    ({"abi": "cpython", "python_min": None, "python": "[cp312, cp312]"}, "python lists cp312 twice",
     "list each tag once"),
    ({"python_min": "39"}, "python_min must be text, but YAML reads the unquoted value as the number 39",
     'quote it: python_min: "cp310"'),
    ({"manylinux": "2_28", "platform": "linux", "triton": '"triton==3.4.*"', "runner": "ubuntu-22.04"},
     "manylinux must be text, but YAML reads the unquoted value as the number 228",
     'quote it: manylinux: "2_35"'),
    ({"runner": '"windows\\n2022"'}, "runner holds a line break or control character",
     "write it on one line"),
]


@pytest.mark.parametrize("fields, wrong, fix", GAPS, ids=[g[1][:40] for g in GAPS])
def test_each_gap_names_what_to_write(tmp_path, fields, wrong, fix):
    rows, messages = _messages(tmp_path, **fields)
    found = [m for m in messages if wrong in m]
    assert found, messages
    assert fix in found[0], found[0]
    assert rows == []


def test_numbers_in_archs_are_read_as_their_arch(tmp_path):
    # `- 8.0` is the float 8.0 in YAML: accepted as "8.0" (every arch has a one-digit minor).
    rows, messages = _messages(tmp_path, archs="[8.0, 8.6, 10.0, 12.0]")
    assert messages == [] and rows[0].archs == ["8.0", "8.6", "10.0", "12.0"]
    rows, messages = _messages(tmp_path, archs='"8.0;9.0a 12.0+PTX"')  # TORCH_CUDA_ARCH_LIST text
    assert messages == [] and rows[0].archs == ["8.0", "9.0a", "12.0+PTX"]


def test_the_minimum_toolkit_applies_to_a_and_ptx_forms():
    rules = matrix.load_rules()
    assert matrix.arch_problems(["9.0a", "12.0a", "12.0+PTX"], "12.9.1", rules) == []
    why = matrix.arch_problems(["9.0a+PTX", "10.3a"], "12.8.1", rules)
    assert len(why) == 1 and "arch 10.3a needs CUDA toolkit >= 12.9" in why[0]
    assert matrix.arch_problems("8.0 9.0a", "12.2.2", rules) == [
        matrix.buildable("9.0a", "12.2.2", rules)]
    assert "CUDA 13 cannot build arch 7.2" in matrix.arch_problems(["7.2"], "13.0.2", rules)[0]
    assert matrix.arch_problems("", "12.9.1", rules)[0].startswith("no GPU arch given")
    # Without a toolkit (check_wheel without a row): forms and known archs only.
    assert matrix.arch_problems("3.5 12.0a", None, rules) == []
    assert len(matrix.arch_problems("8.9a 99.9 x", None, rules)) == 3


def test_host_rows_may_carry_nvcc_x_y():
    # build_wheel's host row takes the toolkit from `nvcc --version` (X.Y): the X.Y.Z rule is
    # one for rows written in the file, where the CI installer needs all three numbers.
    raw = {"id": "host", "platform": "linux", "python": "abi3", "python_min": "cp310",
           "torch": "2.14.1", "cuda": "cu130", "toolkit": "13.0", "triton": "triton==3.8.*",
           "abi": "abi3"}
    row, problems = matrix._check_row("host", raw, {}, 0, matrix.load_rules())
    assert problems == [] and row.toolkit == "13.0"


def test_a_bad_default_is_reported_once_at_defaults(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("defaults:\n  abi: [abi3]\nrows:\n  - {id: a}\n  - {id: b}\n", encoding="utf-8")
    _rows, problems = matrix.check_rows(matrix.load_matrix(path), matrix.load_rules())
    assert [(p.line, p.row) for p in problems] == [(2, "defaults")]
    assert 'abi must be text, not a list; write e.g. abi: "abi3"' in problems[0].message


def test_linux_rows_claim_their_runners_glibc(tmp_path):
    rows, messages = _messages(tmp_path, platform="linux", triton='"triton==3.4.*"', runner="ubuntu-24.04")
    assert messages == [] and rows[0].manylinux == "2_39"


# ---------------------------------------------------------------------------------------------
# Merge keys

MERGED = """\
x-win: &win
  platform: windows
  python_min: cp39
  torch: "2.8.0"
  cuda: cu129
  toolkit: "12.9.1"
  triton: "triton-windows<3.5"
x-new: &new
  torch: "2.9.1"
  cuda: cu130
defaults:
  abi: abi3
  python: abi3
rows:
  - <<: *win
    id: merged
  - <<: [*new, *win]
    id: first-wins
    toolkit: "13.0.2"
    triton: "triton-windows<3.6"
  - <<: *win
    id: own-key-wins
    toolkit: "13.0.2"
"""


def test_merge_keys_share_fields_between_rows(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MERGED, encoding="utf-8")
    rows, problems = matrix.check_rows(matrix.load_matrix(path), matrix.load_rules())
    by_id = {r.id: r for r in rows}
    assert set(by_id) == {"merged", "first-wins"}
    assert by_id["merged"].torch == "2.8.0" and by_id["merged"].toolkit == "12.9.1"
    assert by_id["first-wins"].torch == "2.9.1" and by_id["first-wins"].platform == "windows"
    # A problem in a merged field points at the line of the anchored mapping that writes it;
    # a problem in the row's own key at that key.
    found = {(p.line, p.row): p.message for p in problems}
    assert set(found) == {(23, "own-key-wins")}, found
    assert "toolkit 13.0.2 does not match cu129" in found[(23, "own-key-wins")]
    bad = MERGED.replace('triton: "triton-windows<3.5"', 'triton: "triton-windows<3.7"')
    path.write_text(bad, encoding="utf-8")
    _, problems = matrix.check_rows(matrix.load_matrix(path), matrix.load_rules())
    assert {(p.line, p.row) for p in problems} >= {(7, "merged")}
    assert all(p.line != 7 or "admits 3.5.x" in p.message for p in problems)


def test_merged_unknown_keys_and_defaults_lines(tmp_path):
    text = MERGED.replace("  cuda: cu129\n", "  cuda: cu129\n  colour: blue\n", 1)
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    _, problems = matrix.check_rows(matrix.load_matrix(path), matrix.load_rules())
    lines = {(p.line, p.row) for p in problems if "unknown key 'colour'" in p.message}
    assert lines == {(6, "merged"), (6, "first-wins"), (6, "own-key-wins")}


def test_merged_matrix_expands_like_written_out_rows(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MERGED.replace("  - <<: *win\n    id: own-key-wins\n    toolkit: \"13.0.2\"\n", ""),
                    encoding="utf-8")
    proc = run("expand", "--format", "json", "--matrix", str(path))
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    assert [e["id"] for e in entries] == ["merged", "first-wins"]
    assert entries[0]["wheels"] == [
        f"sageattention-{matrix.package_version()}+cu129torch2.8.0-cp39-abi3-win_amd64.whl"]
