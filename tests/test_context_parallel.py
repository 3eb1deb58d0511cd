"""Context parallelism through `sageattn(..., return_lse=True)`.

What diffusers' context-parallel attention needs from us (its "sage" backend calls sageattn with
tensor_layout="NHD" and return_lse=True): ring attention splits the sequence across ranks and
merges each rank's partial results over the key shards with the log-sum-exp, Ulysses re-shards
the heads with an all-to-all. Both only work if our LSE is the natural log of the softmax
denominator of the *scaled* scores, with K smoothing, GQA, NHD and causal masking accounted for.

CPU part (CI): two processes with the gloo backend, the Triton kernels under the interpreter,
tiny shapes, compared with one process on the whole sequence and with fp64 attention:
- diffusers' own context-parallel attention (its "sage" backend function with a ParallelConfig
  over a CPU device mesh: ring and Ulysses), where diffusers is installed (the [test] extra);
- the same merge and all-to-all written here with torch.distributed, which also covers what
  diffusers' templated path refuses (causal attention, GQA).

GPU part (one GPU): the LSE merge of two key halves equals the whole call on every path.
"""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sageattention import reference
from sageattention.testing import make_qkv

WORLD = 2
HAS_CUDA = torch.cuda.is_available()


def merge(o, lse, o_j, lse_j):
    """Combine two partial attentions over disjoint key sets. NHD o [B, N, H, D], lse [B, H, N]."""
    if o is None:
        return o_j.float(), lse_j
    new = torch.logaddexp(lse, lse_j)
    w, w_j = (torch.exp(x - new).transpose(1, 2).unsqueeze(-1) for x in (lse, lse_j))
    return o * w + o_j.float() * w_j, new


def ring_attention(fn, q, k, v, causal, rank, world):
    """Each rank holds a sequence shard of Q, K, V; K and V are gathered (diffusers' ring
    attention also all-gathers them) and the partial results merged by LSE."""
    ks, vs = [torch.empty_like(k) for _ in range(world)], [torch.empty_like(v) for _ in range(world)]
    dist.all_gather(ks, k.contiguous())
    dist.all_gather(vs, v.contiguous())
    o = lse = None
    for j in range(world):
        if causal and j > rank:
            continue  # keys after this shard's queries
        o_j, lse_j = fn(q, ks[j], vs[j], tensor_layout="NHD", is_causal=causal and j == rank,
                        return_lse=True)
        o, lse = merge(o, lse, o_j, lse_j)
    return o.to(q.dtype), lse


def _all_to_all(x, scatter_dim, gather_dim, world):
    chunks = [c.contiguous() for c in x.chunk(world, dim=scatter_dim)]
    got = [torch.empty_like(c) for c in chunks]
    dist.all_to_all(got, chunks)
    return torch.cat(got, dim=gather_dim)


def ulysses_attention(fn, q, k, v, causal, world):
    """Sequence shards -> head shards (all-to-all), full attention on H/world heads, back."""
    qh, kh, vh = (_all_to_all(t, 2, 1, world) for t in (q, k, v))  # NHD: heads 2, sequence 1
    o, lse = fn(qh, kh, vh, tensor_layout="NHD", is_causal=causal, return_lse=True)
    o = _all_to_all(o, 1, 2, world)
    lse = _all_to_all(lse, 2, 1, world)  # [B, H/world, N] -> [B, H, N/world]
    return o, lse


CASES = [  # (name, Hq, Hkv, causal)
    ("full", 4, 4, False),
    ("causal", 4, 4, True),
    ("GQA", 4, 2, False),
    ("GQA causal", 4, 2, True),
]


