"""The main job of `make run`: check the kernels on whatever this machine has.

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


def main() -> int:
    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}", flush=True)
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
