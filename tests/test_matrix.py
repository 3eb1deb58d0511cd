"""scripts/matrix.py: the build matrix checker and expander (no GPU, no network)."""
import json
import re
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


# ---------------------------------------------------------------------------------------------
# gpu_runners: the self-hosted GPU runners that validate each row before a release publishes it

LINUX_ROW = ('  - {id: lin, platform: linux, python: abi3, python_min: cp39, torch: "2.8.0", '
             'cuda: cu129, toolkit: "12.9.1", triton: "triton==3.4.*", abi: abi3, manylinux: "2_28"ARCHS}\n')
WINDOWS_ROW = ('  - {id: win, platform: windows, python: abi3, python_min: cp39, torch: "2.8.0", '
               'cuda: cu129, toolkit: "12.9.1", triton: "triton-windows<3.5", abi: abi3}\n')
RUNNERS = ("gpu_runners:\n"
           "  linux-sm80: [self-hosted, linux, gpu, sm80]\n"
           "  linux-sm90: [self-hosted, Linux, X64, sm90]\n"
           "  windows-sm89: [self-hosted, windows, gpu, sm89]\n")


def _gpu_file(tmp_path, runners=RUNNERS, archs="", rows=None):
    text = runners + "rows:\n" + (rows or LINUX_ROW.replace("ARCHS", archs) + WINDOWS_ROW)
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _gpu_check(tmp_path, **kw):
    rows, problems = matrix.check_rows(matrix.load_matrix(_gpu_file(tmp_path, **kw)), matrix.load_rules())
    return {r.id: r for r in rows}, problems


def test_shipped_matrix_validates_every_row_on_a_gpu_runner():
    entries = json.loads(run("expand", "--format", "json").stdout)
    assert all(e["gpu_runners"] for e in entries)
    assert all(name.startswith(e["platform"] + "-sm") for e in entries for name in e["gpu_runners"])
    jobs = json.loads(run("expand", "--validations", "--format", "github").stdout)["include"]
    assert len(jobs) == sum(len(e["gpu_runners"]) for e in entries)  # abi3 rows: one Python each
    seed = next(j for j in jobs if j["id"] == "win-torch2.8.0-cu129")
    assert seed["gpu_runner"] == "windows-sm89" and seed["gpu_arch"] == "8.9" and seed["gpu_family"] == "sm89"
    assert seed["gpu_labels"][0] == "self-hosted" and seed["test_python"] == "3.12"
    assert seed["wheel"] == seed["wheels"][0] and seed["triton"] == "triton-windows<3.5"


def test_rows_are_validated_where_their_archs_run(tmp_path):
    rows, problems = _gpu_check(tmp_path)
    assert problems == []
    assert [r.name for r in rows["lin"].validate_on] == ["linux-sm80", "linux-sm90"]
    assert [r.name for r in rows["win"].validate_on] == ["windows-sm89"]
    # The installer's rule (sagewheels/matching.py): 8.0 code runs on an 8.6 GPU, 9.0a on 9.0 only.
    runners = RUNNERS + "  linux-sm86: [self-hosted, linux, sm86]\n"
    rows, problems = _gpu_check(tmp_path, runners=runners, archs=', archs: ["8.0", "9.0a"]')
    assert problems == [] and [r.gpu for r in rows["lin"].validate_on] == ["8.0", "9.0", "8.6"]
    rows, problems = _gpu_check(tmp_path, archs=', archs: ["9.0a"]')
    assert problems == [] and [r.name for r in rows["lin"].validate_on] == ["linux-sm90"]


def test_a_row_no_runner_validates_is_a_problem_naming_the_runner_to_add(tmp_path):
    _rows, problems = _gpu_check(tmp_path, archs=', archs: ["12.0"]')
    assert len(problems) == 1 and problems[0].row == "lin" and problems[0].line == 6
    assert "no GPU runner in gpu_runners validates this linux row (archs 12.0)" in problems[0].message
    assert "add a runner, e.g. linux-sm120: [self-hosted, linux, gpu, sm120]" in problems[0].message
    # A Windows row is never validated on a Linux runner.
    no_windows = RUNNERS.replace("  windows-sm89: [self-hosted, windows, gpu, sm89]\n", "")
    _rows, problems = _gpu_check(tmp_path, runners=no_windows)
    assert [p.row for p in problems] == ["win"]


def test_without_gpu_runners_check_passes_but_validations_are_refused(tmp_path):
    rows, problems = _gpu_check(tmp_path, runners="")
    assert problems == [] and rows["lin"].validate_on == []
    path = _gpu_file(tmp_path, runners="")
    proc = run("expand", "--validations", "--format", "github", "--matrix", str(path))
    assert proc.returncode == 1 and proc.stdout == ""
    assert "declares no gpu_runners; a release validates every wheel on a GPU" in proc.stderr
    assert json.loads(run("expand", "--format", "json", "--matrix", str(path)).stdout)[0]["gpu_runners"] == []


