#!/usr/bin/env bash
# Issue J, twenty-fourth round (docs/controllers.md): the Shakespeare LM on an AMD EPYC (2 cores) — dense seed 0
# pretrained here on the pretraining preset (6,000 steps), then (1) the density preset unchanged with a dense control
# trained beside it (the twenty-second round's protocol) and (2) the CE preset with the peak lr lowered to 3e-4 (the
# twenty-third round's next lever: an lr restart that costs the converged model less than the slack), with a dense
# control on its own schedule run separately; the three runs side by side. Records:
# docs/results/zoo_shakespeare_epyc_d0/evals.json (dense_6k, density_6k, ce_lr3e4_6k).
set -e
d=runs/shk24
[ -d $d/dense_d0/model ] || sparsejax pretrain shakespeare_pretrain $d/dense_d0 train.steps=6000 train.seed=0 data.seed=0
x="model.checkpoint=$d/dense_d0/model data.tokenizer=$d/dense_d0/tokenizer.json"
( sparsejax posttrain shakespeare_posttrain_density $d/density $x constraint.tau_data=control ) &
( sparsejax posttrain shakespeare_posttrain $d/ce_lr3e4 $x train.lr=3.0e-4 ) &
while [ ! -f $d/ce_lr3e4/config.yaml ]; do sleep 5; done
( sparsejax pretrain $d/ce_lr3e4/config.yaml $d/ce_lr3e4_control gate.enabled=false constraint.method=none \
    constraint.pi_ki_follow_lr=false train.eval_every=400 ) &
wait
e=docs/results/zoo_shakespeare_epyc_d0/evals.json
for m in model control_model; do sparsejax eval $d/density/config.yaml $d/density/$m data.eval_batches=64 > $d/density/eval64_$m.json; done
sparsejax eval $d/density/config.yaml $d/dense_d0/model data.eval_batches=64   # the starting model, same batches
for r in ce_lr3e4 ce_lr3e4_control; do sparsejax eval $d/ce_lr3e4/config.yaml $d/$r/model data.eval_batches=64 > $d/$r/eval64_model.json; done
python experiments/control_gap.py $e --add dense_6k $d/dense_d0 --add density_6k $d/density \
  --add ce_lr3e4_6k $d/ce_lr3e4 $d/ce_lr3e4_control --runs density_6k ce_lr3e4_6k \
  --curves docs/figures/shakespeare_epyc_d0_curves.png --title "Shakespeare LM, dense seed 0 (AMD EPYC)"
# a second post-training seed of the density preset on the same dense model (train.seed = data.seed = 2)
r=$d/density_s2
sparsejax posttrain shakespeare_posttrain_density $r $x constraint.tau_data=control train.seed=2 data.seed=2
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
python experiments/control_gap.py $e --add density_6k_s2 $r --runs density_6k density_6k_s2 ce_lr3e4_6k \
  --curves docs/figures/shakespeare_epyc_d0_curves.png --title "Shakespeare LM, dense seed 0 (AMD EPYC)"
