"""Build the wheel of one build_matrix.yaml row (or of this machine's environment).

    python scripts/build_wheel.py --row ID [--dry-run] [--out wheelhouse] [--archs "8.0"]
    python scripts/build_wheel.py --host [--dry-run] [--out wheelhouse] [--archs "8.0"]

The plan (environment, commands, expected wheel name) is printed first; `--dry-run` stops
there, so the plan of any row (Windows rows too) can be inspected on any machine. A real build
refuses a row whose toolchain does not match this machine (platform, torch version and CUDA
variant, nvcc version) and says what is installed and what the row needs. The wheel is built
against the installed torch (`pip wheel --no-build-isolation`: pip never touches torch), named
`sageattention-{version}+{local}-{tags}.whl` as shared/DESIGN.md says, and its tags checked.
The built wheel is repaired (auditwheel on Linux to the row's manylinux policy, delvewheel on
Windows), with torch's and CUDA's libraries excluded; scripts/sagewheels/check.py inspects it.
"""
from __future__ import annotations

import argparse
import os
import platform as platform_mod
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import matrix, tools
from .host import host_platform, host_row, nvcc_version, toolchain_mismatch
from .repair import repair_command

ROOT = matrix.ROOT
GIB = 1024 ** 3
# Memory per nvcc process and per extra --threads thread: the largest process of the five-arch
# build peaked at 1.2 GB (benchmarks/results/logs/wheel-build-device.txt); kept at 2x that.
GIB_PER_JOB = 4
GIB_PER_THREAD = 2
# The programs a real build of a row runs (scripts/sagewheels/tools.py finds them): nvcc and ninja for
# torch's cpp_extension, then the repair tool (auditwheel runs patchelf itself).
BUILD_TOOLS = {"linux": ("nvcc", "ninja", "auditwheel", "patchelf"),
               "windows": ("nvcc", "ninja", "delvewheel")}


@dataclass
class Plan:
    row: matrix.Row
    env: dict
    commands: list
    wheel: str  # the final name (after repair: manylinux on Linux)
    built: str  # the name pip gives it (linux_x86_64 on Linux before auditwheel)
    out: Path
    tools: dict = field(default_factory=dict)  # program -> path on this machine, or None

    @property
    def missing_tools(self) -> list:
        """One line per program the build needs and this machine lacks."""
        return [f"{name} not found: it comes from {tools.PROVIDERS[name]}"
                for name, path in self.tools.items() if path is None]

    def command_env(self, base: dict) -> dict:
        """`base` plus the plan's variables, with the resolved programs' folders first on PATH
        (auditwheel looks patchelf up on PATH, torch's cpp_extension looks for ninja there)."""
        return tools.subprocess_env({**base, **self.env}, [p for p in self.tools.values() if p])

    def render(self) -> str:
        lines = [(f"row {self.row.id} ({self.row.platform}, torch {self.row.torch} {self.row.cuda}, "
                  f"toolkit {self.row.toolkit}, abi {self.row.abi})"), "environment:"]
        lines += [f"  {k}={v}" for k, v in self.env.items()]
        lines.append("tools (this machine):")
        lines += [f"  {name}: {path or 'NOT FOUND, from ' + tools.PROVIDERS[name]}"
                  for name, path in self.tools.items()]
        lines.append("commands:")
        lines += [f"  {' '.join(cmd)}" for cmd in self.commands]
        lines.append(f"built wheel: {self.out / 'unrepaired' / self.built}")
        lines.append(f"repaired wheel: {self.out / self.wheel}")
        return "\n".join(lines)


def sources_per_unit() -> int:
    """The most source files of one compiled unit (csrc/ or csrc/fp8/): setuptools builds the
    units one after the other, so more parallel jobs than that sit idle."""
    counts = [len([f for f in folder.iterdir() if f.suffix in (".cu", ".cpp")])
              for folder in (ROOT / "csrc", ROOT / "csrc" / "fp8") if folder.is_dir()]
    return max(counts + [1])


