"""Test setup.

Without a CUDA GPU the Triton kernels run under Triton's interpreter on CPU tensors: the
variable must be set before any kernel module is imported, so it is set here, first.
On a GPU machine the kernels compile for the GPU and `pytest -m gpu` runs the GPU tests.
SAGEATTENTION_TEST_INSTALLED=FOLDER: the tests must import sageattention from under FOLDER (an
installed wheel, not this checkout); the session stops at once otherwise.
"""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def pytest_configure(config):
    want = os.environ.get("SAGEATTENTION_TEST_INSTALLED")
    if want:
        import sageattention

        where = os.path.realpath(sageattention.__file__)
        if not where.startswith(os.path.realpath(want) + os.sep):
            raise pytest.UsageError(f"SAGEATTENTION_TEST_INSTALLED={want}: sageattention comes from "
                                    f"{where}; run pytest from outside the checkout")
        print(f"testing the installed sageattention at {where}")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_interp = pytest.mark.skip(reason="runs the kernels under TRITON_INTERPRET=1 (CPU only)")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "interpret" in item.keywords and not INTERPRET:
            item.add_marker(skip_interp)


@pytest.fixture
def seed():
    """A fresh seed per test run (printed on failure) so inputs are new every time."""
    s = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    print(f"seed={s}")
    return s
