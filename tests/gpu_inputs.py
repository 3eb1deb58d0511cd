"""GPU inputs shared by tests/test_gpu.py and tests/test_gpu_cuda.py."""
import pytest
import torch


def large_qkv_or_skip(B, H, N, D, dtype=torch.float16):
    """q, k, v of more than 2**31 elements each (64-bit offset tests), or skip the test when the
    GPU cannot hold them."""
    try:
        q = torch.randn(B, H, N, D, device="cuda", dtype=dtype)
        k, v = torch.randn_like(q), torch.randn_like(q)
    except torch.OutOfMemoryError:
        pytest.skip("not enough GPU memory for the 64-bit offset test")
    assert q.numel() > 2**31
    return q, k, v
