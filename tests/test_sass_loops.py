"""benchmarks/sass_loops.py: the largest loops of each attention kernel and their opcodes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import sass_loops

SNIPPET = """
		Function : _ZN13sageattention16attention_kernelILi128ELb0ELi0E6__halfEEvNS_10AttnParamsE
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   IMMA.16832.S8.S8 R24, R88.ROW, R20.COL, R24 ;
        /*0020*/                   LDL R3, [R1+0x8] ;
        /*0030*/                   HMMA.16816.F32 R4, R8.ROW, R12.COL, R4 ;
        /*0040*/               @P0 BRA 0x10 ;
        /*0050*/                   IMAD R5, R5, 0x2, RZ ;
        /*0060*/                   MUFU.EX2 R6, R6 ;
        /*0070*/              @!P1 BRA 0x50 ;
        /*0080*/                   BRA 0x90 ;
        /*0090*/                   EXIT ;
		Function : _ZN13sageattention11quant_kernelEv
        /*0000*/                   BRA 0x0 ;
"""


def test_largest_loops_first_with_their_opcodes():
    kernels = sass_loops.split_functions(SNIPPET)
    assert list(kernels) == ["D128 full pv0 (fp16 P.V, fp32 accum, V half)"]  # attention only
    got = sass_loops.loops(kernels["D128 full pv0 (fp16 P.V, fp32 accum, V half)"])
    assert [(x["start"], x["end"], x["instructions"]) for x in got] == [(0x10, 0x40, 4), (0x50, 0x70, 3)]
    assert got[0]["opcodes"] == {"IMMA": 1, "LDL": 1, "HMMA": 1, "BRA": 1}
    assert got[1]["opcodes"] == {"IMAD": 1, "MUFU": 1, "BRA": 1}  # the guard is not the opcode


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert sass_loops.main([str(tmp_path / "missing.so")]) == 2
    assert "no such file" in capsys.readouterr().err
    lib = tmp_path / "x.so"
    lib.write_bytes(b"")
    assert sass_loops.main([str(lib), "--arch", "90"]) == 2
    assert "expected sm_XY" in capsys.readouterr().err
