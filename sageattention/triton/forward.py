"""Host side of the Triton path: tile configuration, K/V preparation and the kernel launch.

Inputs arrive already checked and viewed as [B, H, N, D] (sageattention.core does that); a
varlen batch arrives as B=1 with cu_seqlens. Nothing here copies Q, and V is only copied on
the FP8 path (where it must be quantized anyway).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .. import granularity, ops
from .attention import attention_kernel
from .block_map import MAX_GRID_Y, block_lists
from .quant import k_mean, kv_stats, pad_to, quantize_int8, quantize_v_fp8

try:  # Triton >= 2.1: raised before a kernel runs when the GPU lacks its shared memory
    from triton.runtime.errors import OutOfResources
except ImportError:  # pragma: no cover - older Triton: nothing to catch
    class OutOfResources(Exception):
        pass

LOG2E = 1.4426950408889634
# MASK_KIND of attention_kernel
MASK_NONE, MASK_BOOL, MASK_ADD = 0, 1, 2


@dataclass(frozen=True)
class TileConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def head_dim_padded(d: int) -> int:
    """The power of two the kernels work in: 64, 128 or 256 (zeros fill the rest)."""
    return max(64, 1 << (d - 1).bit_length())


# Tile shapes per (padded head dim, FP8 P·V, causal), measured on an H100 with
# benchmarks/tune_tiles.py at B=4, H=32, N=4096 and 16384 (docs/perf-notes.md has the sweep).
_TILES = {
    (64, False, False): TileConfig(64, 128, 4, 3),
    (64, False, True): TileConfig(64, 128, 4, 3),
    (64, True, False): TileConfig(64, 128, 4, 3),
    (64, True, True): TileConfig(64, 128, 4, 3),
    (128, False, False): TileConfig(128, 128, 8, 3),
    (128, False, True): TileConfig(128, 64, 4, 3),
    (128, True, False): TileConfig(64, 128, 4, 3),
    (128, True, True): TileConfig(64, 128, 4, 3),
}
_TILE_256 = TileConfig(64, 32, 8, 2)  # D up to 256: registers and shared memory run out first

# The GPUs with ~100 KB of shared memory per SM (sm86 RTX 30, sm89 RTX 40, sm120 RTX 50) allow
# 99 KB per block, where the H100 the table was tuned on allows 227 KB: there the FP16 D=128
# tile above needs 113 KB and would not launch (tests/test_triton_compile.py compiles every
# tile for every arch). The original's tile shape for that case takes 64 KB.
SMALL_SMEM_PER_BLOCK = 101376
_TILES_SMALL_SMEM = {
    (128, False, False): TileConfig(128, 64, 8, 3),
}


# Masked calls on the large-memory GPUs: the FP8 D=128 tile's mask buffers take it from 105 to
# 113 KB per block, one block per SM on the H200 (228 KB) instead of two; two pipeline stages
# (80 KB) keep two. Measured on the H200, Flux-size key-padded call: 1.67 -> 1.14 ms (bool),
# 1.43 -> 1.02 ms (additive), unmasked 1.01-1.08 ms
# (benchmarks/results/mask-tiles-ab-NVIDIA_H200-2026-12-01.json).
_TILES_MASKED = {
    (128, True, False): TileConfig(64, 128, 4, 2),
    (128, True, True): TileConfig(64, 128, 4, 2),
}


def tile_config(d_pad: int, pv_fp8: bool, is_causal: bool,
                smem_per_block: int | None = None, masked: bool = False) -> TileConfig:
    """The tile for a call; smem_per_block: the GPU's opt-in shared memory per block (None:
    the tuned table, as on the H100); masked: the call has an attn_mask."""
    key = (d_pad, bool(pv_fp8), bool(is_causal))
    if smem_per_block is not None and smem_per_block <= SMALL_SMEM_PER_BLOCK:
        if key in _TILES_SMALL_SMEM:
            return _TILES_SMALL_SMEM[key]
    elif masked and key in _TILES_MASKED:
        return _TILES_MASKED[key]
    return _TILES.get(key, _TILE_256)


def smaller_tile(cfg: TileConfig) -> TileConfig | None:
    """The next tile to try when cfg does not fit the GPU (fewer pipeline stages, then fewer
    keys, then fewer query rows), or None."""
    if cfg.num_stages > 2:
        return replace(cfg, num_stages=cfg.num_stages - 1)
    if cfg.block_n > 32:
        return replace(cfg, block_n=cfg.block_n // 2)
    if cfg.block_m > 64:
        return replace(cfg, block_m=cfg.block_m // 2, num_warps=max(4, cfg.num_warps // 2))
    return None


def smem_per_block(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    if device.index not in _SMEM_CACHE:
        props = torch.cuda.get_device_properties(device)
        _SMEM_CACHE[device.index] = getattr(props, "shared_memory_per_block_optin", None)
    return _SMEM_CACHE[device.index]


_SMEM_CACHE: dict = {}
# Tiles that did not fit, per (device, call kind): skipped on later calls.
_TOO_BIG: set = set()


def fp8_accumulate_every(pv_accum: str, block_n: int) -> int:
    """How many FP8 products the MMA may sum before the result is added into FP32.

    Hopper's FP8 MMA keeps about 22 bits in its accumulator and truncates; summing a whole row
    there biases outputs whose V channels do not average out (measured: relative L1 0.0145
    instead of 0.0079 on inputs with a V bias). "fp32" adds every MMA step (32 products),
    "fp32+fp32" once per key block (the two-level scheme), "fp32+fp16" leaves the compiler's
    faster default (docs/perf-notes.md has the cost of each).
    """
    return {"fp32": 32, "fp32+fp32": block_n, "fp32+fp16": 0}[pv_accum]


def attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    *,
    sm_scale: float,
    is_causal: bool = False,
    smooth_k: bool = True,
    smooth_v: bool = False,
    q_gran: str = "per_block",
    k_gran: str = "per_block",
    pv_fp8: bool = False,
    attn_mask: torch.Tensor | None = None,
    return_lse: bool = False,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    config: TileConfig | None = None,
    pv_accum: str = "fp32+fp32",
):
    """Write attention(q, k, v) into ``out`` (a [B, H, Nq, D] view); return the LSE or None.

    q [B, Hq, Nq, D], k/v [B, Hkv, Nk, D] (any strides), attn_mask None or expanded to
    [B, Hq, Nq, Nk] (bool or float). Varlen: B == 1, cu_seqlens_* int32 [batch + 1].
    config overrides the tile shape (benchmarks/tune_tiles.py); per_block Q groups follow it.
    pv_accum: the FP8 P·V accumulation mode (fp8_accumulate_every).
    """
    B, Hq, Nq, D = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    varlen = cu_seqlens_q is not None
    d_pad = head_dim_padded(D)
    cfg = config or tile_config(d_pad, pv_fp8, is_causal, smem_per_block(q.device),
                                masked=attn_mask is not None)
    q_mode = granularity.q_mode(q_gran)
    k_mode = granularity.k_mode(k_gran)

    # Every key block a program may touch must exist in the padded K (varlen sequences start
    # anywhere inside a tile, so one more block is added there).
    n_pad = pad_to(Nk, max(granularity.K_BLOCK, cfg.block_n)) + (cfg.block_n if varlen else 0)
    n_pad = pad_to(n_pad, granularity.K_BLOCK)
    compiled = None
    if pv_fp8:
        # One pass gives K's mean and V's range; V is then quantized to e4m3 per channel.
        km, vm, v_scale = kv_stats(k, v, d_pad, smooth_v=smooth_v)
        km = km if smooth_k else None
        v_op = quantize_v_fp8(v, d_pad, n_pad, v_scale, mean=vm)
        v_strides = (0, 0, 0, 0)  # V8 and its scales are contiguous: the kernel derives them
    else:
        vm = None
        v_op, v_scale = v, v  # v_scale: unused placeholder pointer
        v_strides = tuple(v.stride())
        # The compiled extension does K's mean and quantization in one call where it can run.
        compiled = ops.quant_int8(k, k_mode, n_pad, d_pad, smooth_k, per_row=True)
        if compiled is not None:
            k8, ks, km = compiled
            km = km if smooth_k else None
        else:
            km = k_mean(k) if smooth_k else None
    # One scale per key, NaN for a key holding a NaN or an infinity: the kernel's per-key scale
    # multiply then makes exactly the scores SDPA makes NaN non-finite, at no cost per score.
    if compiled is None:
        k8, ks = quantize_int8(k, k_mode, granularity.K_BLOCK, d_pad, n_pad, mean=km,
                               per_row=True)

    # With V's mean removed (FP8 + smooth_v) the mean is added back below, but only to rows that
    # saw a key: masks can leave a row empty, and the LSE tells which.
    need_lse = return_lse or (vm is not None and attn_mask is not None)
    lse = torch.empty((B, Hq, Nq), dtype=torch.float32, device=q.device) if need_lse else None
    if attn_mask is None:
        mask_kind, mask_arg, mask_strides = MASK_NONE, ks, (0, 0, 0, 0)
    else:
        mask_kind = MASK_BOOL if attn_mask.dtype == torch.bool else MASK_ADD
        mask_arg, mask_strides = attn_mask, tuple(attn_mask.stride())
    n_batch = cu_seqlens_q.numel() - 1 if varlen else B
    rows = max_seqlen_q if varlen else Nq
    n_bh = n_batch * Hq

    def launch(cfg: TileConfig):
        if attn_mask is None:
            lists_arg, list_strides = ks, (0, 0, 0, 0)
        else:
            bl = block_lists(attn_mask, ks, block_m=cfg.block_m, block_n=cfg.block_n,
                             is_causal=is_causal)
            lists_arg, list_strides = bl.lists, (bl.stride_b, bl.stride_h, bl.stride_m, bl.n_kb)
        grid = (triton_cdiv(rows, cfg.block_m), min(n_bh, MAX_GRID_Y),
                triton_cdiv(n_bh, MAX_GRID_Y))
        attention_kernel[grid](
            q, k8, ks, v_op, v_scale, out,
            lse if lse is not None else ks, km if km is not None else ks,
            mask_arg, lists_arg, cu_seqlens_q if varlen else ks, cu_seqlens_k if varlen else ks,
            *q.stride(), *v_strides, *out.stride(), *mask_strides, *list_strides,
            Hq, n_bh, Hq // Hkv, Nq, Nk, n_pad, D, sm_scale * LOG2E, sm_scale,
            **kernel_constants(cfg, d=D, q_mode=q_mode, is_causal=is_causal,
                               mask_kind=mask_kind, pv_fp8=pv_fp8, pv_accum=pv_accum,
                               return_lse=need_lse, has_km=km is not None, varlen=varlen),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )

    launch_fitting(launch, cfg, (q.device.index, d_pad, bool(pv_fp8), bool(is_causal),
                                 mask_kind, q.dtype, varlen))
    if vm is not None:
        # V was quantized with its channel mean removed; every visible row sums to 1 in P.
        mean = vm[:, :, None, :].repeat_interleave(Hq // Hkv, dim=1)
        if lse is not None:
            mean = mean * torch.isfinite(lse)[..., None]
        out += mean.to(out.dtype)
    return lse if return_lse else None


def kernel_constants(cfg: TileConfig, *, d: int, q_mode: int, is_causal: bool, mask_kind: int,
                     pv_fp8: bool, pv_accum: str, return_lse: bool, has_km: bool,
                     varlen: bool) -> dict:
    """The compile-time arguments of attention_kernel for a call (tests/triton_aot.py compiles
    the same ones for each arch)."""
    d_pad = head_dim_padded(d)
    return {
        "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "D_PAD": d_pad,
        "Q_MODE": q_mode, "IS_CAUSAL": bool(is_causal),
        "MASK_KIND": mask_kind, "PV_FP8": bool(pv_fp8), "RETURN_LSE": bool(return_lse),
        "HAS_KM": bool(has_km), "VARLEN": bool(varlen), "EVEN_D": (d == d_pad),
        "FP8_ACC_EVERY": fp8_accumulate_every(pv_accum, cfg.block_n) if pv_fp8 else 0}


def launch_fitting(launch, cfg: TileConfig, kind: tuple) -> TileConfig:
    """Run launch(cfg), or launch with the next smaller tile while the GPU lacks the shared
    memory (or registers) the compiled kernel asks for: Triton refuses such a kernel before it
    runs, so nothing was written. The tile table is tuned on an H100; a GPU, or a Triton
    version, whose kernels need more than it has still gets a working call. Returns the tile
    that ran; tiles that did not fit are skipped on later calls of the same kind."""
    first = cfg
    while cfg is not None:
        if (kind, cfg) not in _TOO_BIG:
            try:
                launch(cfg)
                return cfg
            except OutOfResources:
                _TOO_BIG.add((kind, cfg))
        cfg = smaller_tile(cfg)
    raise RuntimeError(f"sageattention: no Triton tile fits this GPU for this call (the "
                       f"smallest tried after {first} still needs more shared memory or "
                       f"registers than the GPU has); use torch SDPA for it")


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b) if a > 0 else 1
