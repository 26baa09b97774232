#!/usr/bin/env bash
# The prepared accelerator check for the fused kernel (issue F): correctness against the reference at T = 1k-4k
# (fp32 and bf16, sampled and eval gates, the sampled gates compared one by one), then the fwd+bwd speed/memory
# table at T = 1k-8k against cuDNN/XLA dense attention, the XLA chunked path, torch's fused SDPA and the plain
# torch formula. Uses the machine's own JAX (no install); <= 8 minutes on one H100/H200.
#   bash benchmarks/gpu_check.sh            # writes $OUT/kernels_gpu.txt when OUT is set
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.6  # leave room for torch in the same process
PYTHONPATH=. python3 benchmarks/kernels.py "$@" 2>&1 | tee "$out/kernels_gpu.txt"
