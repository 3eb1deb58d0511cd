#!/usr/bin/env bash
# One call on a GPU machine: GPU tests, accuracy table, tile sweep and benchmark, logs to $OUT.
# Usage: bash scripts/device_check.sh [cudatests] [tests] [alltests] [accuracy] [tune] [profile] [bench]
#        [sidebyside] [clients] [ncu]   (default: tests accuracy tune bench)
# sidebyside and clients run the original SageAttention next to ours when SAGEATTN_ORIGINAL_SRC
# names a checkout of it that was built on that machine (benchmarks/original.py).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
steps=${*:-tests accuracy tune bench}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
for s in $steps; do
  case $s in
    cudatests) python3 -m pytest -q -m gpu tests/test_gpu_cuda.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu_cuda_tests.log" | tail -40 ;;
    tests) python3 -m pytest -q -m gpu tests/test_gpu.py tests/test_gpu_cuda.py tests/test_block_map.py tests/test_nonfinite.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -25 ;;
    alltests) python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/all_tests.log" | tail -25 ;;
    accuracy) python3 benchmarks/accuracy.py --out "$OUT" 2>&1 | tee "$OUT/accuracy.log" | tail -40 ;;
    tune) python3 benchmarks/tune_tiles.py 2>&1 | tee "$OUT/tune.log"; python3 benchmarks/tune_tiles.py --causal 2>&1 | tee -a "$OUT/tune.log" ;;
    tune8) for c in "" --causal; do python3 benchmarks/tune_tiles.py --pv fp8 $c; done 2>&1 | tee "$OUT/tune8.log" ;;
    profile) for d in 64 128; do python3 benchmarks/profile_call.py --n 1024 --d $d 2>&1 | grep -v -i warn; done | tee "$OUT/profile.log" ;;
    cudaprofile) for d in 64 128; do python3 benchmarks/profile_call.py --n 4096 --d $d --only fp16_triton fp16_cuda fp8_cuda 2>&1 | grep -v -i warn; done | tee "$OUT/cudaprofile.log" ;;
    quickbench) python3 benchmarks/bench_attention.py --out "$OUT/quick" --seqlens 4096 16384 --only sageattn fp16_triton fp16_cuda "fp16_cuda fp16+fp32" fp8_cuda fp8_cuda_sm90 2>&1 | tee "$OUT/quickbench.log" | tail -20 ;;
    cudabench) python3 benchmarks/bench_attention.py --out "$OUT/cuda${BENCH_TAG:-}" --seqlens 4096 16384 --only fp16_cuda fp8_cuda_sm90 2>&1 | tee "$OUT/cudabench${BENCH_TAG:-}.log" | tail -12 ;;
    ncu) if command -v ncu >/dev/null; then ncu --clock-control none --kernel-name regex:attention_kernel --launch-skip 2 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis --section Occupancy --section MemoryWorkloadAnalysis --section InstructionStats python3 benchmarks/ncu_target.py --fn fp16_cuda --d 128 --n 4096 2>&1 | tee "$OUT/ncu.log" | tail -150; else echo "no ncu on this machine"; fi ;;
    mmakind) for f in $(ls -t ~/.triton/cache/*/*.ptx 2>/dev/null | head -400); do grep -l "attention_kernel" "$f"; done 2>/dev/null | head -40 | while read -r f; do echo "$f: wgmma=$(grep -c wgmma "$f") mma.sync=$(grep -c 'mma.sync' "$f")"; done | sort | uniq -c | tee "$OUT/triton_mma_kinds.txt" | tail -12 ;;
    bench) python3 benchmarks/bench_attention.py --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -20 ;;
    sidebyside) python3 benchmarks/bench_attention.py --out "$OUT/sidebyside" --only fp16_cuda "fp16_cuda fp16+fp32" fp8_cuda "fp8_cuda fp32+fp32" "original fp16_cuda" "original fp16_cuda fp16+fp32" "original fp8_cuda" "original fp8_cuda fp32+fp32" 2>&1 | tee "$OUT/sidebyside.log" | tail -16 ;;
    clients) python3 benchmarks/bench_clients.py --out "$OUT" 2>&1 | tee "$OUT/clients.log" | tail -20 ;;
  esac
done
