#!/usr/bin/env bash
# Issue J, twentieth round (docs/controllers.md): why the Llama-layout toy keeps ~7% (its layer-0 gate cannot see
# position), the gate noise annealed to 0 in the density preset on the two small LMs, and the Shakespeare density
# preset on dense seed 0 pretrained on this machine type (Intel Xeon, 2 cores) with a control beside it.
# Records: docs/results/zoo_round20/toy_llama/results.json; docs/results/zoo_shakespeare_d1/evals.json
# (density_noise); docs/results/zoo_induction/evals.json (density_noise); docs/results/zoo_shakespeare_d0/evals.json.
set -e
# the Llama-layout toy: the dense model (the seventeenth round's command) and the toy preset, seed 1
sparsejax pretrain toy_addition_pretrain runs/zoo20/toy_llama/dense model.family=llama
python experiments/controllers.py --task toy --dense runs/zoo20/toy_llama/dense --out runs/zoo20/toy_llama \
  --set model.family=llama --seeds 1 --candidates noise_mid_4k_smooth_tail_cap_knee3
python experiments/toy_edges.py runs/zoo20/toy_llama/noise_mid_4k_smooth_tail_cap_knee3/seed1/model --map --logits
# the density preset with the gate noise annealed to 0 over the last half (1 -> 0 over steps 1,200-1,800, then 0),
# a dense control beside it; Shakespeare dense seed 1 (docs/results/zoo_round18/run.sh) and the induction LM
# (docs/controllers.md, fourteenth round)
sparsejax posttrain shakespeare_posttrain_density runs/shk_d1/density_noise model.checkpoint=runs/shk_d1/dense/model \
  data.tokenizer=runs/shk_d1/dense/tokenizer.json constraint.tau_data=control gate.noise_anneal=0.25 gate.noise_zero=0.25
X="model.checkpoint=runs/ind/dense/model data.tokenizer=runs/ind/dense/tokenizer.json data.seq_len=64 data.batch_size=32
data.repeat=1.0 data.repeat_tokens=random"
sparsejax posttrain shakespeare_posttrain_density runs/ind/density_noise $X constraint.tau_data=control \
  gate.noise_anneal=0.25 gate.noise_zero=0.25
python experiments/control_gap.py docs/results/zoo_shakespeare_d1/evals.json --runs density_control density_knee3 \
  density_noise --curves docs/figures/shakespeare_d1_control_gap_curves.png --title "Shakespeare LM, dense seed 1"
# Shakespeare dense seed 0 pretrained on this machine type, the density preset unchanged, its control beside it
sparsejax pretrain shakespeare_pretrain runs/shk_d0/dense
sparsejax posttrain shakespeare_posttrain_density runs/shk_d0/density_control model.checkpoint=runs/shk_d0/dense/model \
  data.tokenizer=runs/shk_d0/dense/tokenizer.json constraint.tau_data=control