def parallelism(cores: int | None = None, mem_bytes: int | None = None, n_archs: int = 5,
                n_sources: int | None = None) -> tuple:
    """(MAX_JOBS, NVCC_THREADS) from the cores and memory of the build machine: one job per
    source file of a unit, the remaining cores to nvcc's per-arch threads (--threads compiles
    the -gencode targets of one file in parallel)."""
    cores = cores or os.cpu_count() or 1
    if mem_bytes is None:
        try:
            mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # Windows: no sysconf
            mem_bytes = 8 * GIB
    n_sources = n_sources or sources_per_unit()
    jobs = max(1, min(cores, n_sources, mem_bytes // (GIB_PER_JOB * GIB)))
    threads = max(1, min(n_archs, cores // jobs, mem_bytes // (jobs * GIB_PER_THREAD * GIB)))
    return int(jobs), int(threads)


def make_plan(row: matrix.Row, out: Path, python: str = sys.executable, archs=None,
              cores=None, mem_bytes=None, find=None) -> Plan:
    jobs, threads = parallelism(cores, mem_bytes, n_archs=len(archs or row.archs))
    env = {
        "TORCH_CUDA_ARCH_LIST": " ".join(archs or row.archs),
        "MAX_JOBS": str(jobs),
        "NVCC_THREADS": str(threads),
        "SAGEATTENTION_LOCAL_VERSION": row.local_version,
        "SAGEATTENTION_ABI": row.abi,
    }
    epoch = source_date_epoch()
    if epoch:
        # Reproducible wheels: zip timestamps and _build_info's BUILT_AT come from the commit.
        env["SOURCE_DATE_EPOCH"] = epoch
    sha = checkout_sha()
    if sha:
        # The staged copy has no .git: setup.py records the commit from here in _build_info.
        env["SAGEATTENTION_GIT_SHA"] = sha
    if row.abi == "stable":
        # The oldest torch the binary must run on: stable APIs newer than that stay hidden.
        env["SAGEATTENTION_TORCH_TARGET"] = row.torch_minor
    if row.platform == "windows":
        # torch 2.10's cpp_extension refuses an active MSVC developer prompt without it.
        env["DISTUTILS_USE_SDK"] = "1"
    find = find or tools.find
    found = {name: find(name) for name in BUILD_TOOLS[row.platform]}
    home = cuda_home_of(found.get("nvcc"))
    if home:
        # torch's cpp_extension must compile with the nvcc the plan names, not another one.
        env["CUDA_HOME"] = home
    version = matrix.package_version()
    wheel = row.wheel_names(version)[0]
    # pip names a Linux wheel linux_x86_64; auditwheel gives it the manylinux tag.
    built = wheel.replace(row.platform_tag, "linux_x86_64") if row.platform == "linux" else wheel
    raw = out / "unrepaired"
    # Built from a staged copy of the sources: build outputs lying in the checkout (an in-place
    # extension build for other archs, a _build_info.py) must never end up in the wheel.
    commands = [[python, "-m", "pip", "wheel", str(out / "staged-source"), "--no-build-isolation",
                 "--no-deps", "-w", str(raw)]]
    commands.append(repair_command(row, python, raw / built, out))
    return Plan(row=row, env=env, commands=commands, wheel=wheel, built=built, out=out,
                tools=found)


def source_date_epoch() -> str | None:
    """SOURCE_DATE_EPOCH as given, else the time of the checkout's last commit, else None."""
    given = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if given.isdigit():
        return given
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
                             capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out if out.isdigit() else None


def checkout_sha() -> str | None:
    """The checkout's commit (hex), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out if re.fullmatch(r"[0-9a-f]{40,64}", out) else None


def cuda_home_of(nvcc: str | None) -> str | None:
    """The toolkit folder of an nvcc in TOOLKIT/bin/ (None for a wrapper elsewhere)."""
    if not nvcc:
        return None
    home = Path(nvcc).resolve().parent.parent
    return str(home) if (home / "include" / "cuda_runtime.h").is_file() else None


# Never copied into the staged source tree (build outputs, caches, local helpers).
STAGE_IGNORE = ("*.so", "*.pyd", "_build_info.py", "build", "dist", "*.egg-info", "wheelhouse",
                ".venv", "venv", ".git", ".orig", ".whl", "__pycache__", ".pytest_cache")


def stage_sources(dest: Path) -> None:
    """A clean copy of the checkout to build from."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*STAGE_IGNORE))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--row", help="id of a build_matrix.yaml row")
    which.add_argument("--host", action="store_true", help="the row of this machine")
    ap.add_argument("--matrix", type=Path, default=matrix.MATRIX)
    ap.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    ap.add_argument("--archs", help="override the row's GPU archs (e.g. \"8.0\" in CI)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan only")
    args = ap.parse_args(argv)
    try:  # an unreadable or malformed file is one line, never a traceback
        rules = matrix.load_rules()
        data = None if args.host else matrix.load_matrix(args.matrix)
    except matrix.MatrixError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    # The staging copies the checkout into OUT/staged-source: an OUT inside the checkout would
    # be copied into itself, except wheelhouse/, which the copy leaves out (STAGE_IGNORE).
    out = args.out.resolve()
    wheelhouse = (ROOT / "wheelhouse").resolve()
    if out.is_relative_to(ROOT.resolve()) and not out.is_relative_to(wheelhouse):
        print(f"--out {args.out}: inside the source tree, which the build copies into "
              f"OUT/staged-source; use {wheelhouse} (the default) or a folder outside {ROOT}",
              file=sys.stderr)
        return 2
    if out.exists() and not out.is_dir():
        print(f"--out {args.out}: exists and is not a folder; name a folder for the wheels",
              file=sys.stderr)
        return 2
    have_nvcc = nvcc_version()
    if args.host:
        row = host_row(rules, have_nvcc)
    else:
        rows, problems = matrix.check_rows(data, rules)
        if problems:
            matrix.print_problems(problems, str(args.matrix), sys.stderr)
            print(f"fix {args.matrix} first (python scripts/matrix.py check)", file=sys.stderr)
            return 1
        found = [r for r in rows if r.id == args.row]
        if not found:
            print(f"no row {args.row!r} in {args.matrix}; rows: "
                  f"{', '.join(r.id for r in rows)}", file=sys.stderr)
            return 2
        row = found[0]
    archs = None
    if args.archs is not None:  # checked as a row's archs are, for the row's toolkit
        why = matrix.arch_problems(args.archs, row.toolkit, rules)
        if why:
            print(f"--archs {args.archs!r}: {' | '.join(why)}", file=sys.stderr)
            return 2
        archs = matrix.split_archs(args.archs)
    plan = make_plan(row, out, archs=archs)
    print(plan.render(), flush=True)
    if args.dry_run:
        return 0
    try:
        import torch
    except ImportError:
        print("torch is not installed: install the row's torch first", file=sys.stderr)
        return 2
    have_platform = host_platform()
    mismatch = toolchain_mismatch(row, have_platform, torch.__version__, torch.version.cuda,
                                  have_nvcc)
    if mismatch:
        print(f"refusing to build row {row.id} here:\n  " + "\n  ".join(mismatch) +
              f"\n  installed: {platform_mod.system()} {platform_mod.machine()}, torch "
              f"{torch.__version__}, nvcc {have_nvcc or 'none'}", file=sys.stderr)
        return 2
    if plan.missing_tools:
        print(f"cannot build row {row.id} here:\n  " + "\n  ".join(plan.missing_tools),
              file=sys.stderr)
        return 2
    staged = plan.out / "staged-source"
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage_sources(staged)
    except OSError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        print(f"--out {args.out}: cannot stage the sources there ({exc}); name a writable folder",
              file=sys.stderr)
        return 2
    env = plan.command_env(dict(os.environ))
    env.pop("SAGEATTENTION_SKIP_CUDA_BUILD", None)
    start = time.monotonic()
    try:
        for cmd in plan.commands:
            print(f"$ {' '.join(cmd)}", flush=True)
            rc = subprocess.call(cmd, env=env, cwd=ROOT)
            if rc:
                print(f"build failed (exit {rc}) for row {row.id}", file=sys.stderr)
                return rc
    finally:
        # Only `pip wheel` reads the copy; the repair and the check read the built wheel.
        shutil.rmtree(staged, ignore_errors=True)
    wheel = plan.out / plan.wheel
    if not wheel.exists():
        made = sorted(p.name for p in plan.out.glob("sageattention-*.whl"))
        print(f"expected {wheel.name}, the build made: {', '.join(made) or 'nothing'}",
              file=sys.stderr)
        return 1
    took = time.monotonic() - start
    print(f"built {wheel} ({wheel.stat().st_size / 1e6:.1f} MB) in {took:.0f} s for "
          f"sm {plan.env['TORCH_CUDA_ARCH_LIST']}", flush=True)
    from . import check as check_wheel  # the build checks what it built (check never imports build)

    problems, notes = check_wheel.check(wheel, row, archs)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"{wheel.name}: {problem}", file=sys.stderr)
    print(f"check: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
