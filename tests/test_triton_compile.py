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

# Shared memory one block may use (the opt-in maximum): sm80 163 KB, sm86/89/120 99 KB, sm90
# 227 KB.
SMEM_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 120: 101376}

# sageattn's path on each arch (FP16 P·V on sm80/86 and at D=64 on sm90, FP8 elsewhere) with the
# masks clients send (mask_kind 1 bool, 2 additive) and unmasked (0).
ATTENTION = [
    dict(cc=80, d=128, pv_fp8=False, causal=False, mask_kind=1, dtype="fp16"),
    dict(cc=86, d=128, pv_fp8=False, causal=False, mask_kind=2, dtype="bf16"),
    dict(cc=86, d=64, pv_fp8=False, causal=True, mask_kind=1, dtype="fp16"),
    dict(cc=89, d=128, pv_fp8=True, causal=False, mask_kind=1, dtype="bf16"),
    dict(cc=89, d=128, pv_fp8=True, causal=False, mask_kind=0, dtype="bf16"),
    dict(cc=90, d=128, pv_fp8=True, causal=False, mask_kind=2, dtype="bf16"),
    dict(cc=90, d=64, pv_fp8=False, causal=False, mask_kind=1, dtype="fp16"),
    dict(cc=120, d=128, pv_fp8=True, causal=True, mask_kind=1, dtype="fp16"),
]
BLOCK_MAP = [dict(kernel="tile_kinds", cc=cc, mask_kind=kind, mask_type=t, causal=causal)
             for cc in (80, 89, 90, 120) for kind, t in ((1, "*i1"), (2, "*bf16"), (2, "*fp32"))
             for causal in (False, True)] + [dict(kernel="compact", cc=cc)
                                            for cc in (80, 89, 90, 120)]
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
    assert r["shared"] <= SMEM_LIMIT[cc], (
        f"sm_{cc}: {r['shared']} bytes of shared memory per block, the limit is {SMEM_LIMIT[cc]}")
    # Two key loops (unmasked then bounded tiles; with a mask: full then partial tiles), each
    # fed by asynchronous copies.
    assert len(r["loops_pipelined"]) >= 2 and all(r["loops_pipelined"][:2]), r


@pytest.mark.parametrize("case", BLOCK_MAP, ids=_name)
def test_block_map_kernels_compile(results, case):
    r = results[_name(case)]
    assert "error" not in r, r.get("error")


def test_cases_cover_every_arch_of_the_dispatch_table():
    assert {c["cc"] for c in ATTENTION} == set(SMEM_LIMIT)
