"""Build script for sageattention.

Static metadata lives in pyproject.toml. This file only provides what has to be computed:

* the version, read from sageattention/_version.py with a regex (the package is never
  imported at build time, so building needs neither torch nor triton);
* the optional compiled CUDA units (``cuda_extensions()``: ``_C`` for every arch, ``_C_fp8``
  for archs with FP8 tensor cores, ``_C_sm90`` for sm_90a when 9.0 is built);
* sageattention/_build_info.py, generated at build time by a custom ``build_py``.
"""

import datetime
import os
import re
import shutil
import subprocess

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py as _build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "sageattention"
CSRC = os.path.join(HERE, "csrc")
BUILD_INFO_NAME = "_build_info.py"


def read_version():
    path = os.path.join(HERE, PACKAGE, "_version.py")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    if not m:
        raise RuntimeError(f"cannot find __version__ in {path}")
    return m.group(1)


def _with_local_version(version):
    """The version plus SAGEATTENTION_LOCAL_VERSION (set by scripts/build_wheel.py to the row's
    cu{XYZ}torch{X.Y.Z} so the wheel is named as shared/DESIGN.md says)."""
    local = os.environ.get("SAGEATTENTION_LOCAL_VERSION", "").strip()
    if not local:
        return version
    if not re.fullmatch(r"[a-z0-9]+(\.[a-z0-9]+)*", local):
        raise SystemExit(f"SAGEATTENTION_LOCAL_VERSION={local!r} is not a PEP 440 local version "
                         "(lowercase letters, digits and dots, e.g. cu129torch2.8.0)")
    return f"{version}+{local}"


VERSION = _with_local_version(read_version())


def _say(msg):
    print(f"sageattention: {msg}", flush=True)


def _find_nvcc():
    """Path of nvcc from CUDA_HOME/CUDA_PATH, then /usr/local/cuda, then PATH, or None: the
    order of scripts/sagewheels/tools.py (the toolkit a variable names first, as in torch's
    cpp_extension, which also falls back to /usr/local/cuda)."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if os.name != "nt":
        roots.append("/usr/local/cuda")
    for root in filter(None, roots):
        for name in ("nvcc", "nvcc.exe"):
            cand = os.path.join(root, "bin", name)
            if os.path.isfile(cand):
                return cand
    return shutil.which("nvcc")


def _cuda_sources(folder):
    """The .cu/.cpp files directly inside csrc/<folder> (relative paths, sorted)."""
    root = os.path.join(CSRC, folder)
    if not os.path.isdir(root):
        return []
    return sorted(os.path.relpath(os.path.join(root, name), HERE) for name in os.listdir(root)
                  if name.endswith((".cu", ".cpp")))


# Archs built when TORCH_CUDA_ARCH_LIST is unset: the wheel builders' list.
DEFAULT_ARCHS = "8.0 8.6 8.9 9.0 12.0"
# Oldest nvcc that can target each arch (shared/FACTS.md); others are dropped with a message.
MIN_NVCC_FOR_ARCH = {"8.9": (12, 4), "9.0": (12, 3), "12.0": (12, 8)}
# The fp16-accumulating e4m3 MMA (pv_accum_dtype "fp32+fp16") needs PTX ISA 8.7.
MIN_NVCC_FP8_F16_ACCUM = (12, 8)

# Compiled units: (module, folder under csrc/, oldest arch it can run on). Each unit gets only
# the requested archs it can run on, as explicit -gencode flags (torch then adds none of its
# own), so a five-arch build never puts FP8 MMA code through sm_80.
# A unit with a fixed target gets only that one, when its arch is requested: sm_90a code
# (wgmma) runs on sm_90 GPUs and no other, so _C_sm90 is built for 9.0a alone, and only where
# 9.0 is (MIN_NVCC_FOR_ARCH: toolkits from 12.3, the first to assemble it).
UNITS = (
    ("_C", "", (8, 0), None),  # quantization + INT8 Q·Kᵀ / FP16 P·V attention
    ("_C_fp8", "fp8", (8, 9), None),  # FP8 V quantization + INT8 Q·Kᵀ / FP8 P·V attention
    ("_C_sm90", "sm90", (9, 0), "9.0a"),  # INT8 Q·Kᵀ / FP8 P·V attention on wgmma
)

# ABI flavours (SAGEATTENTION_ABI): "cpython" (one CPython, one torch), "abi3" (CPython's limited
# API, one torch: needs torch >= 2.6), "stable" (the libtorch stable ABI: one binary for torch
# SAGEATTENTION_TORCH_TARGET, default 2.10, and every later torch; csrc/torch_api.h).
ABI_FLAVOURS = ("cpython", "abi3", "stable")
MIN_TORCH_FOR_FLAVOUR = {"abi3": (2, 6), "stable": (2, 10)}
DEFAULT_STABLE_TARGET = "2.10"

# Filled by cuda_extensions() for _build_info.py.
BUILD_FACTS = {}


def _cuda_home(nvcc):
    """The toolkit root torch should use: CUDA_HOME/CUDA_PATH, the folder above nvcc's bin/, or
    /usr/local/cuda; the first that has include/cuda_runtime.h (nvcc may be a wrapper script)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                  os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    for root in filter(None, candidates):
        if os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
            return root
    return None


