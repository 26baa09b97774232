#!/usr/bin/env bash
# Issue J, thirtieth round (docs/controllers.md): the induction LM's two levers named by the twenty-ninth round, from
# its dense models pretrained with data.aside=0.05 (made by docs/results/zoo_round29/run_induction.sh D S [STEPS]).
# usage: bash docs/results/zoo_round30/run_induction.sh NAME DENSE_DIR PRESET [KEY=VALUE ...]
# The runs of the round (AMD EPYC, 2 cores; ~20 min a 2,400-step post-training alone, its control beside it):
#   NAME ce_lr3e-4_d0_s1  runs/ind29/dense_aside_d0        shakespeare_posttrain train.lr=3e-4   (the peak lr lowered)
#   NAME ce_lr3e-4_d1_s1  runs/ind29/dense_aside_d1        shakespeare_posttrain train.lr=3e-4
#   NAME ce_4800_d0_s1    runs/ind29/dense_aside_d0        shakespeare_posttrain train.steps=4800 (twice the schedule;
#                                                          the target reaches the slack at step 1,600 as in the preset)
#   NAME density_d0_12000 runs/ind29/dense_aside_d0_12000  shakespeare_posttrain_density constraint.tau_data=control
#   NAME ce_4800_d1_s1    runs/ind29/dense_aside_d1        shakespeare_posttrain train.steps=4800
#   NAME ce_7200_d0_s1    runs/ind29/dense_aside_d0        shakespeare_posttrain train.steps=7200 (three times)
#   NAME ce_7200_d1_s1    runs/ind29/dense_aside_d1        shakespeare_posttrain train.steps=7200 (thirty-first round;
#                                                          ~60 min alone)
#   NAME ce_7200_d1_s2    runs/ind29/dense_aside_d1        shakespeare_posttrain train.steps=7200 train.seed=2 data.seed=2
#                                                          (thirty-first round: a second post-training seed)
# every run with train.seed=1 data.seed=1 unless its line says otherwise (the last value of a key wins).
# Records: docs/results/zoo_round30/ (experiments/control_gap.py --add ...).
set -e
name=$1; dense=$2; preset=$3
[ -n "$name" ] && [ -n "$dense" ] && [ -n "$preset" ] || { echo "usage: $0 NAME DENSE_DIR PRESET [KEY=VALUE ...]"; exit 2; }
shift 3
[ -d $dense/model ] || { echo "no dense model at $dense: make it with docs/results/zoo_round29/run_induction.sh"; exit 2; }
D="data.seq_len=64 data.batch_size=32 data.repeat=1.0 data.repeat_tokens=random"
r=runs/ind30/$name
sparsejax posttrain $preset $r model.checkpoint=$dense/model data.tokenizer=$dense/tokenizer.json $D \
  train.seed=1 data.seed=1 "$@" --no-progress
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
sparsejax eval $r/config.yaml $dense/model data.eval_batches=64 > $r/eval64_start.json
