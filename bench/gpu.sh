#!/usr/bin/env bash
# On a lent GPU machine (repo root; wheels from ../shared/tools/gpu-wheels.sh carried as .whl/):
#   bash bench/gpu.sh --workload W2 --phases loss,speed,profile,ablation
# installs the wheels the image lacks into /tmp/site, then runs bench/run.py with the arguments given,
# writing results and a log under $OUT (default /tmp/out).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD/api:$PWD/trainer PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 bench/run.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench-$(date +%H%M%S).log" | grep -v "^step \|examples read\|^model: "
echo "script seconds: $SECONDS"
