#!/usr/bin/env bash
# Issue J, twenty-sixth round (docs/controllers.md): the CE-target preset on the Shakespeare LM with the multiplier's
# input the CE gap to a dense control trained beside the run, measured on held-aside rows that neither the sparse
# model, the control nor the dense model they start from has trained on: the dense model is pretrained with the
# same rows held aside (data.aside=0.05; the pretraining preset and protocol of the twenty-second round otherwise,
# 6,000 steps). The gap's target is annealed from 0.1 to the slack over the first 1,600 steps
# (constraint.anneal_from / anneal_steps), the slack is 0.007, and the training noise is shared by the heads.
# AMD EPYC, 2 cores: the two dense seeds side by side
# (`bash docs/results/zoo_round26/run_shakespeare.sh 0 & bash docs/results/zoo_round26/run_shakespeare.sh 1`).
# Records: docs/results/zoo_shakespeare_aside/evals.json.
set -e
s=$1; [ "$s" = 0 ] || [ "$s" = 1 ] || { echo "usage: $0 0|1"; exit 2; }
d=runs/shk26/dense_aside_d$s
[ -d $d/model ] || sparsejax pretrain shakespeare_pretrain $d train.steps=6000 train.seed=$s data.seed=$s data.aside=0.05
r=runs/shk26/ce_gap_annealed_d$s
sparsejax posttrain shakespeare_posttrain $r model.checkpoint=$d/model data.tokenizer=$d/tokenizer.json \
  constraint.tau_data=control data.aside=0.05 constraint.anneal_from=0.1 constraint.anneal_steps=1600 \
  constraint.slack=0.007 gate.shared_noise=true
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
sparsejax eval $r/config.yaml $d/model data.eval_batches=64 > $r/eval64_dense.json  # the starting model, same batches
python experiments/control_gap.py docs/results/zoo_shakespeare_aside/evals.json --add dense_d$s $d \
  --add ce_gap_annealed_d$s $r
# (afterwards, with the preset as adopted: the same overrides are now shakespeare_posttrain's) a second post-training
# seed on dense seed 0, its 64-batch evaluations, and the records/figure:
#   sparsejax posttrain shakespeare_posttrain runs/shk26/ce_gap_annealed_d0_s2 model.checkpoint=runs/shk26/dense_aside_d0/model \
#     data.tokenizer=runs/shk26/dense_aside_d0/tokenizer.json train.seed=2 data.seed=2
#   python experiments/control_gap.py docs/results/zoo_shakespeare_aside/evals.json --add ce_gap_annealed_d0_s2 \
#     runs/shk26/ce_gap_annealed_d0_s2 --runs ce_gap_annealed_d0 ce_gap_annealed_d0_s2 ce_gap_annealed_d1 \
#     --curves docs/figures/shakespeare_aside_ce_curves.png --title "Shakespeare LM pretrained with rows held aside (AMD EPYC)"
