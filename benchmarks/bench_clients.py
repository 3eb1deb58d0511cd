"""Speed of real client shapes through the clients' own call patterns, next to PyTorch SDPA.

Shapes (``--list`` prints them): Wan 2.1 14B video self-attention and Flux image attention as
ComfyUI calls them (bf16, [B, N, H*D] inputs, NHD view, smooth_k=False), the Flux call with a
[1, 1, N, N] key-padding mask (bool and additive: the masked calls ComfyUI and KJNodes make),
and the per-GPU shards diffusers' context parallelism produces for those models on 2 and 4
GPUs (Ulysses: all tokens, H / world heads; ring: N / world queries against one N / world key
block, with return_lse=True as diffusers' sage backend asks).

Every shape runs: ours (`sageattn`), the original SageAttention's `sageattn` when
SAGEATTN_ORIGINAL_SRC points at a built checkout (benchmarks/original.py; it ignores masks, so
its masked rows show the accuracy of what it returns), the client's PyTorch path (SDPA with the
same mask), and, for masked shapes, our unmasked call for the masked-vs-unmasked cost. Each
result has the median time (benchmarks/timing.py: L2 flushed, CUDA events) and the cosine
similarity to SDPA in fp32 on the same inputs. A candidate whose call fell back to PyTorch
(the client's behaviour on an error) is reported as failed, not timed.
Writes benchmarks/results/bench-clients-<gpu>-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from original import original_package
from timing import median_ms

from sageattention.testing import ComfyLikeAttention


@dataclass(frozen=True)
class Shape:
    name: str
    B: int
    H: int
    Nq: int
    Nk: int
    D: int
    dtype: str = "bfloat16"
    mask: str | None = None  # None, "bool" or "additive": key padding, [1, 1, Nq, Nk]
    valid_keys: int | None = None  # keys a masked row may attend to (the rest are padding)
    lse: bool = False  # the caller asks for the log-sum-exp (ring attention)
    client: str = "comfyui"  # the call pattern: "comfyui" or "diffusers"


WAN_N, WAN_H, FLUX_N, FLUX_H = 32760, 40, 4608, 24
SHAPES = [
    Shape("wan14b-self", 1, WAN_H, WAN_N, WAN_N, 128),
    Shape("flux", 1, FLUX_H, FLUX_N, FLUX_N, 128),
    Shape("flux-mask-bool", 1, FLUX_H, FLUX_N, FLUX_N, 128, mask="bool", valid_keys=4096 + 256),
    Shape("flux-mask-additive", 1, FLUX_H, FLUX_N, FLUX_N, 128, mask="additive",
          valid_keys=4096 + 256),
]
for world in (2, 4):
    SHAPES += [
        Shape(f"wan14b-ulysses{world}", 1, WAN_H // world, WAN_N, WAN_N, 128, client="diffusers"),
        Shape(f"wan14b-ring{world}", 1, WAN_H, WAN_N // world, WAN_N // world, 128, lse=True,
              client="diffusers"),
        Shape(f"flux-ulysses{world}", 1, FLUX_H // world, FLUX_N, FLUX_N, 128, client="diffusers"),
        Shape(f"flux-ring{world}", 1, FLUX_H, FLUX_N // world, FLUX_N // world, 128, lse=True,
              client="diffusers"),
    ]
BY_NAME = {s.name: s for s in SHAPES}


def key_padding_mask(shape: Shape, device) -> torch.Tensor:
    """[1, 1, Nq, Nk]: True (or 0.0) for the first valid_keys keys, False (or -inf) after."""
    keep = torch.arange(shape.Nk, device=device) < (shape.valid_keys or shape.Nk)
    keep = keep[None, None, None, :].expand(1, 1, shape.Nq, shape.Nk).contiguous()
    if shape.mask == "bool":
        return keep
    dtype = getattr(torch, shape.dtype)
    return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill_(~keep, float("-inf"))


def candidates(shape: Shape, ours, orig):
    """name -> (client model or None, callable(q, k, v, mask) -> output [B, Nq, H*D]); inputs
    [B, N, H*D]. The model's ``fallbacks`` say whether the client ran PyTorch instead."""
    H, D = shape.H, shape.D
    fns = {}
    if shape.client == "comfyui":
        for name, fn in (("ours", ours), ("original", orig)):
            if fn is None:
                continue
            model = ComfyLikeAttention(fn)
            fns[name] = (model, lambda q, k, v, m, model=model: model(q, k, v, H, mask=m))
        if shape.mask:
            model = ComfyLikeAttention(ours)
            fns["ours unmasked"] = (model, lambda q, k, v, m, model=model: model(q, k, v, H))
        fns["sdpa"] = (None, lambda q, k, v, m: ComfyLikeAttention.pytorch(
            *(t.view(shape.B, -1, H, D) for t in (q, k, v)), "NHD", m, None, shape.B, H, D))
        return fns

    def diffusers_call(fn):
        def run(q, k, v, m):
            qh, kh, vh = (t.view(shape.B, -1, H, D) for t in (q, k, v))
            res = fn(q=qh, k=kh, v=vh, tensor_layout="NHD", is_causal=False, sm_scale=None,
                     return_lse=shape.lse)
            out = res[0] if shape.lse else res
            return out.reshape(shape.B, -1, H * D)
        return run

    for name, fn in (("ours", ours), ("original", orig)):
        if fn is not None:
            fns[name] = (None, diffusers_call(fn))
    fns["sdpa"] = (None, lambda q, k, v, m: ComfyLikeAttention.pytorch(
        *(t.view(shape.B, -1, H, D) for t in (q, k, v)), "NHD", None, None, shape.B, H, D))
    return fns


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300))


