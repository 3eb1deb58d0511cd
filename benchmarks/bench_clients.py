"""Speed of real client shapes through the clients' own call patterns, next to PyTorch SDPA.

Shapes (``--list`` prints them): Wan 2.1 14B video self-attention and Flux image attention as
ComfyUI calls them (bf16, [B, N, H*D] inputs, NHD view, smooth_k=False), the Flux call with a
[1, 1, N, N] key-padding mask (bool and additive: the masked calls ComfyUI and KJNodes make),
and the per-GPU shards diffusers' context parallelism produces for those models on 2 and 4
GPUs (Ulysses: all tokens, H / world heads; ring: N / world queries against one N / world key
block, with return_lse=True as diffusers' sage backend asks).

Every shape runs: ours (`sageattn`), the original SageAttention's `sageattn` when
SAGEATTN_ORIGINAL_SRC points at a built checkout (benchmarks/original.py), the client's PyTorch
path (SDPA with the same mask), and, for masked shapes, our unmasked call (the masked-vs-unmasked
cost) and the original called directly with the mask, which it ignores (ComfyUI itself routes a
masked call to PyTorch when sageattn has no attn_mask parameter, as the original's has not: that
row says so under "client_fallback" and is not timed). The original's sageattn drops smooth_k
(it only has **kwargs), so it runs with K smoothing where ComfyUI asks ours for none.
Masked shapes also time each of KJNodes' modes (the kernel-specific functions, which it
passes the mask to) masked and unmasked: the masked-vs-unmasked cost per path.
Each result has the median time (benchmarks/timing.py: L2 flushed, CUDA events), the cosine
similarity to SDPA in fp32 on the same inputs (memory-efficient backend) and, where the call
returns it, the largest LSE error against an fp32 log-sum-exp. A candidate that raises is
reported under "failed", not timed. The JSON (benchmarks/results/bench-clients-<gpu>-<date>
[-TAG].json) is rewritten after every shape, so a crash keeps the rows before it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

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
    pattern: str = "key_padding"  # or "random": half the entries kept, every tile partial
    lse: bool = False  # the caller asks for the log-sum-exp (ring attention)
    client: str = "comfyui"  # the call pattern: "comfyui" or "diffusers"


WAN_N, WAN_H, FLUX_N, FLUX_H = 32760, 40, 4608, 24
SHAPES = [
    Shape("wan14b-self", 1, WAN_H, WAN_N, WAN_N, 128),
    Shape("flux", 1, FLUX_H, FLUX_N, FLUX_N, 128),
    Shape("flux-mask-bool", 1, FLUX_H, FLUX_N, FLUX_N, 128, mask="bool", valid_keys=4096 + 256),
    Shape("flux-mask-additive", 1, FLUX_H, FLUX_N, FLUX_N, 128, mask="additive",
          valid_keys=4096 + 256),
    # Not a client's mask: the general case, where no key tile can run unmasked or be skipped.
    Shape("flux-mask-random", 1, FLUX_H, FLUX_N, FLUX_N, 128, mask="bool", pattern="random"),
    Shape("flux-mask-random-additive", 1, FLUX_H, FLUX_N, FLUX_N, 128, mask="additive",
          pattern="random"),
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


def client_mask(shape: Shape, device) -> torch.Tensor:
    """[1, 1, Nq, Nk]: True (or 0.0) for the first valid_keys keys, False (or -inf) after;
    with pattern "random", a fixed random half of the entries (key 0 always kept)."""
    if shape.pattern == "random":
        g = torch.Generator(device=device).manual_seed(1)
        keep = torch.rand(1, 1, shape.Nq, shape.Nk, device=device, generator=g) < 0.5
        keep[..., 0] = True
    else:
        keep = torch.arange(shape.Nk, device=device) < (shape.valid_keys or shape.Nk)
        keep = keep[None, None, None, :].expand(1, 1, shape.Nq, shape.Nk).contiguous()
    if shape.mask == "bool":
        return keep
    dtype = getattr(torch, shape.dtype)
    return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill_(~keep, float("-inf"))


def kjnodes_modes() -> dict:
    """KJNodes' "Patch Sage Attention" modes: name -> (our function, its keywords)."""
    import sageattention as sa

    return {
        "fp16_triton": (sa.sageattn_qk_int8_pv_fp16_triton, {}),
        "fp16_cuda": (sa.sageattn_qk_int8_pv_fp16_cuda, {"pv_accum_dtype": "fp32"}),
        "fp8_cuda": (sa.sageattn_qk_int8_pv_fp8_cuda, {"pv_accum_dtype": "fp32+fp32"}),
        "fp8_cuda++": (sa.sageattn_qk_int8_pv_fp8_cuda, {"pv_accum_dtype": "fp32+fp16"}),
    }


