#!/usr/bin/env bash
# Issue J, twenty-eighth round (docs/controllers.md): toy_d2, the AMD EPYC zoo's worst dense model (the twenty-fourth
# round's, pretrained when missing by docs/results/zoo_round24/run.sh), post-trained with three candidates over the
# toy preset; two processes side by side, ~3 min a 4,000-step run. results.json accumulates (a rerun skips what is
# measured). Which problems a run's last model lost: python experiments/toy_lost.py RUN/model RUN@last
set -e
dense=runs/zoo24/toy_d2/dense
[ -d $dense/model ] || sparsejax pretrain toy_addition_pretrain $dense train.seed=2 data.seed=2
run() {  # candidate, post-training seed
  python experiments/controllers.py --task toy --dense $dense --out runs/zoo28/toy_d2 --seeds "$2" --candidates "$1"
}
# twice the steps, the noise falling over steps 3,000-4,000 and 0 for the last 4,000 (the last half at a higher lr)
run noise_mid_8k_smooth_tail_cap_knee3 1 & run noise_mid_8k_smooth_tail_cap_knee3 2 & wait
# the density penalty's floor at a gate logit of -3 (gate.penalty_floor)
for S in 1 3; do run noise_mid_4k_smooth_tail_cap_knee3_pfloor3 $S & run noise_mid_4k_smooth_tail_cap_knee3_pfloor3 $((S + 1)) & wait; done
# the noise falling over steps 0-3,000 (the twenty-fifth round measured seeds 1 and 2), seeds 3 and 4
run noise_mid_4k_smooth_tail_cap_knee3_anneal75 3 & run noise_mid_4k_smooth_tail_cap_knee3_anneal75 4 & wait
