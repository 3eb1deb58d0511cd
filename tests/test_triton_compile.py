"""The Triton kernels compile for the GPUs users have, without one: sm80 (A100), sm86 (RTX 30),
sm89 (RTX 40), sm90 (H100) and sm120 (RTX 50), through Triton's own compiler for an explicit
target (tests/triton_aot.py, in a process without TRITON_INTERPRET).

The interpreter (tests/test_kernels_interpret.py) runs the kernels' Python, not their
compilation: a construct the compiler rejects, a key loop it cannot software-pipeline, or a tile
that outgrows a consumer card's shared memory only shows here (or on that GPU). Each case is a
configuration forward.attention_forward launches, with its tile shape.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from triton_aot import SMEM_PER_BLOCK

# Every Triton attention kernel a call can run on each arch, with the masks clients send
# (mask_kind 1 bool; 2 additive) and unmasked (0): FP16 P·V everywhere (sageattn on sm80/86 and
# at D=64 on sm90; sageattn_qk_int8_pv_fp16_triton and the masked calls of the FP16 entry
# points elsewhere), FP8 P·V from sm89 on.
ATTENTION = [{"cc": cc, "d": d, "pv_fp8": fp8, "causal": causal, "mask_kind": mask, "dtype": "bf16"}
             for cc in SMEM_PER_BLOCK for fp8 in ((False, True) if cc >= 89 else (False,))
             for d in (64, 128) for causal in (False, True) for mask in (0, 1)]
ATTENTION += [{"cc": cc, "d": 128, "pv_fp8": fp8, "causal": False, "mask_kind": 2, "dtype": "fp16"}
              for cc in (86, 89, 90) for fp8 in ((False, True) if cc >= 89 else (False,))]
ATTENTION += [{"cc": cc, "d": 256, "pv_fp8": False, "causal": False, "mask_kind": 0, "dtype": "fp16"}
              for cc in (86, 90)]
BLOCK_MAP = [{"kernel": "tile_kinds", "cc": cc, "mask_kind": kind, "mask_type": t, "causal": causal,
                  "bits": bits}
             for cc in (80, 89, 90, 120) for kind, t in ((1, "*i1"), (2, "*bf16"), (2, "*fp32"))
             for causal in (False, True) for bits in (False, True)] + [
    {"kernel": "compact", "cc": cc, "bits": bits} for cc in (80, 89, 90, 120) for bits in (False, True)]
CASES = [dict(c, kernel="attention") for c in ATTENTION] + BLOCK_MAP


def _name(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


@pytest.fixture(scope="module")
def results():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(HERE / "triton_aot.py")], input=json.dumps(CASES),
                          capture_output=True, text=True, env=env, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(CASES), proc.stdout[-2000:] + proc.stderr[-2000:]
    return {_name(c): json.loads(line) for c, line in zip(CASES, lines)}


@pytest.mark.parametrize("case", ATTENTION, ids=_name)
def test_attention_kernel_compiles_fits_and_pipelines(results, case):
    r = results[_name(dict(case, kernel="attention"))]
    assert "error" not in r, r.get("error")
    cc = case["cc"]
    assert r["shared"] <= SMEM_PER_BLOCK[cc], (
        f"sm_{cc}: tile {r['tile']} needs {r['shared']} bytes of shared memory per block, the "
        f"GPU allows {SMEM_PER_BLOCK[cc]} (forward.tile_config)")
    # Two key loops (unmasked then bounded tiles; with a mask: full then partial tiles), each
    # fed by asynchronous copies.
    assert len(r["loops_pipelined"]) >= 2 and all(r["loops_pipelined"][:2]), r


@pytest.mark.parametrize("case", BLOCK_MAP, ids=_name)
def test_block_map_kernels_compile(results, case):
    r = results[_name(case)]
    assert "error" not in r, r.get("error")


def test_cases_cover_every_arch_of_the_dispatch_table():
    assert {c["cc"] for c in ATTENTION} == set(SMEM_PER_BLOCK)