WRITE = "write linux-sm80: [self-hosted, linux, gpu, sm80]"
GPU_RUNNER_GAPS = [
    # (the gpu_runners YAML, what is wrong, what to write instead)
    ("gpu_runners: [self-hosted, linux]",
     "gpu_runners must be a mapping of PLATFORM-smXY to runner labels, not a list",
     "write e.g. linux-sm80: [self-hosted, linux, gpu, sm80]"),
    ("gpu_runners: {}", "runner labels, not empty", "write e.g. linux-sm80"),
    ("gpu_runners:\n  sm80: [self-hosted, linux, sm80]",
     "gpu_runners key 'sm80' must name a platform and a GPU family",
     "PLATFORM-smXY (linux-sm80, windows-sm89, linux-sm120)"),
    ("gpu_runners:\n  macos-sm80: [self-hosted, sm80]", "key 'macos-sm80' must name a platform",
     "write e.g."),
    ("gpu_runners:\n  linux-sm99: [self-hosted, linux, sm99]", "sm99 is GPU 9.9, not a GPU arch",
     "use one of sm35, sm37"),
    ("gpu_runners:\n  linux-sm80: self-hosted",
     "gpu_runners linux-sm80 must be a list of runner labels, not text", WRITE),
    ("gpu_runners:\n  linux-sm80: []", "not an empty list", WRITE),
    ("gpu_runners:\n  linux-sm80: [linux, self-hosted, sm80]",
     "the first label must be self-hosted, not 'linux'", WRITE),
    ("gpu_runners:\n  linux-sm80: [ubuntu-latest]", "the first label must be self-hosted", WRITE),
    ("gpu_runners:\n  linux-sm80: [self-hosted, windows, sm80]",
     "lacks the label linux: a runner of the other platform could take the job", WRITE),
    ("gpu_runners:\n  linux-sm80: [self-hosted, linux, gpu]",
     "lacks the label sm80: a runner with another GPU could take the job", WRITE),
    ("gpu_runners:\n  linux-sm80: [self-hosted, linux, sm80, Linux]",
     "lists a label twice (labels ignore case)", WRITE),
    ("gpu_runners:\n  linux-sm80: [self-hosted, linux, sm80, 80]", "label the number 80 must be a word",
     WRITE),
    ('gpu_runners:\n  linux-sm80: [self-hosted, linux, sm80, "my gpu"]',
     "label 'my gpu' must be a word of letters, digits", WRITE),
    ("gpu_runners:\n  linux-sm80: [self-hosted, linux, sm80, [gpu]]", "label a list must be a word", WRITE),
]


@pytest.mark.parametrize("runners, wrong, fix", GPU_RUNNER_GAPS, ids=[g[1][:40] for g in GPU_RUNNER_GAPS])
def test_each_gpu_runner_gap_names_what_to_write(tmp_path, runners, wrong, fix):
    _rows, problems = _gpu_check(tmp_path, runners=runners + "\n")
    assert [p.row for p in problems] == ["gpu_runners"], problems  # not again as unvalidated rows
    assert problems[0].line >= 1 and wrong in problems[0].message, problems[0].message
    assert fix in problems[0].message, problems[0].message


def test_gpu_runner_problems_keep_the_cli_format(tmp_path):
    path = _gpu_file(tmp_path, runners="gpu_runners:\n  linux-sm80: [self-hosted, linux]\n")
    proc = run("check", "--matrix", str(path))
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"{path}:2: row gpu_runners: gpu_runners linux-sm80 lacks the label sm80")


def test_cpython_rows_are_validated_once_per_python_tag(tmp_path):
    row = ('  - {id: cp, platform: linux, python: [cp311, cp312], torch: "2.8.0", cuda: cu129, '
           'toolkit: "12.9.1", triton: "triton==3.4.*", abi: cpython}\n')
    path = _gpu_file(tmp_path, rows=row)
    jobs = json.loads(run("expand", "--validations", "--format", "json", "--matrix", str(path)).stdout)
    pairs = [(j["gpu_runner"], j["test_python"], j["wheel"].split("-")[2]) for j in jobs]
    assert pairs == [("linux-sm80", "3.11", "cp311"), ("linux-sm80", "3.12", "cp312"),
                     ("linux-sm90", "3.11", "cp311"), ("linux-sm90", "3.12", "cp312")]


