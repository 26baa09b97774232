#!/usr/bin/env bash
# Issue J, twenty-fourth round (docs/controllers.md): the toy zoo pretrained and post-trained on an AMD EPYC (2 cores),
# the machine type issue J was filed on, with the toy preset as it stands (`toy_addition_posttrain`; candidate
# `noise_mid_4k_smooth_tail_cap_knee3` is that preset spelt out: the same config, checked by loading both). Five
# GPT-2-layout dense models (pretraining seeds 0-4) x post-training seeds 1 and 2, and the Llama-layout (RoPE) toy;
# two processes side by side. results.json accumulates (a rerun skips what is measured).
# Table: python experiments/controllers.py --zoo runs/zoo24/toy_d{0,1,2,3,4}
set -e
run() {
  python experiments/controllers.py --task toy --dense-seed "$1" --out "runs/zoo24/toy_d$1" --seeds 1 2 \
    --candidates noise_mid_4k_smooth_tail_cap_knee3
}
(for S in 0 1 2; do run $S; done) &
(for S in 3 4; do run $S; done
 sparsejax pretrain toy_addition_pretrain runs/zoo24/toy_llama/dense model.family=llama
 python experiments/controllers.py --task toy --dense runs/zoo24/toy_llama/dense --out runs/zoo24/toy_llama \
   --set model.family=llama --seeds 1 2 --candidates noise_mid_4k_smooth_tail_cap_knee3) &
wait
# the integral's fall following the lr too (constraint.pi_ki_down_follow_lr=true), on the same dense models
run2() {
  python experiments/controllers.py --task toy --dense "runs/zoo24/toy_d$1/dense" --out "runs/zoo24/toy_d$1" --seeds 1 2 \
    --candidates noise_mid_4k_smooth_tail_cap_knee3_downlr
}
(for S in 2 0 4; do run2 $S; done) &
(for S in 1 3; do run2 $S; done) &
wait
# the same with a longer noise-free end (gate.noise_zero=0.4), the worst dense model first, one process (nice 10)
for S in 2 1 4 0 3; do
  python experiments/controllers.py --task toy --dense "runs/zoo24/toy_d$S/dense" --out "runs/zoo24/toy_d$S" --seeds 1 2 \
    --candidates noise_mid_4k_smooth_tail_cap_knee3_downlr_zero40
done
# the preset with the gate noise falling to a floor of 0.2 instead of 0, toy_d2 only (two processes)
for S in 1 2; do
  python experiments/controllers.py --task toy --dense runs/zoo24/toy_d2/dense --out runs/zoo24/toy_d2_floor --seeds $S \
    --candidates noise_mid_4k_smooth_tail_cap_knee3_floor20 &
done; wait
