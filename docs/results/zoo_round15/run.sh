#!/usr/bin/env bash
# Issue J, fifteenth round (docs/controllers.md): noise_mid_4k_smooth with train.final=feasible and the tail of the
# per-problem loss on the training batches (train.feasible_tail=0.02, train.feasible_tail_slack=0.05) — now the toy
# preset. The dense models are the twelfth round's (runs/zoo_dens/toy_dS/dense; docs/results/zoo_density/run.sh
# pretrains them: `--dense-seed S`). results.json accumulates (a rerun skips what is measured); run one process per
# output directory at a time (two writing one results.json lose each other's rows).
# Table: python experiments/controllers.py --zoo docs/results/zoo_round15/toy_d* docs/results/zoo_round15/makerun
# The tail of a final model on all 9,000 training problems: python experiments/toy_failures.py RUN/model
set -e
# the main job's configuration (dense seed 0, post-training data seed 0)
python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d0/dense --out runs/zoo15/makerun --seeds 1 \
  --set data.seed=0 --candidates noise_mid_4k_smooth_tail
for S in 0 1 2 3 4; do
  python experiments/controllers.py --task toy --dense runs/zoo_dens/toy_d$S/dense --out runs/zoo15/toy_d$S \
    --seeds 1 2 --candidates noise_mid_4k_smooth_tail
done
# the toy in Llama layout (RoPE): its dense model, then the fourteenth round's candidate and this one
sparsejax pretrain toy_addition_pretrain runs/zoo15/toy_llama/dense model.family=llama
python experiments/controllers.py --task toy --dense runs/zoo15/toy_llama/dense --out runs/zoo15/toy_llama \
  --set model.family=llama --seeds 1 2 --candidates noise_mid_4k_smooth_feasible noise_mid_4k_smooth_tail