def _nvcc_version(nvcc):
    try:
        out = subprocess.run([nvcc, "--version"], stdout=subprocess.PIPE, text=True,
                             check=False).stdout
    except OSError:
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _arch_list(nvcc_version):
    """Archs to compile: TORCH_CUDA_ARCH_LIST (or the default) minus what this nvcc can't build."""
    requested = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
    archs = []
    for arch in requested.replace(";", " ").split():
        base = arch.replace("+PTX", "")
        need = MIN_NVCC_FOR_ARCH.get(base)
        if need and nvcc_version and nvcc_version < need:
            _say(f"dropping arch {arch}: it needs nvcc >= {need[0]}.{need[1]}, this nvcc is "
                 f"{nvcc_version[0]}.{nvcc_version[1]}")
            continue
        archs.append(arch)
    return archs


def _arch_tuple(arch):
    base = arch.replace("+PTX", "").rstrip("af")
    major, minor = base.split(".")
    return int(major), int(minor)


def _gencode(archs):
    """-gencode flags for archs like "8.6", "9.0a", "12.0+PTX" (PTX also embedded for +PTX)."""
    flags = []
    for arch in archs:
        name = arch.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{name},code=sm_{name}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{name},code=compute_{name}")
    return flags


def _abi_flavour(torch_version):
    """(flavour, stable target (major, minor) or None) from SAGEATTENTION_ABI /
    SAGEATTENTION_TORCH_TARGET; a bad value stops the build with what to set instead."""
    requested = os.environ.get("SAGEATTENTION_ABI", "").strip().lower()
    flavour = requested or ("abi3" if torch_version >= MIN_TORCH_FOR_FLAVOUR["abi3"] else "cpython")
    if flavour not in ABI_FLAVOURS:
        raise SystemExit(f"SAGEATTENTION_ABI={requested!r}: use one of {', '.join(ABI_FLAVOURS)}")
    need = MIN_TORCH_FOR_FLAVOUR.get(flavour)
    if need and torch_version < need:
        raise SystemExit(f"SAGEATTENTION_ABI={flavour} needs torch >= {need[0]}.{need[1]}, this "
                         f"torch is {torch_version[0]}.{torch_version[1]}; use "
                         f"SAGEATTENTION_ABI=cpython")
    if flavour != "stable":
        return flavour, None
    raw = os.environ.get("SAGEATTENTION_TORCH_TARGET", "").strip() or DEFAULT_STABLE_TARGET
    m = re.fullmatch(r"(\d+)\.(\d+)", raw)
    target = (int(m.group(1)), int(m.group(2))) if m else None
    if target is None or not MIN_TORCH_FOR_FLAVOUR["stable"] <= target <= torch_version[:2]:
        raise SystemExit(f"SAGEATTENTION_TORCH_TARGET={raw!r}: give the oldest torch the stable "
                         f"binary must run on as X.Y, between 2.10 and this torch "
                         f"({torch_version[0]}.{torch_version[1]})")
    return flavour, target


