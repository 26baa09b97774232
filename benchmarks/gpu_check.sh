#!/usr/bin/env bash
# The prepared accelerator check for the fused kernel (issue F), <= 8 minutes on one H100/H200, the machine's own
# JAX (no install). Each step writes its table to $OUT (or .) as it goes:
#   1. kernel_tuning.py: block sizes / launch parameters / backward variant ("split" two kernels, "atomic" one
#      kernel) at T=4096 bf16 train mode, plus cuDNN and JAX's Mosaic-GPU FA3 example as reference points; the
#      fastest configuration goes to best_blocks.json.
#   2. kernels.py with that configuration: correctness against the reference (fp32 and bf16, sampled and eval
#      gates, the sampled gates compared one by one), then the fwd+bwd speed/memory table against cuDNN/XLA dense
#      attention, the XLA chunked path, torch's fused SDPA and the plain torch formula.
#   3. block_skipping.py: exact block-skipping inference against the fused kernel and cuDNN, per share of empty
#      tiles.
#   bash benchmarks/gpu_check.sh            # all three (~5 min on an H200)
#   bash benchmarks/gpu_check.sh --quick    # the sweep's two-kernel configurations only, no step 3 (~4 min)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.6  # leave room for torch in the same process
export PYTHONPATH=.
start=$SECONDS
grid=full
[ "${1:-}" = "--quick" ] && grid=split
python3 benchmarks/kernel_tuning.py --grid "$grid" --write-best "$out/best_blocks.json" 2>&1 | tee "$out/kernel_tuning_gpu.txt"
echo "# step 1: $((SECONDS - start)) s"
blocks=()
[ -f "$out/best_blocks.json" ] && blocks=(--blocks "$out/best_blocks.json")
python3 benchmarks/kernels.py --check-seq 2048 --seq 1024 4096 8192 "${blocks[@]}" 2>&1 | tee "$out/kernels_gpu.txt"
echo "# step 2: $((SECONDS - start)) s"
[ "$grid" = split ] && exit 0
python3 benchmarks/block_skipping.py 2>&1 | tee "$out/block_skipping_gpu.txt"
echo "# step 3: $((SECONDS - start)) s"
