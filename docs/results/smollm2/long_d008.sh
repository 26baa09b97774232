#!/usr/bin/env bash
# SmolLM2 long density run (issue I): 2,400 steps, the density target annealed geometrically from the gated model's
# density (70%) to 0.8% over 1,800 steps (PI), LoRA r16 on q/k/v/o, T=64, batch 8, seeds train 1 / data 0; then
# the dense control on the same schedule (gate off) and both final models on 64 held-out batches. Resumable: run
# again and each run continues from its newest checkpoint. ~70 min per run alone on the 2-core AMD EPYC.
set -e
M=~/.cache/sparsejax/models/smollm2
S=runs/smollm2
COMMON="model.checkpoint=$M data.tokenizer=$M/tokenizer.json data.seq_len=64 data.batch_size=8 train.lora_rank=16 \
  train.steps=2400 train.eval_every=100 train.checkpoint_every=50 train.keep=2 train.log_every=10"
sparsejax posttrain docs/results/presets/shakespeare_posttrain_until_2026-12-02.yaml $S/long_d008 $COMMON constraint.sense=density constraint.density_target=0.008 \
  constraint.anneal_steps=1800 gate.bias_lr=0.03 --no-progress
sparsejax eval $S/long_d008/config.yaml $S/long_d008/model data.eval_batches=64 > $S/long_d008/eval64.json
sparsejax pretrain docs/results/presets/shakespeare_posttrain_until_2026-12-02.yaml $S/long_control $COMMON constraint.sense=ce constraint.density_target=null --no-progress
sparsejax eval $S/long_control/config.yaml $S/long_control/model data.eval_batches=64 > $S/long_control/eval64.json
python experiments/smollm2_long.py --run $S/long_d008 --control $S/long_control --final $S/long_d008/eval64.json \
  --out docs/figures/smollm2_long_d008.png
