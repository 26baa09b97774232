#!/usr/bin/env bash
# SmolLM2, fine-tune first, then sparsify (issue I): the paper post-trains models already at their loss on the data;
# the long run (long_d008.sh) had to learn Shakespeare and close its gates at once, its control only the first.
# Phase A: dense LoRA fine-tuning on Shakespeare, 600 steps, gate off -> the fine-tuned dense model F.
# Phase B, from F, side by side: (i) the density target annealed 70% -> 0.8% over 600 steps, held to step 900;
# (ii) the dense control on the same schedule (gate off). Both final models and F on 64 held-out batches.
# LoRA r16 on q/k/v/o, T=64, batch 8, the long run's preset; seeds train 1, data 0 (A) / 1 (B: a fresh order).
# Resumable: each run continues from its newest checkpoint. ~22 min for A alone, ~75 min for B (Intel Xeon, 2 cores).
source "$(dirname "$0")/ff_phase_a.sh"  # M, S, P, COMMON; phase A -> F
B="model.checkpoint=$F $COMMON train.steps=900 data.seed=1"
sparsejax posttrain $P $S/ff_d008 $B constraint.sense=density constraint.density_target=0.008 constraint.anneal_steps=600 \
  gate.bias_lr=0.03 --no-progress > $S/ff_d008.log 2>&1 &
sparsejax pretrain $P $S/ff_control $B constraint.sense=ce constraint.density_target=null --no-progress > $S/ff_control.log 2>&1 &
wait
sparsejax eval $S/ff_a/config.yaml $F data.eval_batches=64 > $S/ff_a/eval64.json
sparsejax eval $S/ff_d008/config.yaml $S/ff_d008/model data.eval_batches=64 > $S/ff_d008/eval64.json
sparsejax eval $S/ff_control/config.yaml $S/ff_control/model data.eval_batches=64 > $S/ff_control/eval64.json
