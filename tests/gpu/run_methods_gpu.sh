#!/usr/bin/env bash
# On the lent GPU machine (repo root, wheels from ../shared/tools/gpu-wheels.sh carried as .whl/):
#   bash tests/gpu/run_methods_gpu.sh [methods,calib] [--only ...] ; results under $OUT (see tests/gpu/methods_gpu.py)
# PHASES: comma-separated phases (default methods,calib); ONLY: methods to run; CALIB: W:micro:ckpt shapes;
# BUDGET_S: seconds for the whole script (items that would start after it are skipped, and recorded so).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PHASES=${PHASES:-pytest,methods,calib}; BUDGET_S=${BUDGET_S:-540}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD/api:$PWD/operator:$PWD/trainer TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft, deepspeed, bitsandbytes, liger_kernel; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'deepspeed', deepspeed.__version__, 'bitsandbytes', bitsandbytes.__version__)"
if [[ $PHASES == *pytest* ]]; then
  timeout 120 python3 -m pytest -q -m gpu -o addopts="-p no:cacheprovider --import-mode=importlib" tests/gpu 2>&1 | tail -15
fi
if [[ $PHASES == *methods* ]]; then
  # DeepSpeed's ops JIT-compile on first use (~50 s each): build them while the GPU runs the other methods
  python3 -c "from deepspeed.ops.op_builder import FusedAdamBuilder as B; B().load()" >"$OUT/ds-build.log" 2>&1 &
  python3 -c "from deepspeed.ops.op_builder import CPUAdamBuilder as B; B().load()" >>"$OUT/ds-build.log" 2>&1 &
  python3 tests/gpu/methods_gpu.py --phase methods --out "$OUT" --only "${ONLY:-qlora_merge,lora_packed,full_fsdp,full_zero2,full_zero3_offload}" \
    --deadline-s $(( ${METHODS_S:-$BUDGET_S} - SECONDS ))
fi
if [[ $PHASES == *calib* ]]; then
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 tests/gpu/methods_gpu.py --phase calib --out "$OUT" \
    --calib "${CALIB:-W3:2:0,W3:4:0,W3:8:1}" --deadline-s $(( BUDGET_S - SECONDS ))
fi
echo "script seconds: $SECONDS"
