"""scripts/matrix.py on files nobody should write but someone will: generated malformed matrices
(random structures, bytes, text, nested aliases, encodings) never produce a traceback, only exit
status 1 (problems) or 2 (a file that cannot be checked), in bounded time and output; and every
file-level failure is one line that says what to do."""
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sagewheels import matrix

SHIPPED = matrix.MATRIX.read_text(encoding="utf-8")
MAX_OUTPUT = 100_000  # MAX_SHOWN problem lines of a few hundred characters
MAX_SECONDS = 10

# Few, fixed examples per property in the test run: every example parses YAML with ruamel (pure
# Python), and the properties together stay within a few seconds on two cores. A longer random
# search: MATRIX_FUZZ_EXAMPLES=5000 python -m pytest tests/test_matrix_hostile.py
FUZZ = int(os.environ.get("MATRIX_FUZZ_EXAMPLES", "0"))
PROPERTY = settings(max_examples=FUZZ or 60, deadline=None, derandomize=not FUZZ,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def run_main(args):
    """matrix.main in-process: (exit status, stdout, stderr, seconds)."""
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = matrix.main(args)
        except SystemExit as exc:  # argparse only
            rc = exc.code
    return rc, out.getvalue(), err.getvalue(), time.monotonic() - start


def assert_handled(path, command=("check",), allowed=(1, 2)):
    rc, out, err, took = run_main([*command, "--matrix", str(path)])
    assert "Traceback" not in out + err
    assert rc in allowed, (rc, out, err)
    assert len(out) + len(err) < MAX_OUTPUT, len(out) + len(err)
    assert took < MAX_SECONDS, took
    if rc == 2:  # a file that cannot be checked: one line, PATH first
        assert out == "" and len(err.splitlines()) == 1 and err.startswith(str(path)), err
    return rc, out, err


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile") / "m.yaml"


COMMANDS = st.sampled_from([("check",), ("expand", "--format", "json"),
                            ("expand", "--format", "github"), ("expand", "--format", "markdown")])

# ---------------------------------------------------------------------------------------------
# Generated structures: rows with random fields of random types, near-valid rows, random shapes

PLAUSIBLE = st.sampled_from(["2.8.0", "2.8", "cu129", "12.9.1", "12.9", "13.0.2", "8.0", "9.0a",
                             "12.0+PTX", "8.9a", "99.9", "windows", "linux", "abi3", "stable",
                             "cpython", "cp39", "cp312", "triton-windows<3.5", "triton==3.4.*",
                             "windows-2022", "ubuntu-22.04", "14.44", "2_35", "", " ", "\t",
                             "a b", "-x", "é", "x" * 300])
SCALARS = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | PLAUSIBLE
           | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=4),
                      max_leaves=12)
KEYS = st.sampled_from(matrix.ROW_KEYS) | st.text(max_size=8)
VALID_ROW = {"id": "r", "platform": "windows", "python": "abi3", "python_min": "cp39",
             "torch": "2.8.0", "cuda": "cu129", "toolkit": "12.9.1", "triton": "triton-windows<3.5",
             "abi": "abi3"}
NEAR_VALID = st.builds(lambda over: {**VALID_ROW, **over},
                       st.dictionaries(st.sampled_from(matrix.ROW_KEYS), VALUES, max_size=3))
ROWS = st.dictionaries(KEYS, VALUES, max_size=8) | NEAR_VALID | VALUES
DOCUMENTS = (st.fixed_dictionaries({"rows": st.lists(ROWS, max_size=5)},
                                   optional={"defaults": st.dictionaries(KEYS, VALUES, max_size=4) | VALUES})
             | st.dictionaries(st.sampled_from(["rows", "defaults", "x-a", "colour"]), VALUES, max_size=3)
             | VALUES)


def dump(document) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(document, buf)
    return buf.getvalue()


@PROPERTY
@given(document=DOCUMENTS, command=COMMANDS)
def test_random_structures_are_problems_never_tracebacks(scratch, document, command):
    # The unknown top-level key guarantees a problem even if the rows happen to be valid.
    text = "colour: blue\n" + dump(document) if isinstance(document, dict) else dump(document)
    scratch.write_text(text, encoding="utf-8")
    assert_handled(scratch, command)


