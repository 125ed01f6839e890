#!/usr/bin/env bash
# The GPU device script: one call runs the gpu-marked tests and every benchmark of bench_gpu.py, and writes
# results.md / results.json (and the logs) under $OUT, with a progress line per stage, within ~8 minutes.
#
#   on the device:  bash benchmarks/gpu/run.sh            (carry [".gpu"], filled by benchmarks/gpu/prepare.sh)
#   on any CPU:     bash benchmarks/gpu/run.sh --smoke    (the tiny model, small sizes; CI runs this)
#
# Extra arguments go to bench_gpu.py (e.g. --model /path/to/hf-folder, --num-envs 1 64 512 4096).
set -uo pipefail
cd "$(dirname "$0")/../.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

if [ "$SMOKE" = 1 ]; then
  PY=${PY:-.venv/bin/python}
else
  PY=${PY:-python3}
  if [ -d .gpu/wheels ]; then
    stamp "installing the carried wheels"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl \
      || { echo "wheel install failed"; exit 2; }
    export PYTHONPATH=/tmp/site
  fi
  [ -d .gpu/tokenizer ] && export PROXY_ENV_TOKENIZER="$PWD/.gpu/tokenizer"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stamp "gpu-marked tests"
timeout 300 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests -o addopts="-ra" 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
tests_rc=${PIPESTATUS[0]}
stamp "gpu tests: exit $tests_rc"

stamp "benchmarks"
if [ "$SMOKE" = 1 ]; then
  timeout 300 "$PY" benchmarks/gpu/bench_gpu.py --smoke --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
else
  timeout 330 "$PY" benchmarks/gpu/bench_gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
fi
bench_rc=${PIPESTATUS[0]}
stamp "benchmarks: exit $bench_rc; results in $OUT/results.md"
# a gpu test run on a machine without CUDA skips everything (pytest exit 5: nothing ran is fine for the smoke)
[ "$tests_rc" = 0 ] || { [ "$SMOKE" = 1 ] && [ "$tests_rc" = 5 ]; } || exit 1
exit "$bench_rc"