def test_abi3_rows_test_python_3_12_within_the_rows_range():
    rules = matrix.load_rules()
    raw = {"id": "r", "platform": "linux", "python": "abi3", "torch": "2.5.1", "cuda": "cu124",
           "toolkit": "12.4.1", "triton": "triton==3.1.*", "abi": "cpython"}
    row, problems = matrix._check_row("r", {**raw, "python": ["cp39", "cp310"]}, {}, 0, rules)
    assert problems == [] and matrix.validation_pythons(row, rules) == ["3.9", "3.10"]
    abi3 = {**raw, "abi": "abi3", "torch": "2.6.0", "cuda": "cu126", "toolkit": "12.6.3",
            "triton": "triton==3.2.*", "python_min": "cp39"}
    row, _ = matrix._check_row("r", abi3, {}, 0, rules)
    assert matrix.validation_pythons(row, rules) == ["3.12"]
    row.python_min = "cp313"  # newer than 3.12: the oldest the wheel claims
    assert matrix.validation_pythons(row, rules) == ["3.13"]


@pytest.mark.parametrize("runners", [
    "gpu_runners:\n", "gpu_runners: 7\n", "gpu_runners:\n  linux-sm80:\n",
    "gpu_runners:\n  linux-sm80: {a: 1}\n",
    "gpu_runners:\n  ? [a, b]\n  : [self-hosted]\n", "gpu_runners:\n  7: [self-hosted]\n",
    "x-l: &l [self-hosted, linux, sm80]\ngpu_runners:\n  linux-sm80: *l\n  linux-sm90: [*l]\n",
    "gpu_runners:\n  linux-sm80: [self-hosted, linux, sm80, " + ", ".join(f"l{i}" for i in range(30)) + "]\n",
    "gpu_runners:\n" + "".join(f"  linux-sm80x{i}: [self-hosted]\n" for i in range(70)),
])
def test_odd_gpu_runners_are_problems_not_tracebacks(tmp_path, runners):
    path = _gpu_file(tmp_path, runners=runners)
    commands = (("check",), ("expand", "--format", "json"), ("expand", "--validations", "--format", "github"))
    for args in commands:
        proc = run(*args, "--matrix", str(path))
        assert "Traceback" not in proc.stderr and proc.returncode in (0, 1), (args, proc.stderr)
    assert run("check", "--matrix", str(path)).returncode == 1


# ---------------------------------------------------------------------------------------------
# inputs: the key of everything a row's wheel is built from, and reuse of a released wheel

def test_inputs_keys_are_stable_per_row_and_follow_the_row():
    first = json.loads(run("inputs").stdout)
    assert first == json.loads(run("inputs").stdout)  # the same commit and matrix, the same keys
    entries = json.loads(run("expand", "--format", "json").stdout)
    assert list(first) == [e["id"] for e in entries]
    assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", v["key"]) and v["reuse"] is False for v in first.values())
    assert len({v["key"] for v in first.values()}) == len(first)
    entry = entries[0]
    sources = matrix.source_ids()
    assert set(sources) == set(matrix.INPUT_PATHS) and sources["csrc"] != "absent"
    key = matrix.inputs_key(entry, sources)
    assert key == first[entry["id"]]["key"]
    # Where a wheel is validated does not change what it is built from; its toolkit does.
    assert matrix.inputs_key({**entry, "gpu_runners": ["linux-sm89"]}, sources) == key
    assert matrix.inputs_key({**entry, "toolkit": "12.9.0"}, sources) != key
    assert matrix.inputs_key(entry, {**sources, "csrc": "0" * 40}) != key


def test_a_released_wheel_with_the_same_key_is_reused(tmp_path):
    keys = json.loads(run("inputs").stdout)
    seed = keys["win-torch2.8.0-cu129"]
    released = tmp_path / "released"
    released.mkdir()
    (released / (seed["wheels"][0] + ".inputs")).write_text(seed["key"] + "\n")
    other = keys["linux-torch2.8.0-cu129"]
    (released / (other["wheels"][0] + ".inputs")).write_text("sha256:" + "0" * 64 + "\n")  # other inputs
    found = json.loads(run("inputs", "--released", str(released)).stdout)
    assert [k for k, v in found.items() if v["reuse"]] == ["win-torch2.8.0-cu129"]
    proc = run("inputs", "--released", str(released), "--reused")
    assert proc.stdout.splitlines() == seed["wheels"]
    builds = json.loads(run("expand", "--platform", "windows", "--released", str(released), "--format",
                            "github").stdout)["include"]
    assert (builds[0]["id"], builds[0]["reuse"]) == ("win-torch2.8.0-cu129", True)
    assert all(e["inputs_key"] == keys[e["id"]]["key"] for e in builds)
    assert not any(e["reuse"] for e in builds[1:])
    # No release folder at all: nothing is reused.
    nothing = json.loads(run("inputs", "--released", str(tmp_path / "no")).stdout)
    assert not any(v["reuse"] for v in nothing.values())


def test_inputs_outside_a_git_checkout_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "sageattention").mkdir()
    (tmp_path / "sageattention" / "_version.py").write_text('__version__ = "2.2.0"\n')
    monkeypatch.setattr(matrix, "ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no checkout above it either
    assert matrix.main(["inputs"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "is not a git checkout with a commit" in err
