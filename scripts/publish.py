"""Upload every file of DIR to the GitHub release TAG, idempotently (see sagewheels/publish.py).

    python scripts/publish.py --repo OWNER/NAME --tag TAG [--dry-run] [--replace] DIR
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sagewheels.publish import main

if __name__ == "__main__":
    sys.exit(main())
