#!/usr/bin/env bash
# Issue J, twenty-sixth round (docs/controllers.md): the CE-target preset on the Shakespeare LM's two 6,000-step dense
# models of the machine type (AMD EPYC, 2 cores; runs/shk24/dense_d0 from zoo_round24/run_shakespeare.sh,
# runs/shk25/dense_d1 from zoo_round25/run_shakespeare.sh), with the multiplier's input the CE gap to a dense control
# trained beside the run, measured on held-aside training rows (constraint.tau_data=control data.aside=0.05), the gap
# target annealed from 0.1 to the slack over the first 1,600 steps (constraint.anneal_from / anneal_steps), the
# slack 0.007, and the training noise shared by the heads. The two dense models side by side (run as
# `bash docs/results/zoo_round26/run_shakespeare.sh d0 & bash docs/results/zoo_round26/run_shakespeare.sh d1`).
# Records: docs/results/zoo_shakespeare_epyc_d{0,1}/evals.json (ce_gap_annealed).
set -e
case $1 in d0) d=runs/shk24/dense_d0 ;; d1) d=runs/shk25/dense_d1 ;; *) echo "usage: $0 d0|d1"; exit 2 ;; esac
r=runs/shk26/ce_gap_annealed_$1
sparsejax posttrain shakespeare_posttrain $r model.checkpoint=$d/model data.tokenizer=$d/tokenizer.json \
  constraint.tau_data=control data.aside=0.05 constraint.anneal_from=0.1 constraint.anneal_steps=1600 \
  constraint.slack=0.007 gate.shared_noise=true
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
python experiments/control_gap.py docs/results/zoo_shakespeare_epyc_$1/evals.json --add ce_gap_annealed $r
