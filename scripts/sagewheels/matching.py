"""Which wheel of a manifest fits a machine, and if none does, what to change.

The one matching rule (shared/MANIFEST.md) for the index page (site_page.html carries the same
rule in JavaScript; tests/matching_cases.json drives both), the installer and the doctor. Pure
functions over manifest entries (dicts as in manifest.json) and a machine description:

    {"platform": "windows", "python_tag": "cp312", "torch": "2.8.0+cu129", "gpu_archs": ["8.9"]}

`torch` is torch.__version__ (None: not installed); `gpu_archs` the compute capabilities of
the visible GPUs (an empty list: none visible, nothing to check). Standard library only and no
imports from the rest of sagewheels: the stand-alone installer must be able to carry this file.

A wheel fits when every field agrees:
  platform  equal;
  python    cpython: the same cpXY tag; abi3 / stable: the interpreter is python_tag or newer;
  torch     cpython / abi3: the same release (the +local part aside); stable: that release or newer;
  cuda      cpython / abi3: the same variant (cu129); stable: a variant of the same CUDA major;
  gpu       every visible GPU X.Y is covered by an arch of the wheel: X.Z with Z <= Y, X.Ya for
            exactly X.Y (arch-specific code runs on that arch only), or a +PTX arch <= X.Y.
"""
from __future__ import annotations

import functools
import re

FIELDS = ("platform", "python", "torch", "cuda", "gpu")
# How far a change is for a person: another OS or GPU is rarely an option, another Python is
# hard for an embedded one (ComfyUI portable), another torch build is the usual fix. The
# nearest wheels are those whose failed fields weigh least.
WEIGHTS = {"platform": 16, "gpu": 8, "python": 4, "torch": 2, "cuda": 1}
NEAREST = 3  # wheels explained when none fits
FLAVOUR_RANK = {"cpython": 2, "abi3": 1, "stable": 0}  # among fits: the most specific build first
PLATFORMS = ("windows", "linux")
TORCH_INDEX = "https://download.pytorch.org/whl/"
# The one command whose output the index page and the installer read (parse_machine_line).
ONE_LINER = ("python -c \"import sys,platform,torch as t;c=t.cuda;print(platform.system().lower(),"
             "'cp'+str(sys.version_info[0])+str(sys.version_info[1]),t.__version__,"
             "*['.'.join(map(str,c.get_device_capability(i))) for i in range(c.device_count())])\"")

# fullmatch and [0-9], not $ and \d: Python's $ also matches before a final newline and its \d
# matches any Unicode digit; the page's JavaScript must read the same strings the same way.
VERSION_RE = re.compile(r"v?([0-9]+(?:\.[0-9]+)*)(?:(a|b|rc)([0-9]+))?(?:\.post([0-9]+))?(?:\.dev([0-9]+))?")
CP_RE = re.compile(r"cp([0-9])([0-9]+)")
CUDA_RE = re.compile(r"cu([0-9]+)([0-9])")
GPU_RE = re.compile(r"([0-9]+)\.([0-9]+)")
ARCH_RE = re.compile(r"([0-9]+)\.([0-9]+)(a?)(\+PTX)?")
NO_DEV = 10 ** 9  # a release sorts after its .devN builds
PRE_RANK = {"a": 0, "b": 1, "rc": 2}


# ---- small parsers (each mirrored one to one in site_page.html) ----------------------------

def version_key(text) -> list | None:
    """A sort key for the normalized PEP 440 versions the wheels and torch use, or None."""
    m = VERSION_RE.fullmatch(text_of(text))
    if not m:
        return None
    release = [int(x) for x in m.group(1).split(".")]
    release = (release + [0] * 6)[:6]  # 2.8 == 2.8.0
    pre, pre_n, post, dev = m.group(2), m.group(3), m.group(4), m.group(5)
    rank = PRE_RANK[pre] if pre else (-1 if dev is not None and post is None else 3)
    return release + [rank, int(pre_n or 0), int(post) if post is not None else -1,
                      int(dev) if dev is not None else NO_DEV]


def compare_keys(a, b) -> int:
    """-1, 0 or 1; None (unreadable) sorts below everything."""
    if a is None or b is None:
        return (a is not None) - (b is not None)
    return (a > b) - (a < b)


def show(value) -> str:
    """A value in a message: None (a field the machine or wheel lacks) reads "unknown"."""
    return "unknown" if value is None else str(value)


def text_of(value) -> str:
    """Strings as they are, anything else (None, numbers from hand-written JSON) as ""."""
    return value if isinstance(value, str) else ""


def is_stable(wheel: dict) -> bool:
    return wheel.get("torch_and_higher") is True


def flavour_rank(wheel: dict) -> int:
    return FLAVOUR_RANK.get(text_of(wheel.get("abi_flavour")), -1)


def split_torch(text) -> tuple:
    """("2.8.0", "cu129") from "2.8.0+cu129"; ("2.8.0", None) without a local part."""
    public, _, local = text_of(text).partition("+")
    return public, (local or None)


