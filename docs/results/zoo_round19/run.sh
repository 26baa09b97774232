#!/usr/bin/env bash
# Issue J, nineteenth round (docs/controllers.md): the toy preset of the seventeenth round with the density
# penalty's knee (`noise_mid_4k_smooth_tail_cap_knee3`: gate.penalty_knee=3.0, now the toy preset; `..._knee0`:
# 0.0), on the seventeenth round's dense models (pretrained on this machine type,
# Intel Xeon: docs/results/zoo_round17/run.sh, whose runs hold the preset's records). results.json accumulates (a
# rerun skips what is measured; several processes may fill one folder).
# Table: python experiments/controllers.py --zoo runs/zoo19/toy_d{0,1,2,3,4}
# Where each final model keeps its edges: python experiments/toy_edges.py RUN/model ... [--logits]
set -e
for S in 3 1 4 2 0; do
  python experiments/controllers.py --task toy --dense runs/zoo17/toy_d$S/dense --out runs/zoo19/toy_d$S --seeds 1 2 \
    --candidates noise_mid_4k_smooth_tail_cap_knee3
done
# the knee at 0, beside it
for S in 3 1 4 2 0; do
  python experiments/controllers.py --task toy --dense runs/zoo17/toy_d$S/dense --out runs/zoo19/toy_d$S --seeds 1 2 \
    --candidates noise_mid_4k_smooth_tail_cap_knee0
done
python experiments/controllers.py --task toy --dense runs/zoo17/toy_llama/dense --out runs/zoo19/toy_llama \
  --set model.family=llama --seeds 1 2 --candidates noise_mid_4k_smooth_tail_cap_knee3
# the Shakespeare LM's dense seed 1 (docs/results/zoo_round18/run.sh): the density preset with the knee, a dense
# control trained beside it
sparsejax posttrain shakespeare_posttrain_density runs/shk_d1/density_knee3 model.checkpoint=runs/shk_d1/dense/model \
  data.tokenizer=runs/shk_d1/dense/tokenizer.json constraint.tau_data=control gate.penalty_knee=3.0
