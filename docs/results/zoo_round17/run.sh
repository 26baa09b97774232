#!/usr/bin/env bash
# Issue J, seventeenth round (docs/controllers.md): the toy zoo on this machine type (Intel Xeon, 2 cores) — the
# fifteenth round's preset (`noise_mid_4k_smooth_tail`) against the same with the learnt gate bias bounded by its
# start (`noise_mid_4k_smooth_tail_cap`: gate.bias_max=3.0, now the toy preset). The dense models are pretrained
# here (a CPU's float arithmetic parts the trajectories: the fifteenth round's AMD EPYC dense models are other
# models). results.json accumulates (a rerun skips what is measured); one process per output directory at a time.
# Table: python experiments/controllers.py --zoo runs/zoo17/toy_d{0,1,2,3,4}
# Where a final model keeps its edges, with layer 0's gate bias: python experiments/toy_edges.py RUN/model ...
set -e
for S in 0 1 2 3 4; do
  python experiments/controllers.py --task toy --dense-seed $S --out runs/zoo17/toy_d$S --seeds 1 2 \
    --candidates noise_mid_4k_smooth_tail noise_mid_4k_smooth_tail_cap
done
# the toy in Llama layout (RoPE)
sparsejax pretrain toy_addition_pretrain runs/zoo17/toy_llama/dense model.family=llama
python experiments/controllers.py --task toy --dense runs/zoo17/toy_llama/dense --out runs/zoo17/toy_llama \
  --set model.family=llama --seeds 1 2 --candidates noise_mid_4k_smooth_tail noise_mid_4k_smooth_tail_cap
