"""benchmarks/bench_clients.py without a GPU: the shape table, its arguments, its refusal."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
bench = importlib.import_module("bench_clients")


def test_the_client_shapes_of_the_issues_are_there():
    s = bench.BY_NAME
    assert (s["wan14b-self"].B, s["wan14b-self"].H, s["wan14b-self"].Nq, s["wan14b-self"].D) == (1, 40, 32760, 128)
    assert (s["flux"].H, s["flux"].Nq, s["flux"].dtype) == (24, 4608, "bfloat16")
    assert s["flux-mask-bool"].mask == "bool" and s["flux-mask-additive"].mask == "additive"
    # Context-parallel shards: Ulysses splits heads, ring splits the sequence and needs the LSE.
    assert s["wan14b-ulysses2"].H == 20 and s["wan14b-ulysses2"].Nq == 32760
    assert s["wan14b-ring4"].Nq == 32760 // 4 and s["wan14b-ring4"].lse
    assert all(x.client in ("comfyui", "diffusers") for x in bench.SHAPES)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_key_padding_mask_keeps_the_valid_keys(kind):
    shape = bench.Shape("t", 1, 2, 5, 7, 64, mask=kind, valid_keys=4)
    m = bench.client_mask(shape, "cpu")
    assert m.shape == (1, 1, 5, 7)
    keep = m if kind == "bool" else m == 0
    assert keep[..., :4].all() and not keep[..., 4:].any()
    if kind == "additive":
        assert torch.isneginf(m[..., 4:]).all()


def test_random_mask_keeps_half_and_the_first_key():
    shape = bench.BY_NAME["flux-mask-random"]
    small = bench.Shape("t", 1, 2, 300, 500, 64, mask="bool", pattern="random")
    m = bench.client_mask(small, "cpu")
    assert m.shape == (1, 1, 300, 500) and m.dtype == torch.bool
    assert m[..., 0].all() and 0.45 < m.float().mean() < 0.55
    assert shape.mask == "bool" and shape.pattern == "random"


@pytest.mark.interpret
def test_masked_candidates_time_every_kjnodes_mode_masked_and_unmasked(seed):
    import torch.nn.functional as F

    import sageattention as sa

    shape = bench.Shape("t", 1, 2, 100, 100, 64, dtype="float16", mask="bool", valid_keys=70)
    fns = bench.candidates(shape, sa.sageattn, None)
    for mode in bench.kjnodes_modes():
        assert f"ours {mode}" in fns and f"ours {mode} unmasked" in fns
    q, k, v = (torch.randn(1, 100, 128, dtype=torch.float16) for _ in range(3))
    mask = bench.client_mask(shape, "cpu")
    qh, kh, vh = (t.view(1, 100, 2, 64).transpose(1, 2).float() for t in (q, k, v))
    want = {m: F.scaled_dot_product_attention(qh, kh, vh, attn_mask=m).transpose(1, 2)
            .reshape(1, 100, 128) for m in (mask, None)}
    for name, (_, fn) in fns.items():
        out = fn(q, k, v, mask)
        ref = want[None] if name.endswith("unmasked") else want[mask]
        cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.flatten(), dim=0)
        # FP8 P·V: the interpreter's e4m3 rounding is coarser than the GPU's.
        assert cos > (0.995 if "fp8" in name else 0.999), (name, float(cos))


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_clients.py"), *args],
                          check=False, capture_output=True, text=True, timeout=120)


def test_list_prints_every_shape():
    res = run("--list")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == len(bench.SHAPES)
    assert "wan14b-self: B=1 H=40 Nq=32760" in res.stdout


def test_unknown_shape_is_one_line_and_exit_2():
    res = run("--shapes", "nope")
    assert res.returncode == 2
    assert "--shapes: unknown ['nope']" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_it_says_so():
    res = run("--shapes", "flux")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "bench_clients.py needs a CUDA GPU (use --list to see the shapes)"]


def test_cosine_is_none_when_not_finite():
    a = torch.ones(4)
    assert bench.cosine(a, a) == 1.0
    assert bench.cosine(torch.tensor([1.0, float("nan")]), torch.ones(2)) is None


def test_lse_reference_is_the_scaled_log_sum_exp():
    shape = bench.Shape("t", 1, 2, 5, 7, 8, lse=True)
    q, k = torch.randn(1, 5, 16), torch.randn(1, 7, 16)
    got = bench.lse_fp32_reference(q, k, shape)
    qh, kh = q.view(1, 5, 2, 8).transpose(1, 2), k.view(1, 7, 2, 8).transpose(1, 2)
    want = torch.logsumexp(qh @ kh.transpose(-1, -2) / 8 ** 0.5, dim=-1)
    assert got.shape == (1, 2, 5) and torch.allclose(got, want, atol=1e-5)


def test_bad_tag_is_one_line_and_exit_2():
    res = run("--tag", "../x")
    assert res.returncode == 2 and "--tag:" in res.stderr and "Traceback" not in res.stderr


def test_table_of_a_written_json(tmp_path):
    rows = [{"shape": {"name": "flux"}, "ms": {"ours": 1.0, "original": 0.5, "sdpa": 0.4}},
            {"shape": {"name": "flux-mask-bool"}, "ms": {
                "ours": 1.2, "ours unmasked": 1.0, "original direct (mask ignored)": 0.6,
                "sdpa": 0.8}}]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"meta": {}, "rows": rows}))
    proc = run("--table", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "| flux | 1.000 | 0.500 | 0.400 | 0.50x | 0.40x | - |" in proc.stdout
    assert "| flux-mask-bool | 1.200 | 0.600 | 0.800 | 0.50x | 0.67x | 1.20 |" in proc.stdout
    path.write_text("{not json")
    proc = run("--table", str(path))
    assert proc.returncode == 2 and "not a bench_clients JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
