#!/usr/bin/env bash
# Issue J, fourteenth round (docs/controllers.md): the thirteenth round's best candidate (noise_mid_4k_smooth) with
# the multiplier held from 70% of the schedule on (constraint.pi_hold_from=0.7), with the gate noise falling to a
# floor of 0.2 instead of 0 (gate.noise_floor=0.2), and with model/ the last evaluated model that met the
# constraint on training batches (train.final=feasible). The dense models are the twelfth round's
# (runs/zoo_dens/toy_dS/dense; docs/results/zoo_density/run.sh pretrains them: `--dense-seed S`). results.json
# accumulates (a rerun skips what is measured).
# Table: python experiments/controllers.py --zoo docs/results/zoo_round14/*/
# Which problems a final model fails: python experiments/toy_failures.py runs/zoo14/toy_dS/CANDIDATE/seedP/model
set -e
for S in 2 1; do  # the two dense models every earlier round left over 2.5%
  python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d$S/dense --out runs/zoo14/toy_d$S \
    --seeds 1 2 --candidates noise_mid_4k_smooth_hold70 noise_mid_4k_smooth_floor20
done
for S in 2 1 0 3 4; do
  python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d$S/dense --out runs/zoo14/toy_d$S \
    --seeds 1 2 --candidates noise_mid_4k_smooth_feasible
done
# the main job's configuration (dense seed 0, post-training data seed 0)
python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d0/dense --out runs/zoo14/makerun --seeds 1 \
  --set data.seed=0 --candidates noise_mid_4k_smooth_feasible
