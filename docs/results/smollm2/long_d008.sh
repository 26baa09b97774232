#!/usr/bin/env bash
# SmolLM2 long density run: 2,400 steps, the density target annealed geometrically from the gated model's density
# to 0.8% over 1,800 steps (PI), LoRA r16 on q/k/v/o, T=64, batch 8, seeds train 1 / data 0. Resumable (run again).
cd /work/main
M=~/.cache/sparsejax/models/smollm2
S=/work/main/runs/smollm2
/work/main/.venv/bin/python -c "import sys; from sparsejax.cli import main; sys.argv=['sparsejax']+sys.argv[1:]; main()" \
  posttrain shakespeare_posttrain $S/long_d008 \
  model.checkpoint=$M data.tokenizer=$M/tokenizer.json data.seq_len=64 data.batch_size=8 train.lora_rank=16 \
  train.steps=2400 train.eval_every=100 train.checkpoint_every=50 train.keep=2 train.log_every=10 \
  constraint.sense=density constraint.density_target=0.008 constraint.anneal_steps=1800 gate.bias_lr=0.03 \
  --no-progress >> $S/long_d008.log 2>&1
echo DONE >> $S/long_d008.log
