#!/usr/bin/env bash
# On a GPU machine: build the CUDA extension in place (timing the five-arch and the sm_90
# builds), then run the GPU tests and the benchmark with it loaded. Logs under $OUT.
# Carry wheels of setuptools>=77 and ninja in .whl/ if the machine lacks them.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import setuptools, ninja" 2>/dev/null || \
   ! python3 -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)"; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  export PATH=/tmp/site/bin:$PATH
fi
build() {  # $1: arch list, $2: log name
  rm -rf build sageattention/_C*.so
  local t0=$(date +%s)
  TORCH_CUDA_ARCH_LIST="$1" MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/$2" 2>&1
  local rc=$?
  echo "arch list '$1': rc=$rc, $(( $(date +%s) - t0 )) s, $(ls -l sageattention/_C*.so 2>/dev/null | awk '{print $5, $9}')" | tee -a "$OUT/builds.txt"
}
build "8.0 8.6 8.9 9.0 12.0" build-5arch.log
build "9.0" build-sm90.log
export PYTHONPATH=$PWD:${PYTHONPATH:-}
python3 -c "from sageattention import ops; print('extension loaded:', ops.load() is not None, ops._state.reason)"
bash scripts/device_check.sh "$@"
