#!/usr/bin/env bash
# Two JAX processes on this machine (2 CPU devices each), joined over loopback: the multi-host code path without a
# cluster (what tests/test_multihost.py checks against a single process).
#   bash experiments/launch/local_two_processes.sh RUN_DIR model.checkpoint=runs/toy/dense/model [overrides...]
set -euo pipefail
cd "$(dirname "$0")/../.."
run="${1:?usage: local_two_processes.sh RUN_DIR [overrides...]}"; shift
port="${PORT:-23456}"
export XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu
for i in 0 1; do
  .venv/bin/sparsejax --coordinator "127.0.0.1:$port" --num-processes 2 --process-id "$i" \
    posttrain toy_addition_posttrain "$run" mesh.data=2 mesh.fsdp=2 --no-progress "$@" &
done
wait
