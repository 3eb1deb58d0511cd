"""benchmarks/sass_mma.py: the SASS instruction count per attention kernel (the check that the
FP16-accumulating modes compile to the FP16-accumulating MMA on GeForce archs)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import sass_mma

SNIPPET = """
		Function : _ZN13sageattention16attention_kernelILi128ELb0ELi4E6__halfEEvNS_10AttnParamsE
        /*0a50*/                   IMMA.16832.S8.S8 R24, R88.ROW, R20.COL, R24 ;
        /*0a60*/                   QMMA.16832.F16.E4M3.E4M3 R4, R8.ROW, R12.COL, R4 ;
        /*0a70*/                   QMMA.16832.F16.E4M3.E4M3 R6, R8.ROW, R14.COL, R6 ;
		Function : _ZN13sageattention16attention_kernelILi64ELb1ELi1E6__halfEEvNS_10AttnParamsE
        /*0b50*/                   HMMA.16816.F16 R4, R8.ROW, R12.COL, R4 ;
		Function : _ZN13sageattention16attention_kernelILi64ELb1ELi1E6__halfLb1EEEvNS_10AttnParamsE
        /*0d50*/                   HMMA.16816.F16 R4, R8.ROW, R12.COL, R4 ;
        /*0d60*/                   HMMA.16816.F16 R4, R8.ROW, R12.COL, R4 ;
		Function : _ZN13sageattention11quant_kernelEv
        /*0c50*/                   HMMA.16816.F32 R4, R8.ROW, R12.COL, R4 ;
"""


def test_counts_per_kernel_and_mode():
    got = sass_mma.parse_sass(SNIPPET)
    fp8 = "D128 full pv4 (fp8 P.V, fp16 accum per tile, V half)"
    fp16 = "D64 causal pv1 (fp16 P.V, fp16 accum per tile, V half)"
    # (the masked instantiation, a fifth template argument, is counted on its own)
    assert got == {fp8: {"IMMA.16832.S8.S8": 1, "QMMA.16832.F16.E4M3.E4M3": 2},
                   fp16: {"HMMA.16816.F16": 1},
                   fp16 + " masked": {"HMMA.16816.F16": 2}}  # the non-attention kernel is not
