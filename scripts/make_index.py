"""Command-line front end of sagewheels.index (the library in scripts/sagewheels/)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from sagewheels.index import main
except ModuleNotFoundError as exc:  # run by a Python without the tools' packages
    from sagewheels.entry import missing_package

    sys.exit(missing_package(exc, __file__))

if __name__ == "__main__":
    sys.exit(main())
