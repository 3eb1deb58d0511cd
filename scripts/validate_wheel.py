"""Command-line front end of sagewheels.validate (the library in scripts/sagewheels/)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sagewheels.validate import main

if __name__ == "__main__":
    sys.exit(main())