def candidates(shape: Shape, ours, orig):
    """name -> (client model or None, callable(q, k, v, mask) -> output [B, Nq, H*D]); inputs
    [B, N, H*D]. The model's ``fallbacks`` say whether the client ran PyTorch instead."""
    H, D = shape.H, shape.D

    def sdpa(q, k, v, m):  # the client's PyTorch path, with the shape's mask (if any)
        return ComfyLikeAttention.pytorch(*(t.view(shape.B, -1, H, D) for t in (q, k, v)), "NHD",
                                          m, None, shape.B, H, D)

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
            if shape.pattern == "key_padding" and shape.valid_keys:
                # What a free mask would cost: the unmasked call on the unpadded keys only.
                n = shape.valid_keys
                fns["ours unmasked, valid keys only"] = (model, lambda q, k, v, m, model=model: model(
                    q, k[:, :n], v[:, :n], H))
            if orig is not None:
                def orig_direct(q, k, v, m):
                    qh, kh, vh = (t.view(shape.B, -1, H, D) for t in (q, k, v))
                    out = orig(qh, kh, vh, tensor_layout="NHD", is_causal=False, attn_mask=m)
                    return out.reshape(shape.B, -1, H * D)
                fns["original direct (mask ignored)"] = (None, orig_direct)
            # KJNodes' modes pass the mask to every kernel-specific function directly.
            for mode, (fn, kw) in kjnodes_modes().items():
                def direct(q, k, v, m, fn=fn, kw=kw):
                    qh, kh, vh = (t.view(shape.B, -1, H, D) for t in (q, k, v))
                    out = fn(qh, kh, vh, tensor_layout="NHD", is_causal=False, attn_mask=m, **kw)
                    return out.reshape(shape.B, -1, H * D)
                fns[f"ours {mode}"] = (None, direct)
                fns[f"ours {mode} unmasked"] = (None, lambda q, k, v, m, d=direct: d(q, k, v, None))
        fns["sdpa"] = (None, sdpa)
        return fns

    def diffusers_call(fn):
        def run(q, k, v, m):
            qh, kh, vh = (t.view(shape.B, -1, H, D) for t in (q, k, v))
            res = fn(q=qh, k=kh, v=vh, tensor_layout="NHD", is_causal=False, sm_scale=None,
                     return_lse=shape.lse)
            if shape.lse:  # (out [B, N, H, D], lse [B, H, N])
                return res[0].reshape(shape.B, -1, H * D), res[1]
            return res.reshape(shape.B, -1, H * D)
        return run

    for name, fn in (("ours", ours), ("original", orig)):
        if fn is not None:
            fns[name] = (None, diffusers_call(fn))
    fns["sdpa"] = (None, sdpa)
    return fns


def cosine(a: torch.Tensor, b: torch.Tensor):
    """Cosine similarity, None when it is not a finite number (JSON has no NaN)."""
    a, b = a.double().flatten(), b.double().flatten()
    c = float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300))
    return round(c, 5) if math.isfinite(c) else None