def cuda_extensions():
    """The compiled extension sageattention._C, or [] with a one-line reason.

    torch is imported only here and only when sources exist, so the pure-Python/Triton package
    never needs torch at build time. Building the extension needs the torch it will run with:
    `pip install . --no-build-isolation` (pip's isolated build environment has no torch).
    """
    if os.environ.get("SAGEATTENTION_SKIP_CUDA_BUILD", "").strip().lower() in ("1", "true", "yes", "on"):
        _say("SAGEATTENTION_SKIP_CUDA_BUILD=1, building the pure-Python/Triton package only")
        return []
    nvcc = _find_nvcc()
    if nvcc is None:
        _say("no CUDA toolkit found (no nvcc on PATH or in CUDA_HOME/bin), building the "
             "pure-Python/Triton package only")
        return []
    if not _cuda_sources(""):
        _say(f"no CUDA sources in csrc/ yet (nvcc: {nvcc}), building the pure-Python/Triton "
             "package only")
        return []
    cuda_home = _cuda_home(nvcc)
    if cuda_home is None:
        _say(f"found {nvcc} but no CUDA toolkit headers next to it (set CUDA_HOME), building "
             "the pure-Python/Triton package only")
        return []
    os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import
    # torch compiles with CUDA_HOME/bin/nvcc: check the archs against that one, not PATH's.
    home_nvcc = os.path.join(cuda_home, "bin", "nvcc.exe" if os.name == "nt" else "nvcc")
    nvcc = home_nvcc if os.path.isfile(home_nvcc) else nvcc
    try:
        import torch
        from torch.utils.cpp_extension import CUDAExtension
    except ImportError:
        _say("torch is not importable in this build environment (use `pip install . "
             "--no-build-isolation` next to your torch), building the pure-Python/Triton "
             "package only")
        return []
    if not torch.version.cuda:
        _say(f"torch {torch.__version__} has no CUDA support, building the pure-Python/Triton "
             "package only")
        return []
    nvcc_version = _nvcc_version(nvcc)
    archs = _arch_list(nvcc_version)
    if not archs:
        _say("no GPU arch left to build, building the pure-Python/Triton package only")
        return []
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
    torch_version = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    flavour, stable_target = _abi_flavour(torch_version)
    limited = flavour in ("abi3", "stable")  # both are abi3 for CPython (no pybind11)
    jobs = os.environ.get("MAX_JOBS") or str(max(1, min(os.cpu_count() or 1, 8)))
    nvcc_threads = os.environ.get("NVCC_THREADS", "2")
    f16_accum = bool(nvcc_version) and nvcc_version >= MIN_NVCC_FP8_F16_ACCUM
    cxx = ["/O2", "/Zc:preprocessor", "/permissive-", "/DUSE_CUDA=1"] if os.name == "nt" else ["-O3", "-DUSE_CUDA=1"]
    nvcc_common = ["-O3", "--threads", nvcc_threads, "-DUSE_CUDA=1",
                   f"-DSAGE_FP8_F16_ACCUM={int(f16_accum)}"]  # torch picks the C++ std
    if os.name == "nt":
        nvcc_common += ["-Xcompiler=/Zc:preprocessor", "-Xcompiler=/permissive-"]
    # Reproducible binaries: the same row built twice from one commit gives identical bytes
    # (tests/test_reproducible.py). Source paths (__FILE__ in error messages) are written
    # relative to the checkout, whatever folder the build ran in; the symbol table, which holds
    # the names of nvcc's temporary files, is stripped (the dynamic symbols stay); MSVC stamps no
    # time and no random GUID with /Brepro. nvcc derives the names of internal-linkage device
    # symbols from the source file's absolute path, so the build folder must be the same too
    # (build_wheel.py builds from OUT/staged-source; CI's folders are fixed per runner).
    if os.name == "nt":
        cxx += ["/Brepro"]
        nvcc_common += ["-Xcompiler=/Brepro"]
        link = ["/Brepro"]
    else:
        cxx += [f"-ffile-prefix-map={HERE}=."]
        nvcc_common += ["-Xcompiler", f"-ffile-prefix-map={HERE}=."]
        link = ["-s"]
    if stable_target:
        # TORCH_STABLE_ONLY makes any ATen/c10 header an error; TORCH_TARGET_VERSION hides the
        # stable APIs newer than the target, so the binary only calls what that torch exports.
        target = f"0x{stable_target[0]:02x}{stable_target[1]:02x}{0:012x}"
        stable = ["-DSAGE_STABLE_ABI", "-DTORCH_STABLE_ONLY", f"-DTORCH_TARGET_VERSION={target}"]
        cxx += [("/D" + d[2:]) if os.name == "nt" else d for d in stable]
        nvcc_common += stable
    os.environ.setdefault("MAX_JOBS", jobs)
    extensions, unit_archs = [], {}
    for module, folder, oldest, fixed in UNITS:
        if fixed:
            mine = [fixed] if any(_arch_tuple(a) == oldest for a in archs) else []
        else:
            mine = [a for a in archs if _arch_tuple(a) >= oldest]
        if not mine and fixed:
            _say(f"skipping unit {module}: it is built for sm_{fixed.replace('.', '')} only, "
                 f"and {oldest[0]}.{oldest[1]} is not among the archs {' '.join(archs)}")
            continue
        if not mine:
            _say(f"skipping unit {module}: none of the archs {' '.join(archs)} is sm_"
                 f"{oldest[0]}{oldest[1]} or newer")
            continue
        unit_archs[module] = tuple(a.replace("+PTX", "") for a in mine)
        extensions.append(CUDAExtension(
            name=f"{PACKAGE}.{module}",
            sources=_cuda_sources(folder),
            include_dirs=[CSRC],
            py_limited_api=limited,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc_common + _gencode(mine)},
            extra_link_args=link,
        ))
    if "_C" not in unit_archs:
        return []
    BUILD_FACTS.update(
        # For the stable flavour: the oldest torch it runs on (ops.py accepts it and later).
        TORCH_VERSION=(f"{stable_target[0]}.{stable_target[1]}.0" if stable_target else
                       re.match(r"[\d.]+", torch.__version__).group(0).rstrip(".")),
        TORCH_BUILT_WITH=re.match(r"[\d.]+", torch.__version__).group(0).rstrip("."),
        CUDA_VERSION=torch.version.cuda,
        CUDA_ARCHS=unit_archs["_C"],
        ABI_FLAVOUR=flavour,
        PY_LIMITED_API="cp310" if torch_version >= (2, 10) else "cp39",
        OPTIONAL_PATHS={"fp8_archs": unit_archs.get("_C_fp8", ()),
                        "fp8_pv_f16_accum": f16_accum and "_C_fp8" in unit_archs,
                        "sm90a_archs": unit_archs.get("_C_sm90", ())},
    )
    units = ", ".join(f"{PACKAGE}.{m} for sm {' '.join(a)}" for m, a in unit_archs.items())
    _say(f"building {units} "
         f"with nvcc {'.'.join(map(str, nvcc_version or ()))} against torch {torch.__version__} "
         f"({BUILD_FACTS['ABI_FLAVOUR']}, MAX_JOBS={os.environ['MAX_JOBS']}, fp16-accumulating "
         f"FP8 MMA {'on' if BUILD_FACTS['OPTIONAL_PATHS']['fp8_pv_f16_accum'] else 'off'})")
    return extensions


