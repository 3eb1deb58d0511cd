"""What the build recorded in _build_info.py, read without importing torch (the doctor reads
it when torch itself is broken)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BuildInfo:
    version: str
    torch_version: str | None = None  # e.g. "2.8.0" (no local part)
    cuda_version: str | None = None  # e.g. "12.9", the CUDA of that torch build
    cuda_archs: tuple = ()  # e.g. ("8.0", "8.6", "9.0")
    abi_flavour: str = "none"  # none | cpython | abi3 | stable
    compiled_extension: bool = False
    optional_paths: dict = field(default_factory=dict)

    @property
    def variant(self) -> str:
        return "cu" + self.cuda_version.replace(".", "") if self.cuda_version else "cpu"


def build_info() -> BuildInfo:
    """What the build recorded; a source checkout (no _build_info.py) has no extension."""
    from ._version import __version__

    try:
        info = importlib.import_module("sageattention._build_info")
    except ImportError:
        return BuildInfo(version=__version__)
    return BuildInfo(
        version=getattr(info, "VERSION", __version__),
        torch_version=getattr(info, "TORCH_VERSION", None),
        cuda_version=getattr(info, "CUDA_VERSION", None),
        cuda_archs=tuple(getattr(info, "CUDA_ARCHS", ())),
        abi_flavour=getattr(info, "ABI_FLAVOUR", "none"),
        compiled_extension=bool(getattr(info, "COMPILED_EXTENSION", False)),
        optional_paths=dict(getattr(info, "OPTIONAL_PATHS", {})),
    )
