#!/usr/bin/env bash
# Issue J, twenty-second round (docs/controllers.md): the Shakespeare dense models pretrained twice as long from the
# start (the pretraining preset at 6,000 steps instead of 3,000), then the density post-training preset unchanged with
# a dense control beside it, on dense seeds 0 and 1 (Intel Xeon, 2 cores; as run: seed 1's pretraining at a lower
# priority beside seed 0's runs, each post-training started when its pretraining ended). Records:
# docs/results/zoo_shakespeare_d{0,1}/evals.json (dense_6k, density_6k).
set -e
for s in 0 1; do
  sparsejax pretrain shakespeare_pretrain runs/shk6k_d$s/dense train.steps=6000 train.seed=$s data.seed=$s &
done; wait
for s in 0 1; do
  sparsejax posttrain shakespeare_posttrain_density runs/shk6k_d$s/density model.checkpoint=runs/shk6k_d$s/dense/model \
    data.tokenizer=runs/shk6k_d$s/dense/tokenizer.json constraint.tau_data=control &
done; wait
for s in 0 1; do
  r=runs/shk6k_d$s/density
  for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
  sparsejax eval $r/config.yaml runs/shk6k_d$s/dense/model data.eval_batches=64   # the starting model, same batches
  python experiments/control_gap.py docs/results/zoo_shakespeare_d$s/evals.json --add dense_6k runs/shk6k_d$s/dense \
    --add density_6k $r --runs density_control density_from_control density_6k \
    --curves docs/figures/shakespeare_d${s}_6k_curves.png --title "Shakespeare LM, dense seed $s" --ymax 0.05
done
