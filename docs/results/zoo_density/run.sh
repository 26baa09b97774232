#!/usr/bin/env bash
# Issue J, twelfth round: the density-target mode on the toy zoo (GPT-2 layout, dense seeds 0-4, post-training
# seeds 1 and 2), the preset candidate pi_anneal (density EMA alpha 0.98) against pi_anneal_a05 (alpha 0.5: the
# eleventh round's fast-anneal fix, measured here on the slow 1,400-step anneal). Each dense model is pretrained into
# runs/zoo_dens/toy_dS/dense when missing; results.json accumulates (a rerun skips what is measured).
# Table: python experiments/controllers.py --zoo runs/zoo_dens/toy_d{0,1,2,3,4}
set -e
for P in ${SEEDS:-1 2}; do
  for S in 0 1 2 3 4; do
    python experiments/controllers.py --task toy --dense-seed $S --out runs/zoo_dens/toy_d$S --seeds $P \
      --candidates pi_anneal pi_anneal_a05
  done
done
