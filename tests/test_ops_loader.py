"""sageattention.ops: the loader of the compiled extension explains every failure."""
import pytest

from sageattention import ops

BUILT = ops.BuildInfo(version="2.2.0.post1", torch_version="2.8.0", cuda_version="12.9",
                      cuda_archs=("8.0", "8.6", "8.9", "9.0", "12.0"), abi_flavour="abi3",
                      compiled_extension=True)


@pytest.fixture(autouse=True)
def fresh_loader(monkeypatch):
    ops.reset()
    monkeypatch.delenv("SAGEATTENTION_STRICT", raising=False)
    yield
    ops.reset()


@pytest.mark.parametrize("torch_v,cuda_v,expect", [
    ("2.8.0+cu129", "12.9", None),
    ("2.8.0", "12.9", None),
    ("2.9.1+cu129", "12.9", "torch versions differ"),
    ("2.8.0+cu128", "12.8", "CUDA variants differ"),
    ("2.8.0+cpu", None, "CPU-only"),
])
def test_environment_mismatch(torch_v, cuda_v, expect):
    got = ops.environment_mismatch(BUILT, torch_v, cuda_v)
    assert (got is None) if expect is None else (expect in got)


def test_stable_abi_accepts_newer_torch_only():
    stable = ops.BuildInfo(version="x", torch_version="2.10.0", cuda_version="13.0",
                           abi_flavour="stable", compiled_extension=True)
    assert ops.environment_mismatch(stable, "2.11.0+cu130", "13.0") is None
    assert "2.10.0 or newer" in ops.environment_mismatch(stable, "2.9.1+cu130", "13.0")


def test_no_extension_is_silent(recwarn):
    assert ops.load(ops.BuildInfo(version="x")) is None
    assert not recwarn.list


def test_torch_mismatch_message_names_both_sides(monkeypatch):
    monkeypatch.setattr(ops.torch, "__version__", "2.9.1+cu128")
    monkeypatch.setattr(ops.torch.version, "cuda", "12.8")
    with pytest.warns(RuntimeWarning) as rec:
        assert ops.load(BUILT, importer=lambda name: pytest.fail("must not import")) is None
    msg = str(rec[0].message)
    for part in ("torch 2.8.0", "cu129", "torch 2.9.1+cu128", "wheel built for torch 2.9.1 cu128",
                 "Triton", "SAGEATTENTION_STRICT"):
        assert part in msg, part
    ops.load(BUILT)  # reported once per process
    assert len(rec) == 1


def test_dll_failure_is_explained_and_strict_raises(monkeypatch):
    monkeypatch.setattr(ops.torch, "__version__", "2.8.0+cu129")
    monkeypatch.setattr(ops.torch.version, "cuda", "12.9")

    def broken(name):
        raise ImportError("DLL load failed while importing _C: The specified module could not be found.")

    with pytest.warns(RuntimeWarning, match="DLL load failed"):
        assert ops.load(BUILT, importer=broken) is None
    ops.reset()
    monkeypatch.setenv("SAGEATTENTION_STRICT", "1")
    with pytest.raises(RuntimeError, match="failed to load"):
        ops.load(BUILT, importer=broken)


def test_successful_load_returns_the_module(monkeypatch):
    monkeypatch.setattr(ops.torch, "__version__", "2.8.0+cu129")
    monkeypatch.setattr(ops.torch.version, "cuda", "12.9")
    sentinel = object()
    assert ops.load(BUILT, importer=lambda name: sentinel) is sentinel


def test_arch_check():
    assert ops.arch_supported(BUILT, (8, 6)) is None
    reason = ops.arch_supported(BUILT, (7, 5))
    assert "sm_75" in reason and "sm_80 sm_86 sm_89 sm_90 sm_120" in reason


def test_build_info_of_a_source_checkout_has_no_extension():
    info = ops.build_info()
    assert info.version and isinstance(info.cuda_archs, tuple)


def test_strict_mode_raises_on_every_call(monkeypatch):
    monkeypatch.setattr(ops.torch, "__version__", "2.9.1+cu128")
    monkeypatch.setattr(ops.torch.version, "cuda", "12.8")
    monkeypatch.setenv("SAGEATTENTION_STRICT", "1")
    for _ in range(2):
        with pytest.raises(RuntimeError, match="cannot be used"):
            ops.load(BUILT)