def cp_tuple(tag) -> list | None:
    m = CP_RE.fullmatch(text_of(tag))
    return [int(m.group(1)), int(m.group(2))] if m else None


def cp_dotted(tag) -> str:
    t = cp_tuple(tag)
    return f"{t[0]}.{t[1]}" if t else show(tag)


def cuda_major(variant) -> int | None:
    m = CUDA_RE.fullmatch(text_of(variant))
    return int(m.group(1)) if m else None


def arch_covers(arch: str, gpu: list) -> bool:
    """Does the wheel's arch (8.6, 9.0a, 8.0+PTX) run on a GPU of capability [major, minor]?"""
    m = ARCH_RE.fullmatch(text_of(arch))
    if not m:
        return False  # a form this rule does not know runs nowhere for sure
    major, minor, specific, ptx = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if specific:
        return gpu == [major, minor]
    if ptx:
        return [major, minor] <= gpu
    return major == gpu[0] and minor <= gpu[1]


def gpu_covered(gpu: str, archs: list) -> bool:
    m = GPU_RE.fullmatch(text_of(gpu))
    return bool(m) and any(arch_covers(a, [int(m.group(1)), int(m.group(2))]) for a in archs)


# ---- one field at a time: None when it agrees, else a problem with what to change ----------

def problem(field: str, have, need, message: str) -> dict:
    return {"field": field, "have": have, "need": need, "message": message}


def torch_install(wheel: dict) -> str:
    """The pip command that brings the torch this wheel needs."""
    torch, cuda = show(wheel.get("torch")), show(wheel.get("cuda"))
    spec = f'"torch>={torch}"' if is_stable(wheel) else f"torch=={torch}"
    return f"pip install {spec} --index-url {TORCH_INDEX}{cuda}"


def platform_problem(wheel: dict, machine: dict) -> dict | None:
    have, need = machine.get("platform"), wheel.get("platform")
    if have == need:
        return None
    h, n = show(have), show(need)
    return problem("platform", have, need, f"platform: this wheel is for {n}, this machine is {h}: "
                                           f"pick a wheel built for {h}")


def python_problem(wheel: dict, machine: dict) -> dict | None:
    have, need = machine.get("python_tag"), wheel.get("python_tag")
    mine, theirs = cp_tuple(have), cp_tuple(need)
    h, n = show(have), show(need)
    if mine is None:
        return problem("python", have, need, f"Python: '{h}' is not a CPython tag such as cp312: "
                                             "give the Python as cpXY")
    if theirs is None:
        return problem("python", have, need, f"Python: this wheel's tag '{n}' is not cpXY: it fits "
                                             "no CPython")
    if wheel.get("abi_flavour") == "cpython":
        if mine == theirs:
            return None
        return problem("python", have, need, f"Python: this wheel is for {n} only, yours is {h}: "
                                             f"use Python {cp_dotted(need)}")
    if mine >= theirs:
        return None
    return problem("python", have, need, f"Python: this wheel needs {n} or newer, yours is {h}: "
                                         f"use Python {cp_dotted(need)} or newer")


def torch_problem(wheel: dict, machine: dict) -> dict | None:
    have, need = machine.get("torch"), wheel.get("torch")
    stable = is_stable(wheel)
    h, n = show(have), show(need)
    if have is None or have == "":
        return problem("torch", have, need, f"torch: not installed: install torch first "
                                            f"({torch_install(wheel)})")
    public = split_torch(have)[0]
    mine = version_key(public)
    if mine is None:
        return problem("torch", have, need, f"torch: cannot read the version '{h}': give it as "
                                            "X.Y.Z+cuXYZ (what torch.__version__ prints)")
    order = compare_keys(mine, version_key(need))
    if order == 0 or (stable and order > 0):
        return None
    if stable:
        return problem("torch", have, need, f"torch: this wheel needs torch {n} or newer, yours is "
                                            f"{h}: {torch_install(wheel)}")
    return problem("torch", have, need, f"torch: this wheel is for torch {n}, yours is {h}: "
                                        f"{torch_install(wheel)}, or pick a wheel built for torch "
                                        f"{public}")


def cuda_problem(wheel: dict, machine: dict) -> dict | None:
    have, need = machine.get("torch"), wheel.get("cuda")
    if version_key(split_torch(have)[0]) is None:
        return None  # no torch, or an unreadable one: the torch field already says so
    local = split_torch(have)[1]
    n = show(need)
    if local is None:
        return problem("cuda", local, need, f"CUDA: torch {have} does not say its CUDA variant: give "
                                            "the version with its +cuXYZ part (torch.__version__)")
    if cuda_major(local) is None:
        return problem("cuda", local, need, f"CUDA: your torch is {have}, not a CUDA build: install "
                                            f"a CUDA build of torch ({torch_install(wheel)})")
    if is_stable(wheel):
        major = cuda_major(need)
        if major is not None and cuda_major(local) == major:
            return None
        return problem("cuda", local, need, f"CUDA: this wheel needs a CUDA {show(major)} build of "
                                            f"torch ({n} or another cu{show(major)}x), yours is "
                                            f"{local}: {torch_install(wheel)}")
    if local == need:
        return None
    return problem("cuda", local, need, f"CUDA: this wheel is for {n} builds of torch, yours is "
                                        f"{local}: {torch_install(wheel)}")


