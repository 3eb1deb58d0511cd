"""Pure-PyTorch models of the attention the kernels compute (they run on the CPU).

Two yardsticks:

- :func:`attention_fp64`: exact attention in float64 (what the kernels approximate), with the
  same semantics as torch SDPA for ``is_causal`` (top-left aligned) and masks, GQA, and the
  conventions of this package for rows whose keys are all masked out (zeros, LSE -inf).
- :func:`sage_reference`: the quantized algorithm step by step: INT8 Q and K with the scale
  layouts of :mod:`sageattention.granularity`, K smoothing, the online base-2 softmax over key
  blocks, P rounded to FP16/BF16 (or P and V to FP8 e4m3) before P·V. A kernel must match it
  far more closely than it matches :func:`attention_fp64`.

Inputs are [B, H, N, D] ("HND") tensors unless ``tensor_layout="NHD"`` is given.
"""
from __future__ import annotations

import math

import torch

from . import granularity

LOG2E = 1.4426950408889634
FP8_P_SCALE = 448.0


def _to_hnd(x: torch.Tensor, tensor_layout: str) -> torch.Tensor:
    return x.transpose(1, 2) if tensor_layout == "NHD" else x


def _repeat_kv(x: torch.Tensor, n_q_heads: int) -> torch.Tensor:
    return x.repeat_interleave(n_q_heads // x.shape[1], dim=1)


def _visibility(nq: int, nk: int, is_causal: bool, attn_mask, shape, device):
    """Boolean keep-mask and additive bias (natural-log units) broadcast to [B, H, Nq, Nk]."""
    keep = torch.ones(shape, dtype=torch.bool, device=device)
    bias = torch.zeros((), dtype=torch.float64, device=device)
    if is_causal:
        keep = keep & torch.ones(nq, nk, dtype=torch.bool, device=device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask.to(device)
        else:
            bias = attn_mask.to(device=device, dtype=torch.float64)
    return keep, bias


def attention_fp64(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, attn_mask=None,
                   return_lse=False):
    """Exact attention in float64 on the CPU; output in float64, layout as given."""
    q, k, v = (_to_hnd(t, tensor_layout).detach().cpu().double() for t in (q, k, v))
    _, H, Nq, D = q.shape
    Nk = k.shape[2]
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    k, v = _repeat_kv(k, H), _repeat_kv(v, H)
    s = torch.einsum("bhmd,bhnd->bhmn", q, k) * sm_scale
    keep, bias = _visibility(Nq, Nk, is_causal, attn_mask, s.shape, s.device)
    s = torch.where(keep, s + bias, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isfinite(lse), lse, 0.0)[..., None])
    o = torch.einsum("bhmn,bhnd->bhmd", p, v)
    o = _to_hnd(o, tensor_layout)
    return (o, lse) if return_lse else o


def quantize_groups(x: torch.Tensor, mode: int, tile: int, scale_mult: float = 1.0,
                    mean: torch.Tensor | None = None):
    """INT8-quantize x [B, H, N, D] with the group layout ``mode``.

    Returns (int8 values as int32 [B, H, N, D], per-row dequantization scale float32
    [B, H, N] = group max|x| / 127 * scale_mult). Same arithmetic as the Triton kernels:
    fp32, y = x * (127 / amax), rounded half away from zero.
    """
    x = x.float()
    if mean is not None:
        x = x - mean.float()[:, :, None, :]
    B, H, N, _ = x.shape
    gid = granularity.group_ids(N, mode, tile, device=x.device)
    ng = int(gid.max().item()) + 1 if N else 0
    row_amax = x.abs().amax(dim=-1)  # [B, H, N]
    g_amax = torch.zeros((B, H, ng), dtype=torch.float32, device=x.device)
    g_amax = g_amax.scatter_reduce(2, gid.expand(B, H, N), row_amax, reduce="amax")
    amax = torch.clamp(g_amax.gather(2, gid.expand(B, H, N)), min=1e-30)
    y = x * (127.0 / amax)[..., None]
    y = torch.where(y >= 0, y + 0.5, y - 0.5).clamp(-127, 127).trunc().to(torch.int32)
    return y, amax * (scale_mult / 127.0)


def _online_softmax_pv(q8, qs, k8, ks, v, keep, bias2, block_n, pv):
    """Blockwise online softmax in base 2 with P rounded as the kernel rounds it.

    q8 [B,H,M,D] int32, qs [B,H,M]; k8/ks likewise for keys (already expanded to H heads);
    v [B,H,N,D] (float, or fp8-quantized float values when pv == "fp8"); keep [B,H,M,N] bool;
    bias2 additive bias in base-2 units. Returns (acc / l, lse in base 2).
    """
    B, H, M, _ = q8.shape
    N = k8.shape[2]
    m_i = torch.full((B, H, M), float("-inf"), dtype=torch.float32)
    l_i = torch.zeros((B, H, M), dtype=torch.float32)
    acc = torch.zeros((B, H, M, v.shape[-1]), dtype=torch.float64)
    for n0 in range(0, N, block_n):
        n1 = min(N, n0 + block_n)
        s = (q8.double() @ k8[:, :, n0:n1].double().transpose(-1, -2)).float()
        s = s * qs[..., None] * ks[:, :, None, n0:n1]
        s = s + bias2[..., n0:n1] if bias2.dim() else s + bias2
        s = torch.where(keep[..., n0:n1], s, float("-inf"))
        m_new = torch.maximum(m_i, s.amax(dim=-1))
        m_use = torch.where(m_new == float("-inf"), 0.0, m_new)
        p = torch.exp2(s - m_use[..., None])
        alpha = torch.exp2(m_i - m_use)
        l_i = l_i * alpha + p.sum(-1)
        if pv == "fp8":
            p_op = (p * FP8_P_SCALE).to(torch.float8_e4m3fn).double()
        else:
            p_op = p.to(pv).double()
        acc = acc * alpha[..., None].double() + p_op @ v[:, :, n0:n1].double()
        m_i = m_new
    seen = l_i > 0
    o = torch.where(seen[..., None], acc / torch.where(seen, l_i, 1.0)[..., None].double(), 0.0)
    lse2 = torch.where(seen, m_i + torch.log2(torch.where(seen, l_i, 1.0)), float("-inf"))
    return o, lse2


def sage_reference(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, smooth_k=True,
                   smooth_v=False, attn_mask=None, return_lse=False, q_gran="per_block",
                   k_gran="per_block", pv="fp16", block_m=128, block_n=64):
    """The quantized algorithm on the CPU (float64 where the kernels use fp32 accumulators).

    pv: "fp16" or "bf16" (P rounded to that type, V used as given) or "fp8" (P*448 and
    V/scale rounded to e4m3). block_m is the per_block query group; block_n the key block of
    the online softmax. Output float64 in the given layout; lse natural log [B, H, Nq].
    """
    q, k, v = (_to_hnd(t, tensor_layout).detach().cpu() for t in (q, k, v))
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    km = torch.mean(k, dim=2, dtype=torch.float32) if smooth_k else None  # as the kernels do
    q8, qs = quantize_groups(q, granularity.q_mode(q_gran), block_m, sm_scale * LOG2E)
    k8, ks = quantize_groups(k, granularity.k_mode(k_gran), granularity.K_BLOCK, 1.0, km)
    k8, ks = _repeat_kv(k8, H), _repeat_kv(ks, H)
    vm = None
    if pv == "fp8":
        vf = v.float()
        if smooth_v:
            vm = vf.mean(dim=2)
            vf = vf - vm[:, :, None, :]
        scale = torch.clamp(vf.abs().amax(dim=2), min=1e-30) / 448.0  # [B, Hkv, D]
        v_op = (vf / scale[:, :, None, :]).to(torch.float8_e4m3fn).double()
        v_op = v_op * scale[:, :, None, :].double()
        pv_mode = "fp8"
    else:
        v_op = v
        pv_mode = {"fp16": torch.float16, "bf16": torch.bfloat16}[pv]
    v_op = _repeat_kv(v_op, H)
    keep, bias = _visibility(Nq, Nk, is_causal, attn_mask, (B, H, Nq, Nk), "cpu")
    o, lse2 = _online_softmax_pv(q8, qs, k8, ks, v_op, keep, (bias * LOG2E).float(), block_n,
                                 pv_mode)
    if pv == "fp8":
        o = o / FP8_P_SCALE
        if vm is not None:
            o = o + _repeat_kv(vm, H)[:, :, None, :].double()
    lse = lse2.double() / LOG2E
    if km is not None:
        lse = lse + (q.double() @ _repeat_kv(km, H).double()[..., None])[..., 0] * sm_scale
    o = _to_hnd(o, tensor_layout)
    return (o, lse) if return_lse else o


def sage_reference_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, is_causal=False, sm_scale=None,
                          smooth_k=True, pv="fp16", block_m=128, block_n=64):
    """sage_reference for packed [total_tokens, H, D] inputs.

    Like the kernels, K is smoothed with the mean over all packed tokens and quantized on the
    packed sequence (its K groups may straddle sequences); Q groups restart at each sequence.
    """
    q, k, v = (t.detach().cpu() for t in (q, k, v))
    H, D = q.shape[1], q.shape[2]
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    kp = k.transpose(0, 1)[None]  # [1, Hkv, total, D]
    km = torch.mean(kp, dim=2, dtype=torch.float32) if smooth_k else None
    k8, ks = quantize_groups(kp, granularity.MODE_TILE, granularity.K_BLOCK, 1.0, km)
    k8, ks = _repeat_kv(k8, H), _repeat_kv(ks, H)
    v_all = _repeat_kv(v.transpose(0, 1)[None], H)
    if pv == "fp8":
        vf = v.transpose(0, 1)[None].float()
        scale = torch.clamp(vf.abs().amax(dim=2), min=1e-30) / 448.0
        v_all = _repeat_kv((vf / scale[:, :, None, :]).to(torch.float8_e4m3fn).double()
                           * scale[:, :, None, :].double(), H)
        pv_mode = "fp8"
    else:
        pv_mode = {"fp16": torch.float16, "bf16": torch.bfloat16}[pv]
    out = torch.zeros(q.shape, dtype=torch.float64)
    for i in range(cu_seqlens_q.numel() - 1):
        qa, qb = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
        ka, kb = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        if qb == qa:
            continue
        qi = q[qa:qb].transpose(0, 1)[None]
        q8, qs = quantize_groups(qi, granularity.MODE_TILE, block_m, sm_scale * LOG2E)
        keep, _ = _visibility(qb - qa, kb - ka, is_causal, None, (1, H, qb - qa, kb - ka), "cpu")
        o, _ = _online_softmax_pv(q8, qs, k8[:, :, ka:kb], ks[:, :, ka:kb], v_all[:, :, ka:kb],
                                  keep, torch.zeros(()), block_n, pv_mode)
        if pv == "fp8":
            o = o / FP8_P_SCALE
        out[qa:qb] = o[0].transpose(0, 1)
    return out


def attention_fp64_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, is_causal=False, sm_scale=None,
                          return_lse=False):
    """Exact float64 attention of each packed sequence (lse: [H, total_q])."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float64)
    for i in range(cu_seqlens_q.numel() - 1):
        qa, qb = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
        ka, kb = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        if qb == qa:
            continue
        o, l_ = attention_fp64(q[qa:qb][None], k[ka:kb][None], v[ka:kb][None], tensor_layout="NHD",
                               is_causal=is_causal, sm_scale=sm_scale, return_lse=True)
        out[qa:qb] = o[0]
        lse[:, qa:qb] = l_[0]
    return (out, lse) if return_lse else out


def accuracy(out: torch.Tensor, ref: torch.Tensor) -> dict:
    """Cosine similarity and relative L1 error of out against ref (float64)."""
    a, b = out.detach().double().cpu().flatten(), ref.detach().double().cpu().flatten()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    rel_l1 = ((a - b).abs().sum() / b.abs().sum().clamp(min=1e-300)).item()
    return {"cosine": cos, "rel_l1": rel_l1, "finite": bool(torch.isfinite(a).all())}
