#!/usr/bin/env bash
# On a lent multi-GPU machine (repo root; wheels from ../shared/tools/gpu-wheels.sh carried as .whl/):
#   bash bench/gpu_multi.sh --gpus 2 --runs w4 --strategies fsdp
# installs the wheels the image lacks into /tmp/site, then runs bench/multi_gpu.py with the arguments given,
# writing its JSON and log under $OUT (default /tmp/out).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD/api:$PWD/plan:$PWD/trainer:$PWD/operator:$PWD/cli TORCH_CUDA_ARCH_LIST=9.0 \
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; df -h /tmp | tail -1
python3 bench/multi_gpu.py --out "$OUT" "$@" 2>&1 | grep -v "^step \|examples read\|^model: "
echo "script seconds: $SECONDS"