@PROPERTY
@given(data=st.binary(max_size=2000))
def test_random_bytes(scratch, data):
    scratch.write_bytes(data)
    assert_handled(scratch)


YAML_ALPHABET = st.sampled_from(list(":-[]{}&*!|>'\"%@`#,?<= \n\t") + ["rows", "id", "- ", "\n  ",
                                                                           "<<: ", "*a", "&a ", "8.0"])


@PROPERTY
@given(text=st.text(max_size=400) | st.lists(YAML_ALPHABET, max_size=80).map("".join))
def test_random_text(scratch, text):
    scratch.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_handled(scratch)


@PROPERTY
@given(data=st.data(), command=COMMANDS)
def test_mutated_shipped_matrix(scratch, data, command):
    text = SHIPPED
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 40))
        insert = data.draw(st.lists(YAML_ALPHABET | PLAUSIBLE, max_size=4).map("".join))
        text = text[:at] + insert + text[at + cut:]
    scratch.write_text(text, encoding="utf-8")
    assert_handled(scratch, command, allowed=(0, 1, 2))


# ---------------------------------------------------------------------------------------------
# Nested aliases ("billion laughs"): a few hundred bytes that expand to millions of values

def laughs(depth: int, width: int, mapping: bool) -> tuple:
    """(YAML text defining anchors x0..x<depth> under x- keys, the name of the last)."""
    lines = ["x-l0: &x0 " + ('{a: "8.0"}' if mapping else '["8.0", "8.6"]')]
    for level in range(1, depth + 1):
        refs = ", ".join([f"*x{level - 1}"] * width)
        body = "{" + ", ".join(f"k{i}: *x{level - 1}" for i in range(width)) + "}" if mapping \
            else f"[{refs}]"
        lines.append(f"x-l{level}: &x{level} {body}")
    return "\n".join(lines) + "\n", f"x{depth}"


PLACES = {
    "archs": "rows:\n  - {{id: a, platform: linux, archs: *{0}}}\n",
    "python": "rows:\n  - {{id: a, abi: cpython, python: *{0}}}\n",
    "rows": "rows: *{0}\n",
    "row": "rows:\n  - *{0}\n",
    "defaults": "defaults: *{0}\nrows:\n  - {{id: a}}\n",
    "merge": "rows:\n  - {{<<: *{0}, id: a}}\n",
    "key": "rows:\n  - {{id: a, ? *{0} : 1}}\n",
    "id": "rows:\n  - {{id: *{0}}}\n",
}


@PROPERTY
@given(depth=st.integers(1, 12), width=st.integers(2, 12), mapping=st.booleans(),
       place=st.sampled_from(sorted(PLACES)), command=COMMANDS)
def test_nested_aliases_are_bounded(scratch, depth, width, mapping, place, command):
    anchors, name = laughs(depth, width, mapping)
    scratch.write_text(anchors + PLACES[place].format(name), encoding="utf-8")
    rc, _out, err = assert_handled(scratch, command)
    # ruamel refuses a list as a key, and a merge of a list, before anything is expanded.
    readable = place != "key" and (mapping or place != "merge")
    if width ** depth > 2 * matrix.MAX_VALUES and readable:
        assert rc == 2 and "once its aliases are expanded" in err, err


def test_billion_laughs_is_refused_at_the_row_that_uses_it(tmp_path):
    anchors, name = laughs(9, 9, mapping=False)  # 9**9 = 387 million values
    path = tmp_path / "m.yaml"
    path.write_text(anchors + PLACES["archs"].format(name), encoding="utf-8")
    assert len(path.read_bytes()) < 600
    _rc, _out, err = assert_handled(path)
    assert err == (f"{path}:12: holds more than {matrix.MAX_VALUES} values once its aliases are "
                   "expanded (aliases of aliases multiply); write the values out, or share row "
                   "fields with a merge key (<<: *common)\n")


# ---------------------------------------------------------------------------------------------
# Every file-level failure: exit 2, one line, what to do

