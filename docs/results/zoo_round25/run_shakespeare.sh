#!/usr/bin/env bash
# Issue J, twenty-fifth round (docs/controllers.md): the Shakespeare LM's second dense seed on the machine type
# (AMD EPYC, 2 cores): dense seed 1 pretrained here on the pretraining preset at 6,000 steps (the twenty-second
# round's protocol), then the density post-training preset unchanged with a dense control beside it. Run at the
# lowest priority beside the toy runs of the same round. Records: docs/results/zoo_shakespeare_epyc_d1/evals.json.
set -e
d=runs/shk25
[ -d $d/dense_d1/model ] || sparsejax pretrain shakespeare_pretrain $d/dense_d1 train.steps=6000 train.seed=1 data.seed=1
r=$d/density
sparsejax posttrain shakespeare_posttrain_density $r model.checkpoint=$d/dense_d1/model \
  data.tokenizer=$d/dense_d1/tokenizer.json constraint.tau_data=control
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
sparsejax eval $r/config.yaml $d/dense_d1/model data.eval_batches=64   # the starting model, same batches
python experiments/control_gap.py docs/results/zoo_shakespeare_epyc_d1/evals.json --add dense_6k $d/dense_d1 \
  --add density_6k $r --runs density_6k \
  --curves docs/figures/shakespeare_epyc_d1_curves.png --title "Shakespeare LM, dense seed 1 (AMD EPYC)"
# the density preset with the training noise shared by the heads (gate.shared_noise=true) on the twenty-fourth round's
# dense seed 0 (runs/shk24/dense_d0, docs/results/zoo_round24/run_shakespeare.sh), a control beside it; run beside the
# dense seed 1 chain above. Records: docs/results/zoo_shakespeare_epyc_d0/evals.json (density_6k_shared).
d0=runs/shk24/dense_d0; r=runs/shk25/density_shared_d0
sparsejax posttrain shakespeare_posttrain_density $r model.checkpoint=$d0/model data.tokenizer=$d0/tokenizer.json \
  constraint.tau_data=control gate.shared_noise=true
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
python experiments/control_gap.py docs/results/zoo_shakespeare_epyc_d0/evals.json --add density_6k_shared $r \
  --runs density_6k density_6k_s2 density_6k_shared
# the same on this round's dense seed 1 (beside its density-preset run above)
d1=runs/shk25/dense_d1; r=runs/shk25/density_shared_d1
sparsejax posttrain shakespeare_posttrain_density $r model.checkpoint=$d1/model data.tokenizer=$d1/tokenizer.json \
  constraint.tau_data=control gate.shared_noise=true
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
python experiments/control_gap.py docs/results/zoo_shakespeare_epyc_d1/evals.json --add density_6k_shared $r \
  --runs density_6k density_6k_shared
# a second post-training seed of the shared noise on dense seed 0 (train.seed = data.seed = 2)
r=runs/shk25/density_shared_d0_s2
sparsejax posttrain shakespeare_posttrain_density $r model.checkpoint=$d0/model data.tokenizer=$d0/tokenizer.json \
  constraint.tau_data=control gate.shared_noise=true train.seed=2 data.seed=2
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
python experiments/control_gap.py docs/results/zoo_shakespeare_epyc_d0/evals.json --add density_6k_shared_s2 $r \
  --runs density_6k density_6k_s2 density_6k_shared density_6k_shared_s2 ce_lr3e4_6k \
  --curves docs/figures/shakespeare_epyc_d0_curves.png --title "Shakespeare LM, dense seed 0 (AMD EPYC)"
