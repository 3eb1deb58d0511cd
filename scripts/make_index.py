"""Command-line front end of sagewheels.index (the library in scripts/sagewheels/)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sagewheels.index import main

if __name__ == "__main__":
    sys.exit(main())