FILE_LEVEL = [
    # (file contents, expected line start after PATH, text of the fix)
    (b"", ":1: is empty;", "a build matrix is a mapping with 'rows'"),
    (b"- a\n- b\n", ":1: must be a mapping with 'defaults' and 'rows', not a list;", "start the file with"),
    (b"just text\n", ":1: must be a mapping with 'defaults' and 'rows', not text;", "start the file with"),
    (b"defaults: [abi3]\nrows: [{id: a}]\n", ":1: 'defaults' must be a mapping of field: value, not a list;",
     "write 'defaults:' with the fields indented below it"),
    (b"defaults: abi3\nrows: [{id: a}]\n", ":1: 'defaults' must be a mapping", "such as 'abi: abi3'"),
    (b"defaults: {}\n", ":1: has no 'rows';", "add 'rows:' with a list of rows"),
    (b"x: 1\nrows: {id: a}\n", ":2: 'rows' must be a non-empty list of rows, not a mapping;",
     "write each row as '- id: ...'"),
    (b"rows: 5\n", ":1: 'rows' must be a non-empty list of rows, not the number 5;", "'- id: ...'"),
    (b"rows: []\n", ":1: 'rows' must be a non-empty list of rows, not empty;", "'- id: ...'"),
    (b"rows:\n", ":1: 'rows' must be a non-empty list of rows, not no value (null);", "'- id: ...'"),
    (b"rows:\n  - {id: a}\n  - win-row\n", ":3: row #2 must be a mapping of field: value, not text;",
     "indent the row's other fields under 'id'"),
    (b"rows:\n  - [id, a]\n", ":2: row #1 must be a mapping of field: value, not a list;", "'- id: ...'"),
    (b"rows:\n  - id: a\n   platform: linux\n", ":3: not valid YAML:", "check the indentation"),
    (b"rows: [\n", ":2: not valid YAML:", "check the indentation, the quotes"),
    (b"rows:\n  - {id: a, id: b}\n", ":2: not valid YAML: found duplicate key", "give each key once"),
    (b"rows:\n  - {id: *nope}\n", ":2: not valid YAML: found undefined alias", "define the anchor"),
    (b"rows:\n  - {<<: [1], id: a}\n", ":2: not valid YAML:", "a merge key takes an alias of a mapping"),
    (b"rows:\n  - {id: a, torch: 2024-13-45}\n", ":2: not valid YAML: cannot read '2024-13-45'",
     "quote the value"),
    (b"rows:\n  - {id: a, torch: " + b"9" * 5000 + b"}\n", ":2: not valid YAML: cannot read",
     "quote the value"),
    (b"rows:\n  - {id: a\x07}\n", ":2: not valid YAML: the character '\\x07' is not allowed", "delete it"),
    ("rows:\n  - {id: caf\u00e9}\n".encode("latin-1"), ":2: is not UTF-8: byte 0xe9 at column 13",
     "save the file as UTF-8"),
    ("rows:\n  - {id: a}\n".encode("utf-16"), ":1: is UTF-16 text;", "save it as UTF-8"),
    ("rows:\n  - {id: a}\n".encode("utf-16-be"), ":1: holds NUL bytes (UTF-16 text without a byte order mark",
     "save it as UTF-8 text"),
    ("rows:\n  - {id: a}\n".encode("utf-32"), ":1: is UTF-32 text;", "save it as UTF-8"),
    (b"[" * 600 + b"]" * 600, ": not valid YAML for this checker: collections nested too deeply",
     "rows of flat fields"),
]


@pytest.mark.parametrize("data, where, fix", FILE_LEVEL, ids=[f[1][:50] for f in FILE_LEVEL])
def test_file_level_failures_are_one_line(tmp_path, data, where, fix):
    path = tmp_path / "m.yaml"
    path.write_bytes(data)
    rc, _out, err = assert_handled(path)
    assert rc == 2
    assert err.startswith(f"{path}{where}"), err
    assert fix in err, err


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(SHIPPED.encode("utf-8-sig"))
    assert run_main(["check", "--matrix", str(path)])[0] == 0


