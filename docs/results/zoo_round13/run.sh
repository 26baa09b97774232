#!/usr/bin/env bash
# Issue J, thirteenth round (docs/controllers.md): the toy CE-target preset (noise_mid) on longer schedules, with a
# smoother multiplier, at twice the lr, and with the CE target measured on each batch (constraint.tau_data=batch).
# The dense models are the twelfth round's (runs/zoo_dens/toy_dS/dense; docs/results/zoo_density/run.sh pretrains
# them: `--dense-seed S`). results.json accumulates (a rerun skips what is measured).
# Table: python experiments/controllers.py --zoo docs/results/zoo_round13/*/
set -e
for S in 1 2; do  # the two dense models every earlier round left over 2.5%
  python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d$S/dense --out runs/zoo13/toy_d$S \
    --seeds 1 2 --candidates noise_mid_4k noise_mid_3k_lr2 noise_mid_4k_smooth noise_mid_batch \
    noise_mid_4k_smooth_batch
done
for S in 0 3 4; do  # the rest of the zoo, with the candidate that did best on the two, and with the noise back
  python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d$S/dense --out runs/zoo13/toy_d$S \
    --seeds 1 2 --candidates noise_mid_4k_smooth noise_mid_4k_smooth_recover noise_mid_4k_smooth_recover_lr25
done
for S in 1 2; do
  python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d$S/dense --out runs/zoo13/toy_d$S \
    --seeds 1 2 --candidates noise_mid_4k_smooth_recover noise_mid_4k_smooth_recover_lr25
done
# the main job's configuration (dense seed 0, post-training data seed 0)
python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d0/dense --out runs/zoo13/makerun --seeds 1 \
  --set data.seed=0 --candidates noise_mid_4k_smooth noise_mid_4k_smooth_recover noise_mid_4k_smooth_recover_lr25
# the worst dense model on 6,000 steps
for P in 1 2; do
  python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d2/dense --out runs/zoo13/toy_d2_6k_s$P \
    --seeds $P --candidates noise_mid_6k_smooth
done
