"""scripts/ is a library (scripts/sagewheels/) with thin command-line front ends: no import
circles between the library's modules, every front end only forwards to its module, and the
command lines people and workflows use keep working."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
PACKAGE = SCRIPTS / "sagewheels"
sys.path.insert(0, str(SCRIPTS))
# Front end -> the module that implements it.
FRONT_ENDS = {"matrix.py": "matrix", "build_wheel.py": "build", "check_wheel.py": "check",
              "fatbin.py": "fatbin", "tools.py": "tools", "validate_wheel.py": "validate",
              "publish.py": "publish", "make_index.py": "index"}


def _imports(path: Path) -> set:
    """Names of sagewheels modules a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sagewheels."):
            found.add(node.module.split(".")[1])
    return found


def _graph() -> dict:
    return {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_no_import_circles():
    graph = _graph()
    state = {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        assert state.get(node) != "active", "import circle: " + " -> ".join(path + [node])
        state[node] = "active"
        for dep in sorted(graph.get(node, ())):
            visit(dep, path + [node])
        state[node] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_host_detection_has_one_home():
    graph = _graph()
    assert "host" in graph["build"] and "host" in graph["check"]
    assert "build" not in graph["check"]
    for path in PACKAGE.glob("*.py"):
        if path.stem != "host":
            assert "def host_row" not in path.read_text(encoding="utf-8"), path


@pytest.mark.parametrize("script, module", sorted(FRONT_ENDS.items()))
def test_front_ends_only_forward(script, module):
    tree = ast.parse((SCRIPTS / script).read_text(encoding="utf-8"))
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defs == [], f"{script} defines code; it belongs in sagewheels/{module}.py"
    assert f"from sagewheels.{module} import main" in (SCRIPTS / script).read_text(encoding="utf-8")


@pytest.mark.parametrize("args", [["matrix.py", "check"], ["matrix.py", "expand", "--format", "json"],
                                  ["build_wheel.py", "--row", "win-torch2.8.0-cu129", "--dry-run"],
                                  ["check_wheel.py", "--help"], ["build_wheel.py", "--help"]])
def test_command_lines_keep_working(args):
    proc = subprocess.run([sys.executable, str(SCRIPTS / args[0]), *args[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("script", sorted(FRONT_ENDS))
def test_front_ends_without_their_packages_say_so_in_one_line(script):
    """Run by a Python without site-packages (-S): one line naming the package, no traceback."""
    proc = subprocess.run([sys.executable, "-S", str(SCRIPTS / script), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    if "is missing" not in proc.stderr:
        pytest.skip(f"{script} needs nothing beyond the standard library")
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is missing: run it with the project's .venv/bin/python" in lines[0]


def _bare_python():
    """A Python that lacks the tools' packages (the system one here), or None."""
    import shutil

    for exe in ("/usr/bin/python3", shutil.which("python3")):
        if exe and subprocess.run([exe, "-c", "import ruamel.yaml"], capture_output=True,
                                  check=False).returncode:
            return exe
    return None


def test_a_bare_python_runs_the_front_end_in_the_projects_venv():
    """`python3 scripts/matrix.py check` from a system Python: run again by .venv's Python."""
    from sagewheels import entry

    exe = _bare_python()
    if exe is None or entry.project_python() is None:
        pytest.skip("needs the project's .venv and a Python without ruamel.yaml")
    env = {k: v for k, v in os.environ.items() if k != entry.REEXEC_MARK}
    proc = subprocess.run([exe, str(SCRIPTS / "matrix.py"), "check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0 and "no problems" in proc.stdout, proc.stderr
    # the child is marked: a .venv that lacks the package too ends in the one line, no loop
    proc = subprocess.run([exe, str(SCRIPTS / "matrix.py"), "check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False, env={**env, entry.REEXEC_MARK: "1"})
    assert proc.returncode == 2 and "is missing" in proc.stderr
