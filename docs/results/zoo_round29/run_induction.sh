#!/usr/bin/env bash
# Issue J, twenty-ninth round (docs/controllers.md): the induction LM under the CE-target preset as adopted
# (`shakespeare_posttrain`: the gap to a dense control trained beside the run, measured on held-aside rows, its
# target annealed 0.1 -> the slack 0.001), from a dense model pretrained with those rows held aside (the form the
# Shakespeare LM meets the goal with; the zoo's induction LM was pretrained on every row). The dense model: the
# fourteenth round's recipe (6,000 steps, 2 layers, rows of 64 tokens with a random passage repeated) plus
# data.aside=0.05, pretraining seed DENSE_SEED; DENSE_STEPS (default 6,000) pretraining steps: 12,000 for a dense model
# nearer convergence. usage: bash docs/results/zoo_round29/run_induction.sh DENSE_SEED POST_SEED [DENSE_STEPS]
# AMD EPYC, 2 cores (~20 min a 6,000-step pretraining + ~20 min a post-training alone, the control beside it).
# Records: docs/results/zoo_round29/induction/ (afterwards: python experiments/control_gap.py --add ...).
set -e
d=$1; s=$2; n=${3:-6000}
[ -n "$d" ] && [ -n "$s" ] || { echo "usage: $0 DENSE_SEED POST_SEED"; exit 2; }
D="data.seq_len=64 data.batch_size=32 data.repeat=1.0 data.repeat_tokens=random"
dense=runs/ind29/dense_aside_d$d; r=runs/ind29/ce_preset_d${d}_s$s
[ "$n" = 6000 ] || { dense=${dense}_$n; r=${r}_$n; }
[ -d $dense/model ] || sparsejax pretrain shakespeare_pretrain $dense model.n_layers=2 $D train.steps=$n \
  train.lr=1e-3 train.eval_every=500 train.checkpoint_every=500 data.aside=0.05 train.seed=$d data.seed=$d --no-progress
sparsejax posttrain shakespeare_posttrain $r model.checkpoint=$dense/model data.tokenizer=$dense/tokenizer.json $D \
  train.seed=$s data.seed=$s --no-progress
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
sparsejax eval $r/config.yaml $dense/model data.eval_batches=64 > $r/eval64_start.json