def gpu_problems(wheel: dict, machine: dict) -> list:
    archs = wheel.get("archs")
    archs = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    built = " ".join(archs) or "no GPU"
    found = []
    gpus = machine.get("gpu_archs")
    for gpu in gpus if isinstance(gpus, list) else []:
        if not GPU_RE.fullmatch(text_of(gpu)):
            found.append(problem("gpu", gpu, archs, f"GPU: cannot read the compute capability "
                                                    f"'{show(gpu)}': give it as X.Y"))
        elif not gpu_covered(gpu, archs):
            found.append(problem("gpu", gpu, archs, f"GPU: compute capability {gpu} has no kernels "
                                                    f"in this wheel (built for {built}): use a GPU "
                                                    "it covers, or build from source with "
                                                    f"TORCH_CUDA_ARCH_LIST={gpu}"))
    return found


def wheel_problems(wheel: dict, machine: dict) -> list:
    """Every field of `wheel` that does not fit `machine`, in FIELDS order; [] when it fits."""
    checks = [platform_problem(wheel, machine), python_problem(wheel, machine),
              torch_problem(wheel, machine), cuda_problem(wheel, machine)]
    return [p for p in checks if p is not None] + gpu_problems(wheel, machine)


# ---- all wheels at once ---------------------------------------------------------------------

def score(problems: list) -> int:
    return sum(WEIGHTS[p["field"]] for p in problems)


def preference(a: dict, b: dict) -> int:
    """Order of wheels that are otherwise equal: newest package version, then the most
    specific build (cpython > abi3 > stable), then the newest torch, then the file name."""
    for order in (-compare_keys(version_key(split_torch(a.get("version"))[0]),
                                version_key(split_torch(b.get("version"))[0])),
                  flavour_rank(b) - flavour_rank(a),
                  -compare_keys(version_key(a.get("torch")), version_key(b.get("torch")))):
        if order:
            return 1 if order > 0 else -1
    fa, fb = text_of(a.get("filename")), text_of(b.get("filename"))
    return (fa > fb) - (fa < fb)


def explain(wheels: list, machine: dict) -> dict:
    """The wheel that fits (the preferred one when several do) and, when none does, the nearest
    wheels with their failed fields and the deduplicated reasons. Plain JSON values only."""
    checked = [(w, wheel_problems(w, machine)) for w in wheels]
    fits = sorted((w for w, found in checked if not found), key=functools.cmp_to_key(preference))
    result = {"wheel": None, "triton": None, "index": None, "fits": [w.get("filename") for w in fits],
              "nearest": [], "why": []}
    if fits:
        best = fits[0]
        result.update(wheel=best.get("filename"), triton=best.get("triton"), index=best.get("index"))
        return result
    if not wheels:
        result["why"] = ["the manifest lists no wheels"]
        return result
    same_os = [(w, f) for w, f in checked if w.get("platform") == machine.get("platform")]
    pool = same_os or checked  # another OS only when the machine's OS has no wheel at all

    def order(a, b):
        return (score(a[1]) > score(b[1])) - (score(a[1]) < score(b[1])) or preference(a[0], b[0])

    nearest = sorted(pool, key=functools.cmp_to_key(order))[:NEAREST]
    result["nearest"] = [{"filename": w.get("filename"), "problems": found} for w, found in nearest]
    for _, found in nearest:
        for p in found:
            if p["message"] not in result["why"]:
                result["why"].append(p["message"])
    return result


# ---- the pasted output of ONE_LINER ---------------------------------------------------------

def parse_machine_line(text) -> dict:
    """{"machine": {...}, "error": None} from ONE_LINER's output (its last non-empty line:
    PLATFORM cpXY TORCH [GPU ...]), or {"machine": None, "error": what to do}."""
    text = text_of(text)
    if "No module named 'torch'" in text:
        return {"machine": None, "error": "torch is not installed in that Python: install torch first"}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return {"machine": None, "error": "nothing pasted: run the command and paste the line it prints"}
    tokens = lines[-1].split()
    if len(tokens) < 3:
        return {"machine": None, "error": f"expected 'PLATFORM cpXY TORCH [GPU ...]', got '{lines[-1]}'"}
    platform, python_tag, torch, gpus = tokens[0].lower(), tokens[1].lower(), tokens[2], tokens[3:]
    if platform not in PLATFORMS:
        return {"machine": None, "error": f"platform '{tokens[0]}': the wheels are for windows and "
                                          "linux only"}
    if cp_tuple(python_tag) is None:
        return {"machine": None, "error": f"'{tokens[1]}' is not a CPython tag such as cp312"}
    bad = [g for g in gpus if not GPU_RE.fullmatch(g)]
    if bad:
        return {"machine": None, "error": f"'{bad[0]}' is not a compute capability such as 8.9"}
    return {"machine": {"platform": platform, "python_tag": python_tag, "torch": torch,
                        "gpu_archs": gpus}, "error": None}
