#!/usr/bin/env bash
# Issue J, eighteenth round (docs/controllers.md): the toy preset (`noise_mid_4k_smooth_tail_cap`) against the same
# with the lr ending at a quarter of its peak (`noise_mid_4k_smooth_tail_cap_lr25`: train.lr_final=0.25), on the
# seventeenth round's dense models (pretrained on this machine type, Intel Xeon: docs/results/zoo_round17/run.sh,
# whose runs hold the preset's records). results.json accumulates (a rerun skips what is measured).
# Table: python experiments/controllers.py --zoo runs/zoo18/toy_d{0,1,2,3,4}
# Where each final model keeps its edges: python experiments/toy_edges.py RUN/model ...
set -e
C=noise_mid_4k_smooth_tail_cap_lr25
for S in 0 1 2 3 4; do
  python experiments/controllers.py --task toy --dense runs/zoo17/toy_d$S/dense --out runs/zoo18/toy_d$S --seeds 1 2 \
    --candidates $C
done
python experiments/controllers.py --task toy --dense runs/zoo17/toy_llama/dense --out runs/zoo18/toy_llama \
  --set model.family=llama --seeds 1 2 --candidates $C
# the Shakespeare LM's second dense model (seed 1) and the density preset with a dense control trained beside it
sparsejax pretrain shakespeare_pretrain runs/shk_d1/dense train.seed=1 data.seed=1
sparsejax posttrain shakespeare_posttrain_density runs/shk_d1/density_control model.checkpoint=runs/shk_d1/dense/model \
  data.tokenizer=runs/shk_d1/dense/tokenizer.json constraint.tau_data=control
# the CE preset (now with gate.bias_max: 3.0) on the real SmolLM2-135M, a short run, with and without the bound
M=~/.cache/sparsejax/models/smollm2
for B in 3.0 null; do
  sparsejax posttrain shakespeare_posttrain runs/smol_ce_bias_$B model.checkpoint=$M data.tokenizer=$M/tokenizer.json \
    data.seq_len=64 data.batch_size=8 train.lora_rank=16 train.steps=120 train.eval_every=40 train.checkpoint_every=40 \
    train.log_every=10 constraint.measure_every=4 gate.bias_max=$B
done