def run_shape(shape: Shape, ours, orig) -> dict:
    dev = torch.device("cuda")
    dtype = getattr(torch, shape.dtype)
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(shape.B, shape.Nq, shape.H * shape.D, device=dev, dtype=dtype, generator=g)
    k, v = (torch.randn(shape.B, shape.Nk, shape.H * shape.D, device=dev, dtype=dtype, generator=g)
            for _ in range(2))
    mask = key_padding_mask(shape, dev) if shape.mask else None
    ref_mask = mask.float() if mask is not None and mask.dtype != torch.bool else mask
    ref = sdpa_fp32_reference(q, k, v, ref_mask, shape)
    row = {"shape": asdict(shape), "ms": {}, "cosine_vs_sdpa_fp32": {}, "failed": {}}
    for name, (model, fn) in candidates(shape, ours, orig).items():
        try:
            out = fn(q, k, v, mask)
            if model is not None and model.fallbacks:
                raise RuntimeError(f"the client fell back to PyTorch: {model.fallbacks[0][:200]}")
            row["cosine_vs_sdpa_fp32"][name] = round(cosine(out, ref), 5)
            row["ms"][name] = round(median_ms(lambda fn=fn: fn(q, k, v, mask)), 4)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next candidate
            row["failed"][name] = f"{type(exc).__name__}: {str(exc)[:200]}"
        torch.cuda.empty_cache()
    return row


def sdpa_fp32_reference(q, k, v, mask, shape: Shape):
    """SDPA in fp32 on the same inputs: the accuracy reference (exact attention is too large
    in fp64 at these sizes)."""
    H, D = shape.H, shape.D
    qh, kh, vh = (t.float().view(shape.B, -1, H, D).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return out.transpose(1, 2).reshape(shape.B, -1, H * D)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", metavar="NAME", help="run only these (see --list)")
    ap.add_argument("--list", action="store_true", help="print the shapes and exit")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.shapes:
        unknown = [n for n in args.shapes if n not in BY_NAME]
        if unknown:
            ap.error(f"--shapes: unknown {unknown}; known: {sorted(BY_NAME)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    shapes = [BY_NAME[n] for n in args.shapes] if args.shapes else SHAPES
    if args.list:
        for s in shapes:
            extra = f", mask {s.mask} ({s.valid_keys} valid keys)" if s.mask else ""
            extra += ", return_lse" if s.lse else ""
            print(f"{s.name}: B={s.B} H={s.H} Nq={s.Nq} Nk={s.Nk} D={s.D} {s.dtype}, "
                  f"{s.client} call{extra}")
        return 0
    if not torch.cuda.is_available():
        print("bench_clients.py needs a CUDA GPU (use --list to see the shapes)", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    import sageattention as sa

    pkg = original_package()
    orig = pkg.sageattn if pkg is not None else None
    rows = []
    for s in shapes:
        row = run_shape(s, sa.sageattn, orig)
        rows.append(row)
        print(f"{s.name}: " + "  ".join(f"{n}={t:.3f} ms (cos {row['cosine_vs_sdpa_fp32'][n]:.4f})"
                                        for n, t in row["ms"].items())
              + "".join(f"  {n} FAILED: {e}" for n, e in row["failed"].items()), flush=True)
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "sageattention": sa.__version__,
        "original": pkg is not None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": "median of 10-40 runs, L2 flushed before each, CUDA events; the clients' "
                  "call patterns (sageattention.testing.ComfyLikeAttention, diffusers' NHD call)",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-clients-{meta['gpu'].replace(' ', '_')}-{meta['date'][:10]}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
