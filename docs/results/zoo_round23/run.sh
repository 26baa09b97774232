#!/usr/bin/env bash
# Issue J, twenty-third round (docs/controllers.md): the CE-target preset (shakespeare_posttrain, unchanged) from the
# Shakespeare dense models pretrained 6,000 steps (twenty-second round), each with a dense control on the CE preset's
# own schedule (gate off, lr 1e-3 linear to 0, 2,400 steps: the ninth round's protocol). Intel Xeon, 2 cores; as run:
# the four runs side by side, then the last run alone. Records: docs/results/zoo_shakespeare_d{0,1}/evals.json (ce_6k;
# ce_follow_6k, dense seed 1).
set -e
for s in 0 1; do
  d=runs/shk6k_d$s
  ( sparsejax posttrain shakespeare_posttrain $d/ce model.checkpoint=$d/dense/model data.tokenizer=$d/dense/tokenizer.json ) &
  while [ ! -f $d/ce/config.yaml ]; do sleep 5; done
  ( sparsejax pretrain $d/ce/config.yaml $d/ce_control gate.enabled=false constraint.method=none \
      constraint.pi_ki_follow_lr=false train.eval_every=400 ) &
done; wait
for s in 0 1; do
  d=runs/shk6k_d$s
  for r in ce ce_control; do sparsejax eval $d/ce/config.yaml $d/$r/model data.eval_batches=64 > $d/$r/eval64_model.json; done
  python experiments/control_gap.py docs/results/zoo_shakespeare_d$s/evals.json --add ce_6k $d/ce $d/ce_control \
    --runs density_6k ce_6k --curves docs/figures/shakespeare_d${s}_6k_ce_curves.png --title "Shakespeare LM, dense seed $s"
done
# the CE target following a dense control trained beside the run (the gap to it on each training batch <= the slack), seed 1
d=runs/shk6k_d1; r=$d/ce_follow
sparsejax posttrain shakespeare_posttrain $r model.checkpoint=$d/dense/model data.tokenizer=$d/dense/tokenizer.json \
  constraint.tau_data=control
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
python experiments/control_gap.py docs/results/zoo_shakespeare_d1/evals.json --add ce_follow_6k $r \
  --runs density_6k ce_6k ce_follow_6k --curves docs/figures/shakespeare_d1_6k_ce_curves.png --title "Shakespeare LM, dense seed 1"
