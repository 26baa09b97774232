#!/usr/bin/env bash
# Issue J, twenty-ninth round (docs/controllers.md): can toy_d2's unspent slack be spent on the gate thresholds alone?
# experiments/threshold_trim.py on the final runs of the toy preset on toy_d2 (AMD EPYC; the twenty-fourth and
# twenty-fifth rounds' runs, made again by docs/results/zoo_round24/run.sh and zoo_round25/run.sh when missing),
# held out on the whole validation split (15 batches of 64 problems). ~20 s a run.
set -e
out=docs/results/zoo_round29/trim
for s in 1 2 3 4; do
  r=runs/zoo24/toy_d2/noise_mid_4k_smooth_tail_cap_knee3/seed$s
  [ -d $r ] || r=runs/zoo25/toy_d2/noise_mid_4k_smooth_tail_cap_knee3/seed$s
  python experiments/threshold_trim.py $r --held-out-batches 16 --out $out/seed$s.json > $out/seed$s.txt
done
