#!/usr/bin/env bash
# Issue J, twenty-eighth round (docs/controllers.md): the CE-target preset `shakespeare_posttrain` exactly as adopted
# in the twenty-seventh round (slack 0.001), on post-training seeds it was not chosen on, from the twenty-sixth
# round's dense models (pretrained with the rows held aside; pretrained here when missing, by the same command).
# usage: bash docs/results/zoo_round28/run_shakespeare.sh DENSE_SEED POST_SEED
# AMD EPYC, 2 cores, two runs side by side (~50 min). Records: docs/results/zoo_shakespeare_aside/evals.json
# (python experiments/control_gap.py --add ..., run afterwards, one at a time) and region_gap.json.
set -e
d=$1; s=$2
[ "$d" = 0 ] || [ "$d" = 1 ] || { echo "usage: $0 0|1 POST_SEED"; exit 2; }
dense=runs/shk26/dense_aside_d$d
[ -d $dense/model ] || sparsejax pretrain shakespeare_pretrain $dense train.steps=6000 train.seed=$d data.seed=$d data.aside=0.05
r=runs/shk28/ce_preset_d${d}_s$s
sparsejax posttrain shakespeare_posttrain $r model.checkpoint=$dense/model data.tokenizer=$dense/tokenizer.json \
  train.seed=$s data.seed=$s
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
