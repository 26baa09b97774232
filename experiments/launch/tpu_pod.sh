#!/usr/bin/env bash
# Post-train on a Cloud TPU pod slice (e.g. v5e-16: 4 hosts x 4 chips). Every host runs the same command; JAX finds
# the other hosts by itself (--distributed). The run directory must be shared by all hosts (a GCS-fuse or NFS
# mount): orbax checkpoints are written collectively, everything else by host 0.
#   TPU=my-v5e-16 ZONE=us-west4-a bash experiments/launch/tpu_pod.sh olmo_7b /mnt/shared/runs/olmo7b mesh.fsdp=16
# Check first that the plan fits: .venv/bin/sparsejax plan olmo_7b --shape olmo-7b --mesh fsdp=16
set -euo pipefail
preset="${1:?usage: tpu_pod.sh PRESET RUN_DIR [overrides...]}"; run="${2:?run directory}"; shift 2
gcloud compute tpus tpu-vm ssh "${TPU:?set TPU}" --zone "${ZONE:?set ZONE}" --worker=all --command \
  "cd ~/sparsejax && .venv/bin/sparsejax --distributed posttrain $preset $run $* --no-progress"