def sdpa_fp32_reference(q, k, v, mask, shape: Shape):
    """SDPA in fp32 on the same inputs, on the memory-efficient backend (the math backend would
    materialise [H, N, N] scores: 171 GB at the Wan shape): the accuracy reference, since exact
    fp64 attention is too large here."""
    H, D = shape.H, shape.D
    qh, kh, vh = (t.float().view(shape.B, -1, H, D).transpose(1, 2) for t in (q, k, v))
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return out.transpose(1, 2).reshape(shape.B, -1, H * D)


def lse_fp32_reference(q, k, shape: Shape) -> torch.Tensor:
    """[B, H, Nq] natural-log LSE of the scaled scores in fp32, one head at a time."""
    H, D = shape.H, shape.D
    qh, kh = (t.float().view(shape.B, -1, H, D).transpose(1, 2) for t in (q, k))
    out = torch.empty(shape.B, H, shape.Nq, device=q.device)
    for h in range(H):
        out[:, h] = torch.logsumexp(qh[:, h] @ kh[:, h].transpose(-1, -2) * D ** -0.5, dim=-1)
    return out


def run_shape(shape: Shape, ours, orig) -> dict:
    dev = torch.device("cuda")
    dtype = getattr(torch, shape.dtype)
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(shape.B, shape.Nq, shape.H * shape.D, device=dev, dtype=dtype, generator=g)
    k, v = (torch.randn(shape.B, shape.Nk, shape.H * shape.D, device=dev, dtype=dtype, generator=g)
            for _ in range(2))
    mask = client_mask(shape, dev) if shape.mask else None
    row = {"shape": asdict(shape), "ms": {}, "cosine_vs_sdpa_fp32": {}, "lse_max_abs_err": {},
           "client_fallback": {}, "failed": {}}
    try:
        ref_mask = mask.float() if mask is not None and mask.dtype != torch.bool else mask
        ref = sdpa_fp32_reference(q, k, v, ref_mask, shape)
        ref_lse = lse_fp32_reference(q, k, shape) if shape.lse else None
    except Exception as exc:  # noqa: BLE001 - no reference: report the shape as not measured
        row["failed"]["reference"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return row
    for name, (model, fn) in candidates(shape, ours, orig).items():
        try:
            res = fn(q, k, v, mask)
            if model is not None and model.fallbacks:
                row["client_fallback"][name] = model.fallbacks[0][:200]
                continue
            out, lse = res if isinstance(res, tuple) else (res, None)
            acc = cosine(out, ref)
            lse_err = (round(float((lse.float() - ref_lse).abs().max()), 5)
                       if lse is not None and ref_lse is not None else None)
            ms = median_ms(lambda fn=fn: fn(q, k, v, mask))
            if model is not None and model.fallbacks:  # fell back while being timed
                row["client_fallback"][name] = model.fallbacks[0][:200]
                continue
            row["ms"][name] = round(ms, 4)
            row["cosine_vs_sdpa_fp32"][name] = acc
            if lse_err is not None:
                row["lse_max_abs_err"][name] = lse_err
        except Exception as exc:  # noqa: BLE001 - report and go on with the next candidate
            row["failed"][name] = f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            torch.cuda.empty_cache()
    return row


def markdown_table(rows: list) -> str:
    """The README's table of a bench_clients JSON: ms of ours, the original and SDPA per shape,
    and for masked shapes our masked call against our unmasked call. On masked shapes the
    original's figure is its direct call, which ignores the mask (a wrong result)."""
    lines = [("| shape | ours ms | original ms | SDPA ms | our speed vs original | vs SDPA "
              "| our masked / unmasked time |"), "|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms"]

        def cell(name, ms=ms):
            return f"{ms[name]:.3f}" if name in ms else "-"

        def ratio(a, b, ms=ms):
            return f"{ms[b] / ms[a]:.2f}x" if a in ms and b in ms else "-"

        orig = "original" if "original" in ms else "original direct (mask ignored)"
        lines.append(f"| {r['shape']['name']} | {cell('ours')} | {cell(orig)} | {cell('sdpa')} | "
                     f"{ratio('ours', orig)} | {ratio('ours', 'sdpa')} | "
                     + (f"{ms['ours'] / ms['ours unmasked']:.2f}" if "ours unmasked" in ms
                        else "-") + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", metavar="NAME", help="run only these (see --list)")
    ap.add_argument("--list", action="store_true", help="print the shapes and exit")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--tag", help="added to the JSON's name (default: 'subset' with --shapes)")
    ap.add_argument("--table", type=Path, metavar="JSON",
                    help="print the README table of a written JSON and exit")
    args = ap.parse_args(argv)
    if args.tag is not None and not args.tag.replace("-", "").replace("_", "").isalnum():
        ap.error(f"--tag: letters, digits, '-' and '_' only, got {args.tag!r}")
    if args.shapes:
        unknown = [n for n in args.shapes if n not in BY_NAME]
        if unknown:
            ap.error(f"--shapes: unknown {unknown}; known: {sorted(BY_NAME)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    shapes = [BY_NAME[n] for n in args.shapes] if args.shapes else SHAPES
    if args.table:
        try:
            rows = json.loads(args.table.read_text())["rows"]
            print(markdown_table(rows))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
            print(f"--table {args.table}: not a bench_clients JSON ({type(exc).__name__}: "
                  f"{exc})", file=sys.stderr)
            return 2
        return 0
    if args.list:
        for s in shapes:
            extra = (f", mask {s.mask} " + (f"({s.valid_keys} valid keys)"
                     if s.pattern == "key_padding" else f"({s.pattern})")) if s.mask else ""
            extra += ", return_lse" if s.lse else ""
            print(f"{s.name}: B={s.B} H={s.H} Nq={s.Nq} Nk={s.Nk} D={s.D} {s.dtype}, "
                  f"{s.client} call{extra}")
        return 0
    if not torch.cuda.is_available():
        print("bench_clients.py needs a CUDA GPU (use --list to see the shapes)", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    import sageattention as sa
    from sageattention import dispatch, ops

    pkg = original_package()
    orig = pkg.sageattn if pkg is not None else None
    dev = torch.device("cuda")
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "sageattention": sa.__version__,
        # Which kernels `sageattn` runs here (Plan.backend "cuda": the compiled mma.sync kernels
        # where they can run; "triton" otherwise) at these shapes (all above dispatch's small-call
        # limit), and why the compiled units did not load.
        "ours_plan": repr(dispatch.default_plan(dev, 128)),
        "compiled_extension": ops.load() is not None,
        "extension_reason": ops._state.reason,
        "original": os.environ.get("SAGEATTN_ORIGINAL_SRC") if pkg is not None else None,
        "original_note": "the original's sageattn drops smooth_k (**kwargs) and runs with K "
                         "smoothing; it has no attn_mask parameter",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": "median of 10-40 runs, L2 flushed before each, CUDA events; the clients' "
                  "call patterns (sageattention.testing.ComfyLikeAttention, diffusers' NHD call)",
    }
    tag = args.tag if args.tag is not None else ("subset" if args.shapes else "")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / (f"bench-clients-{meta['gpu'].replace(' ', '_')}-{meta['date'][:10]}"
                       + (f"-{tag}" if tag else "") + ".json")
    rows = []
    for s in shapes:
        row = run_shape(s, sa.sageattn, orig)
        rows.append(row)
        print(f"{s.name}: " + "  ".join(
            f"{n}={t:.3f} ms (cos {row['cosine_vs_sdpa_fp32'][n]})" for n, t in row["ms"].items())
              + "".join(f"  {n}: client ran PyTorch" for n in row["client_fallback"])
              + "".join(f"  {n} FAILED: {e}" for n, e in row["failed"].items()), flush=True)
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