def _worker(rank, port, results):
    os.environ.setdefault("TRITON_INTERPRET", "1")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        import sageattention as sa

        for name, hq, hkv, causal in CASES:
            gen = torch.Generator().manual_seed(1234)
            # K with a channel bias: the smoothing (K minus its mean) must not leak into the LSE.
            q, k, v = make_qkv(1, hq, hkv, 128, 128, 64, kind="outliers", dtype=torch.float16,
                               layout="NHD", generator=gen)
            n = q.shape[1] // WORLD
            shard = slice(rank * n, (rank + 1) * n)
            whole, whole_lse = sa.sageattn(q, k, v, tensor_layout="NHD", is_causal=causal,
                                           return_lse=True)
            exact, exact_lse = reference.attention_fp64(q, k, v, tensor_layout="NHD", is_causal=causal,
                                                        return_lse=True)
            whole_lse_err = (whole_lse.double() - exact_lse).abs().max().item()
            local = (q[:, shard], k[:, shard], v[:, shard])
            algorithms = ["ring"] + (["ulysses"] if hkv % WORLD == 0 else [])
            for algo in algorithms:
                if algo == "ring":
                    out, lse = ring_attention(sa.sageattn, *local, causal, rank, WORLD)
                else:
                    out, lse = ulysses_attention(sa.sageattn, *local, causal, WORLD)
                acc = reference.accuracy(out, exact[:, shard])
                same = reference.accuracy(out, whole[:, shard])
                lse_err = (lse.double() - exact_lse[:, :, shard]).abs().max().item()
                results.put((rank, name, algo, acc["cosine"], same["cosine"], lse_err, whole_lse_err))
    finally:
        dist.destroy_process_group()


def _diffusers_worker(rank, port, results):
    os.environ.setdefault("TRITON_INTERPRET", "1")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        from diffusers.models._modeling_parallel import ContextParallelConfig, ParallelConfig
        from diffusers.models.attention_dispatch import _sage_attention
        from torch.distributed.device_mesh import init_device_mesh

        import sageattention as sa

        for mode in ("ring", "ulysses"):
            cp = ContextParallelConfig(**{f"{mode}_degree": WORLD})
            mesh = init_device_mesh("cpu", cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names)
            config = ParallelConfig(context_parallel_config=cp)
            config.setup(rank, WORLD, torch.device("cpu"), mesh=mesh)
            cp.setup(rank, WORLD, torch.device("cpu"), mesh)
            gen = torch.Generator().manual_seed(99)
            q, k, v = make_qkv(1, 4, 4, 128, 128, 64, kind="outliers", dtype=torch.float16,
                               layout="NHD", generator=gen)
            n = q.shape[1] // WORLD
            shard = slice(rank * n, (rank + 1) * n)
            # ring: diffusers all-gathers K and V with functional collectives, whose results
            # (AsyncCollectiveTensor) reach sageattn; the dispatcher unwraps them (launch.py).
            out, lse = _sage_attention(q[:, shard].contiguous(), k[:, shard].contiguous(),
                                       v[:, shard].contiguous(), return_lse=True,
                                       _parallel_config=config)
            whole, whole_lse = sa.sageattn(q, k, v, tensor_layout="NHD", return_lse=True)
            exact = reference.attention_fp64(q, k, v, tensor_layout="NHD")
            lse_err = (lse.float() - whole_lse.transpose(1, 2)[:, shard]).abs().max().item()
            results.put((rank, mode, reference.accuracy(out, exact[:, shard])["cosine"],
                         reference.accuracy(out, whole[:, shard])["cosine"], lse_err))
    finally:
        dist.destroy_process_group()


@pytest.mark.interpret
@pytest.mark.skipif(not dist.is_gloo_available(), reason="this torch has no gloo backend")
def test_diffusers_context_parallel_sage_backend_on_two_cpu_processes():
    pytest.importorskip("diffusers.models.attention_dispatch", reason="diffusers not installed")
    results = mp.get_context("spawn").Queue()
    mp.start_processes(_diffusers_worker, args=(_free_port(), results), nprocs=WORLD, join=True,
                       start_method="spawn")
    rows = [results.get(timeout=60) for _ in range(2 * WORLD)]
    assert sorted((r[0], r[1]) for r in rows) == [(0, "ring"), (0, "ulysses"), (1, "ring"),
                                                  (1, "ulysses")]
    for rank, mode, cos_exact, cos_whole, lse_err in rows:
        assert cos_exact > 0.999 and cos_whole > 0.9995, (rank, mode, cos_exact, cos_whole)
        assert lse_err < 0.5, (rank, mode, lse_err)  # diffusers' merged LSE (scores reach ~100)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.interpret
