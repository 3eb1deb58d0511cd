"""Compile sageattention's Triton kernels for an explicit GPU target, no GPU needed.

Run as a script by tests/test_triton_compile.py, in a process without TRITON_INTERPRET (under
the interpreter the kernels are not compilable objects): reads a JSON list of cases on stdin,
writes one JSON result per case on stdout (in order): the tile, the shared memory per block,
whether each key loop of the kernel is fed by asynchronous copies (software-pipelined), or the
compiler's error. Each case is compiled as a real launch specializes it.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sageattention import granularity
from sageattention.triton import attention, block_map, forward

# Shared memory one block may use (the opt-in maximum) per arch: sm80 163 KB, sm86/89/120
# 99 KB, sm90 227 KB.
SMEM_PER_BLOCK = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 120: 101376}

# How Triton specializes a real launch: 16-byte-aligned pointers, and integer arguments that
# are multiples of 16 or equal to 1 (a unit stride becomes a constant). Without this the
# compiler vectorizes nothing and reports a quarter of the real shared memory.
_DIV16 = {"stride_qb", "stride_qh", "stride_qn", "stride_vb", "stride_vh", "stride_vn",
          "stride_ob", "stride_oh", "stride_on", "stride_mm", "N_PAD", "D"}
_ONE = {"stride_qd", "stride_vd", "stride_od", "stride_mn"}


def compile_kernel(jit_fn, types: dict, constexprs: dict, cc: int, num_warps: int,
                   num_stages: int, specialize: bool = False):
    """types: argument name -> Triton type; arguments not named there are i32 scalars.
    specialize: as a launch with the usual tensors would (_DIV16, _ONE)."""
    if specialize:
        constexprs = dict(constexprs, **{n: 1 for n in _ONE if n in jit_fn.arg_names})
    sig = {name: "constexpr" if name in constexprs else types.get(name, "i32")
           for name in jit_fn.arg_names}
    attrs = {}
    if specialize:
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(jit_fn.arg_names)
                 if sig[n].startswith("*") or n in _DIV16}
    return triton.compile(ASTSource(jit_fn, sig, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", cc, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})


def attention_case(case: dict):
    """The configuration forward.attention_forward launches for the case on its arch."""
    d, pv_fp8, causal, mask_kind, dtype = (case[k] for k in ("d", "pv_fp8", "causal",
                                                            "mask_kind", "dtype"))
    d_pad = forward.head_dim_padded(d)
    cfg = forward.tile_config(d_pad, pv_fp8, causal, SMEM_PER_BLOCK[case["cc"]],
                              masked=mask_kind != 0)
    types = {"Q": f"*{dtype}", "O": f"*{dtype}", "K8": "*i8", "LISTS": "*i32",
             "V": "*fp8e4nv" if pv_fp8 else f"*{dtype}",
             "MASK": {0: "*fp32", 1: "*i1", 2: f"*{dtype}"}[mask_kind],
             "q_scale_mult": "fp32", "lse_scale": "fp32"}
    types.update({name: "*fp32" for name in ("KS", "VS", "LSE", "KM", "CU_Q", "CU_K")})
    constexprs = forward.kernel_constants(
        cfg, d=d, q_mode=granularity.q_mode("per_thread"), is_causal=causal,
        mask_kind=mask_kind, pv_fp8=pv_fp8, pv_accum="fp32+fp32", return_lse=False,
        has_km=False, varlen=False)
    return attention.attention_kernel, types, constexprs, cfg.num_warps, cfg.num_stages


def block_map_case(case: dict):
    # bits: the compiled kernels' pass (64-key tiles, visibility bits, marked float tiles);
    # otherwise the Triton path's (its tiles, lists only).
    bits = case.get("bits", False)
    if case["kernel"] == "compact":
        return (block_map._compact_kernel, {"KINDS": "*i8", "LISTS": "*i32"},
                {"CHUNK": block_map.COMPACT_CHUNK, "MARK_FLOAT": bits}, 4, 1)
    return (block_map._tile_kinds_kernel,
            {"MASK": case["mask_type"], "KBAD": "*fp32", "KINDS": "*i8",
             "BITS": "*i64" if bits else "*i8"},
            {"BLOCK_M": 128, "BLOCK_N": block_map.BITS_BLOCK_N if bits else 128,
             "MASK_KIND": case["mask_kind"], "IS_CAUSAL": case["causal"], "WITH_BITS": bits},
            4, 1)


def run(case: dict) -> dict:
    fn, types, constexprs, warps, stages = (attention_case(case) if case["kernel"] == "attention"
                                            else block_map_case(case))
    try:
        k = compile_kernel(fn, types, constexprs, case["cc"], warps, stages, specialize=True)
    except Exception as exc:  # noqa: BLE001 - the test reports the compiler's message
        return {"error": f"{type(exc).__name__}: {str(exc)[-2000:]}"}
    return {"shared": k.metadata.shared, "tile": [constexprs.get("BLOCK_M"), constexprs.get(
        "BLOCK_N"), warps, stages], "loops_pipelined": [
        "async_copy_global_to_local" in body or "async_tma" in body
        for body in loop_bodies(k.asm["ttgir"])]}


def loop_bodies(ttgir: str) -> list:
    """The text of each outermost scf.for body: from its line to the closing brace at the
    loop's own indentation."""
    lines = ttgir.splitlines()
    bodies, i = [], 0
    while i < len(lines):
        if "= scf.for " in lines[i] or lines[i].lstrip().startswith("scf.for "):
            indent = len(lines[i]) - len(lines[i].lstrip())
            j = i + 1
            while j < len(lines) and not (lines[j].startswith(" " * indent + "}")
                                          and len(lines[j]) - len(lines[j].lstrip()) == indent):
                j += 1
            bodies.append("\n".join(lines[i:j]))
            i = j
        i += 1
    return bodies


if __name__ == "__main__":
    cases = json.load(sys.stdin)
    # One compile per process at a time (each takes seconds): as many processes as CPUs.
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for result in pool.map(run, cases):
            print(json.dumps(result), flush=True)
