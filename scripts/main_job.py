"""The main job of `make run`: build and check this machine's wheel, then check the kernels.

- With nvcc and a CUDA build of torch: scripts/build_wheel.py --host builds the wheel of this
  machine's row into wheelhouse/ (GPU archs from ARCHS, default: the row's full list) and
  scripts/check_wheel.py --host inspects it.
- With a CUDA GPU: the accuracy table (benchmarks/accuracy.py) and the speed table
  (benchmarks/bench_attention.py), JSON under benchmarks/results/.
- Without one: the Triton kernels run under TRITON_INTERPRET=1 on small CPU shapes and the
  accuracy table is printed (a check that the package works here, not a benchmark).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_host_wheel() -> int:
    """Build + check the host row's wheel; 0 also when this machine cannot build one."""
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    from sagewheels import tools

    if tools.find("nvcc") is None or not torch.version.cuda:
        print("no nvcc or no CUDA build of torch: skipping the wheel build", flush=True)
        return 0
    archs = os.environ.get("ARCHS", "").strip()
    extra = ["--archs", archs] if archs else []
    out = ROOT / "wheelhouse"
    print(f"== building this machine's wheel into {out} (archs: {archs or 'the row default'})",
          flush=True)
    rc = subprocess.call([sys.executable, str(ROOT / "scripts" / "build_wheel.py"), "--host",
                          "--out", str(out), *extra])
    if rc:
        return rc
    wheels = sorted(out.glob("sageattention-*.whl"), key=lambda p: p.stat().st_mtime)
    print(f"== checking {wheels[-1].name}", flush=True)
    return subprocess.call([sys.executable, str(ROOT / "scripts" / "check_wheel.py"),
                            str(wheels[-1]), "--host", *extra])


def main() -> int:
    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}", flush=True)
    rc = build_host_wheel()
    if rc:
        return rc
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}; running accuracy + benchmark", flush=True)
        for script in ("accuracy.py", "bench_attention.py"):
            rc = subprocess.call([sys.executable, str(ROOT / "benchmarks" / script)])
            if rc:
                return rc
        return 0
    print("no CUDA GPU: running the Triton kernels under TRITON_INTERPRET=1 on small shapes",
          flush=True)
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.call([sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--cpu"],
                           env=env)


if __name__ == "__main__":
    sys.exit(main())