def test_paths_that_are_not_a_readable_file(tmp_path):
    for path, text in ((tmp_path / "nope.yaml", ("cannot read: No such file or directory; pass --matrix "
                        "an existing, readable YAML file")),
                       (tmp_path, "cannot read: it is a folder; pass --matrix the YAML file itself")):
        rc, _out, err = assert_handled(path)
        assert rc == 2 and err == f"{path}: {text}\n"


def test_an_unreadable_file(tmp_path):
    locked = tmp_path / "locked.yaml"
    locked.write_text(SHIPPED, encoding="utf-8")
    locked.chmod(0)
    if os.access(locked, os.R_OK):
        pytest.skip("running as root: a mode-0 file is still readable")
    rc, _out, err = assert_handled(locked)
    assert rc == 2 and err == (f"{locked}: cannot read: Permission denied; pass --matrix an existing, "
                               "readable YAML file\n")


def test_size_limits(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"# padding\n" * (matrix.MAX_BYTES // 10 + 1))
    rc, _, err = assert_handled(path)
    assert rc == 2 and err == (f"{path}: is larger than 1000 kB; a build matrix is a few kB of rows: "
                               "pass the right file, or split it\n")
    path.write_text("rows:\n" + "  - {id: a}\n" * (matrix.MAX_ROWS + 1), encoding="utf-8")
    rc, _out, err = assert_handled(path)
    assert rc == 2 and f"'rows' has {matrix.MAX_ROWS + 1} rows, more than {matrix.MAX_ROWS}" in err


def test_many_problems_are_capped(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("rows:\n" + "".join(f"  - {{id: r{i}, torch: 2.8}}\n" for i in range(300)),
                    encoding="utf-8")
    rc, out, _err = assert_handled(path)
    lines = out.splitlines()
    assert rc == 1 and len(lines) == matrix.MAX_SHOWN + 1
    assert lines[-1].endswith(f"{300 - matrix.MAX_SHOWN} more problem(s) not shown; fix these first")


def test_expand_keeps_problems_off_stdout(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("rows:\n  - {id: a}\n", encoding="utf-8")
    rc, out, err, _ = run_main(["expand", "--format", "github", "--matrix", str(path)])
    assert rc == 1 and out == "" and "missing platform" in err


def test_a_broken_rules_file_is_one_line(tmp_path):
    rules = tmp_path / "rules.yaml"
    text = matrix.RULES.read_text(encoding="utf-8")
    for broken, message in ((text.replace('    cuda: [cu126, cu128, cu129]\n', '    cuda: 5\n'),
                             "torch.2.8.cuda has an unexpected value"),
                            (text.replace('  "2.10":\n', '  2.10:\n'), "torch entry the number 2.1 must be"),
                            (text.replace("  linux_runner:\n", "  linux_runners:\n"),
                             "rules.linux_runner must be a mapping with a 'why' text")):
        rules.write_text(broken, encoding="utf-8")
        rc, _out, err, _ = run_main(["check", "--rules", str(rules)])
        assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
        assert err.startswith(f"{rules}:") and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# A few real processes: nothing reaches the user as a traceback

def test_command_line_never_shows_a_traceback(tmp_path):
    anchors, name = laughs(9, 9, mapping=True)
    cases = {"laughs.yaml": (anchors + PLACES["merge"].format(name)).encode(),
             "utf16.yaml": SHIPPED.encode("utf-16"),
             "bytes.yaml": bytes(range(256)) * 4,
             "syntax.yaml": b"rows:\n  - id: a\n    platform: [linux\n",
             "types.yaml": b"rows:\n  - {id: [a], torch: 2.8, archs: {x: 1}, python: null}\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for args in [("check", "--matrix", str(tmp_path / n)) for n in cases] + [
            ("expand", "--format", "github", "--matrix", str(tmp_path / "types.yaml")),
            ("check", "--matrix", str(tmp_path)), ("check", "--matrix", str(tmp_path / "nope"))]:
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "matrix.py"), *args],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode in (1, 2), (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        if proc.returncode == 2:
            assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "matrix.py"), "expand", "--format",
                           "json"], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(proc.stdout)  # the shipped matrix still expands