EXT_MODULES = cuda_extensions()


def _git_sha():
    # A build from a staged copy (scripts/build_wheel.py) has no .git: the plan passes the commit.
    given = os.environ.get("SAGEATTENTION_GIT_SHA", "").strip().lower()
    if given:
        if not re.fullmatch(r"[0-9a-f]{40,64}", given):
            raise SystemExit(f"SAGEATTENTION_GIT_SHA={given!r}: give the commit as 40 or 64 hex digits")
        return given
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=10,
        )
        sha = out.stdout.decode("ascii", "replace").strip()
        return sha if re.fullmatch(r"[0-9a-f]{40,64}", sha) else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _build_time():
    """SOURCE_DATE_EPOCH (the commit's time in reproducible builds) or now, ISO 8601 UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch.isdigit()
            else datetime.datetime.now(datetime.timezone.utc))
    return when.replace(microsecond=0).isoformat()


def build_info_source():
    compiled = bool(EXT_MODULES)
    fields = [
        ("VERSION", VERSION),
        ("GIT_SHA", _git_sha()),
        ("BUILT_AT", _build_time()),
        # The values below describe the compiled extension; without one they are empty.
        ("TORCH_VERSION", BUILD_FACTS.get("TORCH_VERSION")),
        ("CUDA_VERSION", BUILD_FACTS.get("CUDA_VERSION")),
        ("CUDA_ARCHS", BUILD_FACTS.get("CUDA_ARCHS", ())),
        ("TORCH_BUILT_WITH", BUILD_FACTS.get("TORCH_BUILT_WITH")),
        ("ABI_FLAVOUR", BUILD_FACTS.get("ABI_FLAVOUR", "none")),
        ("COMPILED_EXTENSION", compiled),
        ("OPTIONAL_PATHS", BUILD_FACTS.get("OPTIONAL_PATHS", {})),
    ]
    lines = [
        "# Generated by setup.py at build time. Do not edit and do not commit (it is git-ignored).",
        "# A source checkout without a build has no such file: runtime code treats that as",
        "# 'source checkout, no compiled extension'.",
        "",
    ]
    lines += [f"{name} = {value!r}" for name, value in fields]
    return "\n".join(lines) + "\n"


class build_py(_build_py):
    """build_py that also writes sageattention/_build_info.py.

    Non-editable builds get it in build_lib (so it lands in the wheel). Editable installs
    (`pip install -e .`) import the package from the source tree, so there it is written into
    the source tree instead.
    """

    def run(self):
        super().run()
        targets = []
        if getattr(self, "editable_mode", False):
            targets.append(os.path.join(HERE, PACKAGE, BUILD_INFO_NAME))
        else:
            targets.append(os.path.join(self.build_lib, PACKAGE, BUILD_INFO_NAME))
        for path in targets:
            _write_build_info(path)

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            path = os.path.join(self.build_lib, PACKAGE, BUILD_INFO_NAME)
            if path not in outputs:
                outputs.append(path)
        return outputs


def _write_build_info(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(build_info_source())
    _say(f"wrote {path}")


def _cmdclass():
    cmdclass = {"build_py": build_py}
    if EXT_MODULES:
        from torch.utils.cpp_extension import BuildExtension

        class build_ext(BuildExtension):
            """torch's BuildExtension; an in-place build also records itself in the source
            tree (`python setup.py build_ext --inplace` is how the tests build the extension)."""

            def run(self):
                super().run()
                if self.inplace:
                    _write_build_info(os.path.join(HERE, PACKAGE, BUILD_INFO_NAME))

        cmdclass["build_ext"] = build_ext
    return cmdclass


setup(
    version=VERSION,
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    ext_modules=EXT_MODULES,
    cmdclass=_cmdclass(),
    options=({"bdist_wheel": {"py_limited_api": BUILD_FACTS["PY_LIMITED_API"]}}
             if BUILD_FACTS.get("ABI_FLAVOUR") in ("abi3", "stable") else {}),
)