@pytest.mark.skipif(not dist.is_gloo_available(), reason="this torch has no gloo backend")
def test_ring_and_ulysses_on_two_cpu_processes_match_one_process():
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.start_processes(_worker, args=(_free_port(), results), nprocs=WORLD, join=True,
                       start_method="spawn")
    rows = [results.get(timeout=60) for _ in range(WORLD * sum(2 if h % WORLD == 0 else 1
                                                                 for _, _, h, _ in CASES))]
    assert {(r[1], r[2]) for r in rows} == {(c[0], a) for c in CASES for a in ("ring", "ulysses")
                                            if a == "ring" or c[2] % WORLD == 0}
    for rank, name, algo, cos_exact, cos_whole, lse_err, whole_lse_err in rows:
        where = f"rank {rank} {name} {algo}"
        assert cos_exact > 0.999, (where, cos_exact)  # as one call on the whole sequence
        assert cos_whole > 0.9995, (where, cos_whole)
        # The LSE against fp64 within the whole call's own INT8 error (scores reach ~100 with
        # these outliers, so the error is absolute ~0.2, relative ~0.1%)
        assert lse_err < 1.5 * whole_lse_err + 1e-2, (where, lse_err, whole_lse_err)


# ---- one GPU: the LSE merge of two key halves on every path ---------------------------------

def _paths():
    import sageattention as sa
    from sageattention import dispatch, ops

    found = {"sageattn": sa.sageattn, "fp16_triton": sa.sageattn_qk_int8_pv_fp16_triton}
    if not HAS_CUDA:
        return found
    device = torch.device("cuda")
    if ops.load() is not None and ops.usable_on(device):
        found["fp16_cuda"] = sa.sageattn_qk_int8_pv_fp16_cuda
        found["fp16_cuda fp16+fp32"] = lambda *a, **kw: sa.sageattn_qk_int8_pv_fp16_cuda(
            *a, pv_accum_dtype="fp16+fp32", **kw)
        if dispatch.has_fp8_mma(device) and ops.fp8_usable_on(device):
            found["fp8_cuda"] = sa.sageattn_qk_int8_pv_fp8_cuda
            found["fp8_cuda fp32+fp32"] = lambda *a, **kw: sa.sageattn_qk_int8_pv_fp8_cuda(
                *a, pv_accum_dtype="fp32+fp32", **kw)
            found["fp8_cuda_sm90"] = sa.sageattn_qk_int8_pv_fp8_cuda_sm90
    return found


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", ["sageattn", "fp16_triton", "fp16_cuda", "fp16_cuda fp16+fp32",
                                  "fp8_cuda", "fp8_cuda fp32+fp32", "fp8_cuda_sm90"])
def test_lse_merge_of_two_key_halves_is_the_whole_call(name, causal):
    """The merge diffusers' ring attention does, on one GPU: the queries of the second half
    attend to both key halves (causal: the first in full, the second causally)."""
    fn = _paths().get(name)
    if fn is None:
        pytest.skip(f"{name}: no such path on this GPU or build")
    gen = torch.Generator().manual_seed(7)
    q, k, v = make_qkv(2, 8, 2, 2048, 2048, 128, kind="outliers", dtype=torch.float16,
                       device="cuda", layout="NHD", generator=gen)
    half = 1024
    qs, ks, vs = q[:, half:], (k[:, :half], k[:, half:]), (v[:, :half], v[:, half:])
    o = lse = None
    for j, (kj, vj) in enumerate(zip(ks, vs)):
        o_j, lse_j = fn(qs, kj, vj, tensor_layout="NHD", is_causal=causal and j == 1, return_lse=True)
        o, lse = merge(o, lse, o_j, lse_j)
    whole, whole_lse = fn(q, k, v, tensor_layout="NHD", is_causal=causal, return_lse=True)
    exact, exact_lse = reference.attention_fp64(q, k, v, tensor_layout="NHD", is_causal=causal,
                                                return_lse=True)
    exact, exact_lse = exact[:, half:], exact_lse[:, :, half:]
    merged_acc = reference.accuracy(o, exact)
    whole_acc = reference.accuracy(whole[:, half:], exact)
    # within the error of a single call: the merge adds no error of its own
    assert merged_acc["cosine"] > whole_acc["cosine"] - 5e-4, (merged_acc, whole_acc)
    assert merged_acc["rel_l1"] < whole_acc["rel_l1"] * 1.25 + 1e-3, (merged_acc, whole_acc)
    merged_err = (lse.double().cpu() - exact_lse).abs().max().item()
    whole_err = (whole_lse[:, :, half:].double().cpu() - exact_lse).abs().max().item()
    assert merged_err < 1.5 * whole_err + 1e-2, (merged_err, whole_err)
