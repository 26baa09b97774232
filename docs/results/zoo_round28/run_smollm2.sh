#!/usr/bin/env bash
# Issue J, twenty-eighth round (docs/controllers.md): the Shakespeare CE-target preset as it stands
# (`shakespeare_posttrain`: the gap to a dense control trained beside the run, measured on held-aside rows, its
# target annealed 0.1 -> the slack 0.001; full fine-tuning, as the control needs) on the real SmolLM2-135M, a short
# run: 400 steps (the anneal over the first 267, the preset's two thirds), rows of 64 tokens, batch 8 (SmolLM2's
# earlier runs' shape). No other setting changed. AMD EPYC, 2 cores (~40 min alone).
# Needs `sparsejax data smollm2` (once). Records: docs/results/zoo_round28/smollm2_ce/.
set -e
M=${SPARSEJAX_CACHE:-$HOME/.cache/sparsejax}/models/smollm2
[ -d "$M" ] || { echo "no SmolLM2 at $M: run 'sparsejax data smollm2' first"; exit 2; }
r=runs/shk28/smollm2_ce
sparsejax posttrain shakespeare_posttrain $r model.checkpoint=$M data.tokenizer=$M/tokenizer.json data.seq_len=64 \
  data.batch_size=8 train.steps=400 constraint.anneal_steps=267 train.eval_every=50 train.checkpoint_every=50 \
  train.log_every=10 --no-progress
for m in model control_model; do sparsejax eval $r/config.yaml $r/$m data.eval_batches=64 > $r/eval64_$m.json; done
sparsejax eval $r/config.yaml $M data.eval_batches=64 > $r/eval64_start.json
