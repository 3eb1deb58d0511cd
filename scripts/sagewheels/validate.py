"""Validate a built wheel on this machine's GPU before it ships.

    python scripts/validate_wheel.py WHEEL [--row ID | --host] [--out REPORT.json] [--no-bench]

1. Installs the wheel with `pip install --no-deps --no-index --target DIR` into a folder of its
   own (DIR: --target, or a temporary folder). pip never sees torch: the running environment's
   torch and Triton are used as they are.
2. Runs sagewheels/validate_gpu.py in a child Python whose path starts with DIR, from a folder
   outside the checkout (so the checkout's own sageattention cannot answer instead), with
   SAGEATTENTION_STRICT=1 (a compiled unit that cannot load is an error, not a fallback). The
   child checks that the package comes from DIR, that the extension loads and that its build
   info matches the row (torch, CUDA variant, archs), then runs every public function on every
   path the wheel provides for this GPU against fp64 attention with per-path thresholds, and a
   short benchmark against SDPA (flash and cuDNN).
3. Writes the JSON report (--out) and prints one line per failed check; exit status 1 when any
   check fails, 2 when the validation cannot run (no GPU, not a wheel, pip failed).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from . import check, matrix

RUNNER = Path(__file__).resolve().parent / "validate_gpu.py"
PIP_TIMEOUT_S = 600
RUN_TIMEOUT_S = 3600  # the accuracy cases and the benchmark of one wheel: minutes, not hours


class CannotValidate(Exception):
    """The validation cannot run here; str() is the one line to print."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_build(row: matrix.Row | None) -> dict | None:
    """What the wheel's _build_info must say for the row (None without a row)."""
    if row is None:
        return None
    return {"torch": row.torch, "cuda": row.cuda, "archs": list(row.archs), "abi": row.abi}


def install(wheel: Path, target: Path, python: str = sys.executable) -> None:
    """The wheel alone into `target`: --no-deps and --no-index, so pip cannot fetch or replace
    torch, Triton or anything else."""
    cmd = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile",
           "--disable-pip-version-check", "--target", str(target), str(wheel)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CannotValidate(f"{wheel.name}: pip could not run ({exc})") from exc
    if proc.returncode:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise CannotValidate(f"{wheel.name}: pip install --target failed: {last[0]}")


def run_checks(target: Path, expected: dict | None, bench: bool,
               python: str = sys.executable) -> dict:
    """The child's report (a dict); CannotValidate when it produced none."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    env.update(PYTHONPATH=str(target), SAGEATTENTION_STRICT="1", PYTHONNOUSERSITE="1")
    args = [python, str(RUNNER), "--expect", json.dumps(expected), "--target", str(target)]
    if not bench:
        args.append("--no-bench")
    with tempfile.TemporaryDirectory(prefix="sage-validate-cwd-") as cwd:
        try:
            proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CannotValidate(f"the GPU checks ran over {RUN_TIMEOUT_S} s: a hang in a "
                                 "kernel or a very slow GPU") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CannotValidate(f"the GPU checks produced no report (exit {proc.returncode}): {tail}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise CannotValidate(f"the GPU checks wrote an unreadable report ({exc})") from exc


def find_row(args) -> matrix.Row | None:
    """The row of --row / --host (the same lookup as check_wheel.py), or None without either."""
    row, error = check.load_row(args)
    if error:
        raise CannotValidate(error)
    return row


def gpu_or_refuse() -> None:
    try:
        import torch
    except ImportError as exc:
        raise CannotValidate("torch is not installed: install the row's torch (with CUDA) first, "
                             "then validate") from exc
    if not torch.cuda.is_available():
        raise CannotValidate(f"no CUDA GPU visible to torch {torch.__version__}: run "
                             "validate_wheel.py on a machine with an NVIDIA GPU and a CUDA torch")


def validate(wheel: Path, row: matrix.Row | None, target: Path | None, bench: bool,
             require_gpu: bool = True) -> dict:
    if not wheel.is_file():
        raise CannotValidate(f"{wheel}: no such file")
    try:
        name, version, _, tags = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename as exc:
        raise CannotValidate(f"{wheel.name}: not a wheel file name ({exc})") from exc
    if name != "sageattention":
        raise CannotValidate(f"{wheel.name}: not a sageattention wheel")
    if row is not None and version.local != row.local_version:
        raise CannotValidate(f"{wheel.name}: built for {version.local}, the row {row.id} is "
                             f"{row.local_version}: pass the row it was built from")
    if require_gpu:
        gpu_or_refuse()
    with tempfile.TemporaryDirectory(prefix="sage-validate-") as tmp:
        folder = target or Path(tmp) / "site"
        folder.mkdir(parents=True, exist_ok=True)
        install(wheel, folder)
        report = run_checks(folder, expected_build(row), bench)
    report.update(wheel=wheel.name, sha256=sha256_of(wheel), row=row.id if row else None,
                  tags=sorted(str(t) for t in tags))
    return report


def failures(report: dict) -> list:
    """One line per failed check or accuracy case."""
    lines = [f"{c['name']}: {c['detail']}" for c in report.get("checks", []) if not c.get("ok")]
    lines += [f"{a['function']} {a['case']}: cosine {a['cosine']:.6f} (min {a['min_cosine']}), "
              f"relative L1 {a['rel_l1']:.4f} (max {a['max_rel_l1']})"
              for a in report.get("accuracy", []) if not a.get("ok")]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path)
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--row", help="the build_matrix.yaml row the wheel was built from")
    which.add_argument("--host", action="store_true",
                       help="the wheel was built with build_wheel.py --host on this machine")
    ap.add_argument("--matrix", type=Path, default=matrix.MATRIX)
    ap.add_argument("--out", type=Path, help="write the JSON report here")
    ap.add_argument("--target", type=Path, help="install into this folder (default: a temporary one)")
    ap.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        report = validate(args.wheel, find_row(args), args.target,
                          not args.no_bench)
    except CannotValidate as exc:
        print(f"validate_wheel: {exc}", file=sys.stderr)
        return 2
    bad = failures(report)
    report["ok"] = not bad
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for line in bad:
        print(f"{args.wheel.name}: {line}")
    cases = len(report.get("accuracy", []))
    print(f"{args.wheel.name}: {'FAILED, ' + str(len(bad)) + ' problem(s)' if bad else 'ok'} "
          f"({cases} accuracy cases on {report.get('gpu', {}).get('name', '?')}"
          f"{', report ' + str(args.out) if args.out else ''})")
    return 1 if bad else 0
