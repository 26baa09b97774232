#!/usr/bin/env bash
# Issue J, twenty-seventh round (docs/controllers.md): the CE-target preset `shakespeare_posttrain` (twenty-sixth
# round) with a smaller slack, on the dense models of the twenty-sixth round (pretrained with the rows held aside:
# docs/results/zoo_round26/run_shakespeare.sh pretrains them when they are missing).
# usage: bash docs/results/zoo_round27/run_shakespeare.sh DENSE_SEED POST_SEED SLACK
#   POST_SEED "-" keeps the preset's train/data seeds. AMD EPYC, 2 cores, two runs side by side.
# Records: docs/results/zoo_shakespeare_aside/evals.json (experiments/control_gap.py --add, run afterwards, one at a time).
set -e
d=$1; s=$2; slack=$3
[ "$d" = 0 ] || [ "$d" = 1 ] || { echo "usage: $0 0|1 POST_SEED|- SLACK"; exit 2; }
dense=runs/shk26/dense_aside_d$d
[ -d $dense/model ] || sparsejax pretrain shakespeare_pretrain $dense train.steps=6000 train.seed=$d data.seed=$d data.aside=0.05
seeds=""; tag=""
[ "$s" = - ] || { seeds="train.seed=$s data.seed=$s"; tag="_s$s"; }
r=runs/shk27/ce_slack${slack#0.}_d$d$tag
sparsejax posttrain shakespeare_posttrain $r model.checkpoint=$dense/model data.tokenizer=$dense/tokenizer.json \
  constraint.slack=$slack $seeds
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
