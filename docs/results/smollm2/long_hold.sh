#!/usr/bin/env bash
# SmolLM2 long run, continued (issue I): does a longer hold at the final density close the CE gap?
# The 0.87% model of long_d008.sh (rebuilt bit for bit from artifacts/smollm2_sparse_long: the LoRA adapters merged
# into the dequantised base, the learnt gate bias) post-trained 1,500 more steps at the fixed density target 0.8%:
# fresh LoRA r16 on q/k/v/o, the multiplier started where the long run ended (beta 15.18), lr 3e-4 linear to 1e-4
# (the long run's own lr over its hold phase, steps 1,800-2,400), seeds train 2 / data 1 (a fresh data order; the
# held-out split and its evaluation batches do not depend on the seed). ~50 min alone on the 2-core AMD EPYC.
set -e
M=~/.cache/sparsejax/models/smollm2
S=runs/smollm2
python experiments/smollm2_artifact.py rebuild artifacts/smollm2_sparse_long --out $S/rebuilt_long
sparsejax posttrain docs/results/presets/shakespeare_posttrain_until_2026-12-02.yaml $S/long_hold model.checkpoint=$S/rebuilt_long data.tokenizer=$M/tokenizer.json \
  data.seq_len=64 data.batch_size=8 train.lora_rank=16 train.steps=1500 train.eval_every=100 train.checkpoint_every=50 \
  train.keep=2 train.log_every=10 train.lr=3e-4 train.lr_final=0.3333333333 train.seed=2 data.seed=1 \
  constraint.sense=density constraint.density_target=0.008 constraint.beta_init=15.18 gate.bias_lr=0.03 --no-progress
sparsejax eval $S/long_hold/config.yaml $S/long_hold/model data.eval_batches=64 > $S/long_hold/eval64.json
