"""When the tests that compile the CUDA extension can run: nvcc found the way the wheel tools
find it (scripts/sagewheels/tools.py) and a CUDA build of torch; SAGEATTENTION_SKIP_BUILD_TEST=1
skips them."""
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from sagewheels import tools

NEEDS_BUILD = pytest.mark.skipif(
    tools.find("nvcc") is None or torch.version.cuda is None
    or os.environ.get("SAGEATTENTION_SKIP_BUILD_TEST", "0") not in ("", "0"),
    reason="needs nvcc and a CUDA build of torch (or SAGEATTENTION_SKIP_BUILD_TEST=1)")
