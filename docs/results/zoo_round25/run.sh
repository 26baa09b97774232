#!/usr/bin/env bash
# Issue J, twenty-fifth round (docs/controllers.md): toy_d2, the AMD EPYC zoo's worst dense model, under new candidates,
# then the shared gate noise (gate.shared_noise) on the whole zoo. The dense models are the twenty-fourth round's
# (docs/results/zoo_round24/run.sh makes them in runs/zoo24). AMD EPYC, 2 cores; as run: two processes side by side,
# beside the round's Shakespeare runs (run_shakespeare.sh) at the lowest priority. Records: */results.json here.
set -e
K=noise_mid_4k_smooth_tail_cap_knee3   # the toy preset, spelt out (candidate names below extend it)
d2() { python experiments/controllers.py --task toy --dense runs/zoo24/toy_d2/dense --out runs/zoo25/toy_d2 "$@"; }
for C in slowfall anneal75 shared shared_anneal75 shared_nofollow shared_regain early0 clipfirst; do
  d2 --seeds 1 2 --candidates ${K}_$C
done
d2 --seeds 1 --candidates ${K}_anneal50          # seed 2 stopped once seed 1 missed
d2 --seeds 3 4 --candidates $K ${K}_shared       # two more post-training seeds of the preset and of the shared noise
for S in 0 1 3 4; do
  python experiments/controllers.py --task toy --dense runs/zoo24/toy_d$S/dense --out runs/zoo25/toy_d$S --seeds 1 2 \
    --candidates ${K}_shared
done
python experiments/controllers.py --task toy --dense runs/zoo24/toy_llama/dense --out runs/zoo25/toy_llama \
  --set model.family=llama --seeds 1 2 --candidates ${K}_shared
# where toy_d2 keeps its layer-0 edges, the preset against the shared noise
python experiments/toy_edges.py runs/zoo24/toy_d2/$K/seed1/model runs/zoo25/toy_d2/${K}_shared/seed{1,2}/model --map \
  --figure docs/figures/toy_layer0_edges_shared.png --labels "toy_d2 seed 1, the preset (3.81%)" \
  "toy_d2 seed 1, shared noise (2.56%)" "toy_d2 seed 2, shared noise (2.67%)"
