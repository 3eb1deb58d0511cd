"""Loads the compiled CUDA extension, or says once exactly why it cannot and what to install.

The extension (csrc/, built by setup.py into ``sageattention._C``) is optional: a build without
it (no nvcc, SAGEATTENTION_SKIP_CUDA_BUILD=1, a source checkout) runs the Triton kernels and
says nothing. A build *with* it that cannot be used here (torch or CUDA variant other than the
one it was compiled against, a missing DLL / undefined symbol, a GPU architecture it was not
compiled for) prints one message naming what the wheel was built for, what this environment
has and what to install, then runs the Triton kernels; ``SAGEATTENTION_STRICT=1`` raises instead.
Nothing here runs a compiler or any tool: what the build knew is in ``_build_info``.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass

import torch

from . import _installer as _rule  # the one matching rule (torch, CUDA variant, GPU archs)
from ._buildinfo import BuildInfo, build_info

EXTENSION_MODULE = "sageattention._C"
FP8_MODULE = "sageattention._C_fp8"  # FP8 P·V kernels, compiled only for archs with FP8 MMA
SM90_MODULE = "sageattention._C_sm90"  # wgmma kernels, compiled only for sm_90a


def manifest_entry(info: BuildInfo) -> dict:
    """The build as a manifest entry, for the one matching rule (sageattention/_installer.py)."""
    return {"torch": info.torch_version, "cuda": info.variant, "archs": list(info.cuda_archs),
            "abi_flavour": info.abi_flavour, "torch_and_higher": info.abi_flavour == "stable"}


def environment_mismatch(info: BuildInfo, torch_version: str, cuda_version: str | None) -> str | None:
    """Why an extension built as ``info`` cannot load under this torch, or None if it can."""
    if info.torch_version is None:
        return "the build recorded no torch version"
    public = _rule.split_torch(torch_version)[0]
    if _rule.version_key(public) is None or _rule.version_key(info.torch_version) is None:
        return f"cannot compare torch versions {torch_version!r} and {info.torch_version!r}"
    entry = manifest_entry(info)
    # torch.version.cuda is the truth about the variant (a local build may lack "+cuXYZ").
    machine = {"torch": public + ("+cu" + cuda_version.replace(".", "") if cuda_version else "+cpu")}
    if _rule.torch_problem(entry, machine):
        if info.abi_flavour == "stable":  # stable ABI: the torch it was built for and every later one
            return f"it needs torch {info.torch_version} or newer"
        return "torch versions differ (compiled extensions are tied to one torch release)"
    if cuda_version is None:
        return "this torch has no CUDA support (a CPU-only build)"
    if _rule.cuda_problem(entry, machine):
        return ("CUDA variants differ" + (" (a stable-ABI wheel needs the same CUDA major version)"
                                          if info.abi_flavour == "stable" else ""))
    return None


def describe(info: BuildInfo, reason: str, torch_version: str, cuda_version: str | None,
             detail: str = "") -> str:
    """The one message a user sees: built for, have, what to do."""
    have_variant = "cu" + cuda_version.replace(".", "") if cuda_version else "cpu"
    built_for = f"torch {info.torch_version}" + (" and higher" if info.abi_flavour == "stable" else "")
    lines = [
        f"sageattention {info.version}: the compiled CUDA kernels cannot be used ({reason}).",
        (f"  built for: {built_for} with CUDA {info.cuda_version} ({info.variant}), "
        f"GPU archs {' '.join(info.cuda_archs) or 'none'}"),
        f"  this environment: torch {torch_version} ({have_variant})",
    ]
    if detail:
        lines.append(f"  error: {detail}")
    lines.append(
        f"  fix: install the sageattention wheel built for torch {_safe_base(torch_version)} "
        f"{have_variant} (or torch {info.torch_version} {info.variant}); never let pip replace "
        "torch to suit sageattention. The installer picks it for this Python: "
        f"`{sys.executable} install_sageattention.py` ({_rule.INSTALLER_URL}); "
        "`python -m sageattention doctor` checks the result.")
    lines.append("  Running the Triton kernels instead (slower). Set SAGEATTENTION_STRICT=1 to make "
                 "this an error.")
    return "\n".join(lines)


def _safe_base(v: str) -> str:
    public = _rule.split_torch(v)[0]
    return public if _rule.version_key(public) else v


def _strict() -> bool:
    return os.environ.get("SAGEATTENTION_STRICT", "0") not in ("", "0")


def _report(message: str) -> None:
    if _strict():
        raise RuntimeError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


@dataclass
class _State:
    tried: bool = False
    module: object = None
    reason: str | None = None
    message: str | None = None  # the report, repeated in strict mode
    fakes_registered: bool = False
    fp8_module: object = None
    sm90_module: object = None


_state = _State()


def load(info: BuildInfo | None = None, importer=importlib.import_module):
    """The extension module, or None (Triton path). Reports a failure once per process."""
    if _state.tried:
        if _state.module is None and _state.message and _strict():
            raise RuntimeError(_state.message)  # strict stays strict after the first call
        return _state.module
    _state.tried = True
    info = info or build_info()
    if not info.compiled_extension:
        _state.reason = "this installation has no compiled kernels (Triton only)"
        return None
    torch_version, cuda_version = torch.__version__, torch.version.cuda
    mismatch = environment_mismatch(info, torch_version, cuda_version)
    if mismatch:
        _state.reason = mismatch
        _state.message = describe(info, mismatch, torch_version, cuda_version)
        _report(_state.message)
        return None
    try:
        _state.module = importer(EXTENSION_MODULE)
    except Exception as exc:  # noqa: BLE001 - "DLL load failed", "undefined symbol", a RuntimeError
        # from an operator registered twice, ...: any of them means Triton, with the reason
        _state.reason = "the extension failed to load"
        _state.message = describe(info, _state.reason, torch_version, cuda_version, detail=str(exc))
        _report(_state.message)
        return None
    if info.optional_paths.get("fp8_archs"):
        try:
            _state.fp8_module = importer(FP8_MODULE)
        except Exception as exc:  # noqa: BLE001 - as above
            _report(describe(info, "its FP8 unit failed to load", torch_version, cuda_version,
                             detail=str(exc)))
    if info.optional_paths.get("sm90a_archs"):
        try:
            _state.sm90_module = importer(SM90_MODULE)
        except Exception as exc:  # noqa: BLE001 - as above
            _report(describe(info, "its Hopper (sm_90a) unit failed to load", torch_version,
                             cuda_version, detail=str(exc)))
    _register_fakes()
    return _state.module


def arch_supported(info: BuildInfo, capability: tuple) -> str | None:
    """None if the extension has machine code for this GPU, else the reason (the matching rule's
    arch rule: sm_XY code runs on sm_XZ with Z >= Y, XYa on XY only, +PTX on newer GPUs)."""
    if _rule.gpu_covered(f"{capability[0]}.{capability[1]}", list(info.cuda_archs)):
        return None
    return (f"it has no code for this GPU (sm_{capability[0]}{capability[1]}); compiled for "
            + " ".join(f"sm_{a.replace('.', '')}" for a in info.cuda_archs))


def reset() -> None:
    """Forget the cached result (tests)."""
    _state.tried, _state.module, _state.reason, _state.message = False, None, None, None
    _state.fp8_module = _state.sm90_module = None
    _device_ok.clear()


def _register_fakes() -> None:
    """Shapes of the compiled ops for FakeTensorMode / torch.compile (no kernel runs)."""
    register = getattr(torch.library, "register_fake", None)
    if (register is None or _state.fakes_registered
            or not hasattr(torch.ops.sageattention_C, "quant_int8")):
        return
    _state.fakes_registered = True
    from . import granularity

    @register("sageattention_C::quant_int8")
    def _quant_int8_fake(x, mode, n_pad, d_pad, smooth, scale_mul, per_row=False):
        B, H, _, D = x.shape
        groups = n_pad if per_row else granularity.n_groups(n_pad, mode, granularity.K_BLOCK)
        return (x.new_empty((B, H, n_pad, d_pad), dtype=torch.int8),
                x.new_empty((B, H, groups), dtype=torch.float32),
                x.new_empty((B, H, D), dtype=torch.float32))

    def _out_and_lse(q8, nq, head_dim, nhd, return_lse, dtype):
        B, Hq = q8.shape[:2]
        shape = (B, nq, Hq, head_dim) if nhd else (B, Hq, nq, head_dim)
        return (q8.new_empty(shape, dtype=dtype),
                q8.new_empty((B if return_lse else 0, Hq, nq), dtype=torch.float32))

    @register("sageattention_C::attn_int8_fp16")
    def _attn_int8_fp16_fake(q8, q_scale, k8, k_scale, v, nq, nhd, causal, per_thread, pv_mode,
                             return_lse, q_scale_mul, mask, lists, lists_sb, lists_sh, lists_sm,
                             n_kb, mask_bits):
        return _out_and_lse(q8, nq, v.shape[-1], nhd, return_lse, v.dtype)

    @register("sageattention_C::quant_v_fp8")
    def _quant_v_fp8_fake(v, n_pad, d_pad, smooth, max_value):
        B, H, _, D = v.shape
        return (v.new_empty((B, H, d_pad, n_pad), dtype=torch.uint8),
                v.new_empty((B, H, d_pad), dtype=torch.float32),
                v.new_empty((B, H, D), dtype=torch.float32))

    @register("sageattention_C::attn_int8_fp8")
    def _attn_int8_fp8_fake(q8, q_scale, k8, k_scale, v8, v_scale, nq, nk, head_dim, nhd, causal,
                            per_thread, pv_mode, return_lse, out_bf16, q_scale_mul, mask, lists,
                            lists_sb, lists_sh, lists_sm, n_kb, mask_bits):
        dtype = torch.bfloat16 if out_bf16 else torch.float16
        return _out_and_lse(q8, nq, head_dim, nhd, return_lse, dtype)

    @register("sageattention_C::attn_int8_fp8_sm90")
    def _attn_int8_fp8_sm90_fake(q8, q_scale, k8, k_scale, v8, v_scale, nq, nk, head_dim, nhd,
                                 causal, per_thread, pv_mode, return_lse, out_bf16):
        dtype = torch.bfloat16 if out_bf16 else torch.float16
        return _out_and_lse(q8, nq, head_dim, nhd, return_lse, dtype)


_device_ok: dict = {}


def usable_on(device: torch.device) -> bool:
    """True if the extension is loaded and has code for this GPU (reported once otherwise)."""
    if device.type != "cuda" or load() is None:
        return False
    index = _device_index(device)
    if index not in _device_ok:
        info = build_info()
        reason = arch_supported(info, torch.cuda.get_device_capability(index))
        if reason:
            _report(describe(info, reason, torch.__version__, torch.version.cuda))
        _device_ok[index] = reason is None
    return _device_ok[index]


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _unit_runs_on(device: torch.device, module, archs_key: str) -> bool:
    """Whether an optional unit is loaded and its recorded archs (_build_info's OPTIONAL_PATHS
    entry `archs_key`) have code for this GPU."""
    if module is None:
        return False
    unit = BuildInfo(version="", cuda_archs=tuple(build_info().optional_paths.get(archs_key, ())))
    return arch_supported(unit, torch.cuda.get_device_capability(_device_index(device))) is None


def fp8_usable_on(device: torch.device) -> bool:
    """True if the FP8 P·V unit is loaded and has code for this GPU."""
    return usable_on(device) and _unit_runs_on(device, _state.fp8_module, "fp8_archs")


def sm90a_usable_on(device: torch.device) -> bool:
    """True if the wgmma unit (sm_90a code: H100, H200 and no other GPU) is loaded for this GPU."""
    return fp8_usable_on(device) and _unit_runs_on(device, _state.sm90_module, "sm90a_archs")


def fp8_f16_accum_compiled() -> bool:
    """Whether the build has the fp16-accumulating FP8 MMA (pv_accum_dtype "fp32+fp16")."""
    return bool(build_info().optional_paths.get("fp8_pv_f16_accum", False))


def quant_int8(x: torch.Tensor, mode: int, n_pad: int, d_pad: int, smooth: bool,
               scale_mul: float = 1.0, per_row: bool = False):
    """INT8 quantization (and K's mean) in one compiled call, or None where it cannot run.
    per_row: one scale per row (NaN for a row holding a NaN or an infinity), as
    triton.quant.quantize_int8(per_row=True) makes them."""
    if not usable_on(x.device):
        return None
    return torch.ops.sageattention_C.quant_int8(x, mode, n_pad, d_pad, smooth, scale_mul, per_row)
