"""Command-line front end of sagewheels.publish (the library in scripts/sagewheels/)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from sagewheels.publish import main
except ModuleNotFoundError as exc:  # run by a Python without the tools' packages
    sys.exit(f"{Path(__file__).name}: the Python package {exc.name!r} is missing: run it with the "
             "project's .venv/bin/python (make venv), or pip install -e '.[build]'")

if __name__ == "__main__":
    sys.exit(main())
