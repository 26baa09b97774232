#!/usr/bin/env bash
# SmolLM2 CE-target mode: tau = the dense control's final training-batch CE (3.896, mean of its last 10 logged
# batches) + 0.01, the lora recipe of the frontier (LoRA r16, T=64, batch 8, 500 steps), then a 64-batch held-out eval
set -x
cd /work/main
M=~/.cache/sparsejax/models/smollm2
S=/work/main/runs/smollm2
/usr/bin/time -v .venv/bin/sparsejax posttrain docs/results/presets/shakespeare_posttrain_until_2026-12-02.yaml $S/lora_ce $COMMON \
  model.checkpoint=$M data.tokenizer=$M/tokenizer.json data.seq_len=64 data.batch_size=8 train.lora_rank=16 \
  train.steps=500 train.eval_every=50 train.checkpoint_every=50 train.log_every=10 \
  constraint.sense=ce constraint.tau=3.906 constraint.measure_every=4 gate.bias_lr=0.03 --no-progress > $S/lora_ce.log 2>&1
.venv/bin/sparsejax eval $S/lora_ce/config.yaml $S/lora_ce/model data.eval_batches=64 > $S/eval64_lora_ce.log 2>&1
echo ALL DONE > $S/ce_target.done
