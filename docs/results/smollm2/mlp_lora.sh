#!/usr/bin/env bash
# SmolLM2 adapter-capacity lever (issue I): the long density run of long_d008.sh (2,400 steps, the density target
# annealed geometrically 70% -> 0.8% over 1,800 steps, PI, T=64, batch 8, seeds train 1 / data 0) with LoRA r16 on
# the MLPs as well (q/k/v/o + gate/up/down), then the final model on 64 held-out batches. Compared against the
# attention-only run and its dense control (long_d008.sh). Resumable: run again and it continues from its newest
# checkpoint. ~90 min alone on the 2-core AMD EPYC.
set -e
M=~/.cache/sparsejax/models/smollm2
S=runs/smollm2
sparsejax posttrain docs/results/presets/shakespeare_posttrain_until_2026-12-02.yaml $S/long_mlp model.checkpoint=$M data.tokenizer=$M/tokenizer.json \
  data.seq_len=64 data.batch_size=8 train.lora_rank=16 'train.lora_modules=[attn.q,attn.k,attn.v,attn.o,mlp.gate,mlp.up,mlp.down]' \
  train.steps=2400 train.eval_every=100 train.checkpoint_every=50 train.keep=2 train.log_every=10 \
  constraint.sense=density constraint.density_target=0.008 constraint.anneal_steps=1800 gate.bias_lr=0.03 --no-progress
sparsejax eval $S/long_mlp/config.yaml $S/long_mlp/model data.eval_batches=64 > $S/long_mlp/eval64.json
