#!/usr/bin/env bash
# On a GPU machine: build the CUDA extension in place, timing each arch list of ARCH_LISTS
# ("|"-separated; the last one built stays in place), then run device_check.sh's steps with the
# kernels loaded (a missing extension fails the CUDA tests). Logs under $OUT.
# Carry wheels of setuptools>=77 and ninja in .whl/ if the machine lacks them.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ARCH_LISTS=${ARCH_LISTS:-"8.0 8.6 8.9 9.0 12.0|9.0"}
if ! python3 -c "import setuptools, ninja" 2>/dev/null || \
   ! python3 -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)"; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  export PATH=/tmp/site/bin:$PATH
fi
build() {  # $1: arch list, $2: log name
  rm -rf build sageattention/_C*.so
  local t0=$(date +%s)
  TORCH_CUDA_ARCH_LIST="$1" MAX_JOBS=16 NVCC_THREADS=4 python3 setup.py build_ext --inplace > "$OUT/$2" 2>&1
  local rc=$?
  echo "arch list '$1': rc=$rc, $(( $(date +%s) - t0 )) s, $(ls -l sageattention/_C*.so 2>/dev/null | awk '{printf "%s %s; ", $5, $9}')" | tee -a "$OUT/builds.txt"
  [ $rc -eq 0 ] || tail -30 "$OUT/$2"
}
IFS='|' read -ra lists <<< "$ARCH_LISTS"
for l in "${lists[@]}"; do build "$l" "build-$(echo "$l" | tr ' .' '_-').log"; done
export PYTHONPATH=$PWD:${PYTHONPATH:-} SAGEATTENTION_REQUIRE_CUDA_EXT=1
python3 -c "from sageattention import ops; import torch; print('extension loaded:', ops.load() is not None, ops._state.reason, 'fp8 unit:', ops.fp8_usable_on(torch.device('cuda')), ops.build_info())"
bash scripts/device_check.sh "$@"
