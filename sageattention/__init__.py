"""Quantized (INT8 Q·Kᵀ, FP16/FP8 P·V) attention, a drop-in for the SageAttention 2.2.0 API."""
from ._version import __version__

try:
    import torch as _torch  # noqa: F401 - torch broken or missing: explained below, not a traceback
except Exception as _exc:  # noqa: BLE001 - ImportError, "DLL load failed" (OSError), ...
    _TORCH_ERROR = f"{type(_exc).__name__}: {_exc}"

    def __getattr__(name):
        # `python -m sageattention doctor` still runs (submodules import as usual); using the
        # API says what is wrong.
        if not name.startswith("sageattn"):
            raise AttributeError(name)
        raise ImportError(f"sageattention needs torch, which does not import here ({_TORCH_ERROR}): "
                          "install or repair a CUDA build of torch; `python -m sageattention "
                          "doctor` checks the environment")
else:
    from .core import (
        sageattn,
        sageattn_qk_int8_pv_fp8_cuda,
        sageattn_qk_int8_pv_fp8_cuda_sm90,
        sageattn_qk_int8_pv_fp16_cuda,
        sageattn_qk_int8_pv_fp16_triton,
        sageattn_varlen,
    )

__all__ = [
    "__version__",
    "sageattn",
    "sageattn_qk_int8_pv_fp8_cuda",
    "sageattn_qk_int8_pv_fp8_cuda_sm90",
    "sageattn_qk_int8_pv_fp16_cuda",
    "sageattn_qk_int8_pv_fp16_triton",
    "sageattn_varlen",
]
