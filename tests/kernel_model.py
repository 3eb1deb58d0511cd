"""sageattention.reference configured with the kernels' own tile sizes for a given case."""
from sageattention import reference
from sageattention.triton.forward import head_dim_padded, tile_config


def _blocks(d, pv_fp8, is_causal):
    cfg = tile_config(head_dim_padded(d), pv_fp8, is_causal)
    return cfg.block_m, cfg.block_n


def kernel_model(q, k, v, tensor_layout="HND", is_causal=False, pv="fp16", **kw):
    """Defaults to per_thread scale groups, what every entry point uses unless told otherwise."""
    block_m, block_n = _blocks(q.shape[-1], pv == "fp8", is_causal)
    kw.setdefault("q_gran", "per_thread")
    kw.setdefault("k_gran", "per_thread")
    kw.setdefault("block_m", block_m)
    kw.setdefault("block_n", block_n)
    return reference.sage_reference(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal,
                                    pv=pv, **kw)


def kernel_model_varlen(q, k, v, cu_q, cu_k, is_causal=False, pv="fp16", **kw):
    block_m, block_n = _blocks(q.shape[-1], pv == "fp8", is_causal)
    return reference.sage_reference_varlen(q, k, v, cu_q, cu_k, is_causal=is_causal, pv=pv,
                                           block_m=block_m, block_n=block_n, **kw)