def test_fp8_unit_failure_is_reported_and_the_rest_still_loads(monkeypatch):
    import types

    monkeypatch.setattr(ops.torch, "__version__", "2.8.0+cu129")
    monkeypatch.setattr(ops.torch.version, "cuda", "12.9")
    monkeypatch.setattr(ops, "_register_fakes", lambda: None)
    info = ops.BuildInfo(**{**BUILT.__dict__, "optional_paths": {"fp8_archs": ("8.9", "9.0")}})
    base = types.ModuleType("sageattention._C")

    def importer(name):
        if name == ops.FP8_MODULE:
            raise ImportError("DLL load failed while importing _C_fp8")
        return base

    with pytest.warns(RuntimeWarning, match="FP8 unit failed to load"):
        assert ops.load(info, importer=importer) is base
    assert ops._state.fp8_module is None


def test_fp8_unit_archs_come_from_the_build(monkeypatch):
    monkeypatch.setattr(ops, "usable_on", lambda device: True)
    monkeypatch.setattr(ops, "_device_index", lambda device: 0)
    monkeypatch.setattr(ops, "build_info", lambda: ops.BuildInfo(
        version="x", optional_paths={"fp8_archs": ("8.9", "9.0")}))
    ops._state.fp8_module = object()
    for cc, want in (((8, 9), True), ((9, 0), True), ((12, 0), False), ((8, 6), False)):
        monkeypatch.setattr(ops.torch.cuda, "get_device_capability", lambda i, cc=cc: cc)
        assert ops.fp8_usable_on(ops.torch.device("cuda", 0)) is want, cc


def test_sm90a_unit_failure_is_reported_and_the_rest_still_loads(monkeypatch):
    import types

    monkeypatch.setattr(ops.torch, "__version__", "2.8.0+cu129")
    monkeypatch.setattr(ops.torch.version, "cuda", "12.9")
    monkeypatch.setattr(ops, "_register_fakes", lambda: None)
    info = ops.BuildInfo(**{**BUILT.__dict__, "optional_paths": {
        "fp8_archs": ("8.9", "9.0"), "sm90a_archs": ("9.0a",)}})
    base = types.ModuleType("sageattention._C")

    def importer(name):
        if name == ops.SM90_MODULE:
            raise ImportError("undefined symbol while importing _C_sm90")
        return base

    with pytest.warns(RuntimeWarning, match=r"Hopper \(sm_90a\) unit failed to load"):
        assert ops.load(info, importer=importer) is base
    assert ops._state.sm90_module is None and ops._state.fp8_module is base


def test_sm90a_unit_runs_on_sm90_only(monkeypatch):
    """sm_90a code runs on sm_90 GPUs and no other (not on sm_100/sm_120, unlike plain sm_90)."""
    monkeypatch.setattr(ops, "fp8_usable_on", lambda device: True)
    monkeypatch.setattr(ops, "_device_index", lambda device: 0)
    monkeypatch.setattr(ops, "build_info", lambda: ops.BuildInfo(
        version="x", optional_paths={"fp8_archs": ("8.9", "9.0", "12.0"), "sm90a_archs": ("9.0a",)}))
    ops._state.sm90_module = object()
    for cc, want in (((9, 0), True), ((10, 0), False), ((12, 0), False), ((8, 9), False)):
        monkeypatch.setattr(ops.torch.cuda, "get_device_capability", lambda i, cc=cc: cc)
        assert ops.sm90a_usable_on(ops.torch.device("cuda", 0)) is want, cc
    ops._state.sm90_module = None
    monkeypatch.setattr(ops.torch.cuda, "get_device_capability", lambda i: (9, 0))
    assert ops.sm90a_usable_on(ops.torch.device("cuda", 0)) is False  # the unit did not load


def test_any_import_error_of_the_extension_falls_back_to_triton(monkeypatch):
    """A RuntimeError at import (an operator registered twice, ...) is explained like a DLL
    failure, not raised into sageattn's callers."""
    monkeypatch.setattr(ops.torch, "__version__", "2.8.0+cu129")
    monkeypatch.setattr(ops.torch.version, "cuda", "12.9")

    def broken(name):
        raise RuntimeError("Tried to register an operator with the same name twice")

    with pytest.warns(RuntimeWarning, match="registered|register an operator"):
        assert ops.load(BUILT, importer=broken) is None
