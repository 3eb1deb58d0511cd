"""One public call per path for a kernel profiler (ncu): python benchmarks/ncu_target.py D N."""
import sys

import torch

import sageattention as sa

D, N = (int(a) for a in sys.argv[1:3])
q, k, v = (torch.randn(4, 32, N, D, dtype=torch.float16, device="cuda") for _ in range(3))
for _ in range(2):
    sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v)
torch.cuda.synchronize()
