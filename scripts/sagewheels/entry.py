"""What a command-line front end (scripts/*.py) does when its library's packages are missing.

Standard library only: it runs exactly when ruamel.yaml, packaging or requests cannot be
imported. A checkout with the project's .venv (`make venv`) runs the command again with that
interpreter, so `python3 scripts/matrix.py check` works from a bare system Python; otherwise, or
under `python -S` (no site-packages by request), one line names the package and what to do.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REEXEC_MARK = "SAGEWHEELS_REEXEC"  # set in the child: a .venv that lacks the package too stops there


def project_python() -> Path | None:
    for candidate in (ROOT / ".venv" / "bin" / "python", ROOT / ".venv" / "Scripts" / "python.exe"):
        if candidate.is_file():
            return candidate
    return None


def missing_package(exc: ModuleNotFoundError, script: str) -> int:
    """The exit status for a front end whose import failed with exc."""
    venv_python = project_python()
    # sys.prefix, not the executable: a venv's python is often a link to the system one.
    in_venv = Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()
    if (venv_python is not None and not in_venv and not sys.flags.no_site
            and not os.environ.get(REEXEC_MARK)):
        env = dict(os.environ, **{REEXEC_MARK: "1"})
        return subprocess.call([str(venv_python), script, *sys.argv[1:]], env=env)
    print(f"{Path(script).name}: the Python package {exc.name!r} is missing: run it with the "
          "project's .venv/bin/python (make venv), or pip install -e '.[build]'", file=sys.stderr)
    return 2
