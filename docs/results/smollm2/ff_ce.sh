#!/usr/bin/env bash
# SmolLM2, fine-tune first, then sparsify in CE-target mode at the dense control's loss (issue I).
# ce_target.sh tried the CE mode from the base model: the fine-tuning reached the control's loss only at the end,
# so the multiplier sat at its floor and bought no sparsity ("a fixed CE target below the model's current loss is a
# wait, not a trade"). From the fine-tuned model F the model starts at its loss. Phase A: exactly finetune_first.sh's
# (F reproduces to 1e-3). Phase B, from F, on finetune_first.sh's schedule (900 steps, data seed 1, lr 1e-3 -> 1e-4:
# the schedule of its dense control ff_control, which is reused): CE <= tau with tau = 3.885, the control's
# training-batch CE over its last 10 logged batches (3.875, steps 810-900) + 0.01; the controller sees the
# training batch's CE under the deterministic gates every 4 steps (EMA alpha 0.98), PI kp 2 with the integral
# following the lr (the CE preset's winners), gate bias lr 0.03.
source "$(dirname "$0")/ff_phase_a.sh"  # M, S, P, COMMON; phase A -> F
sparsejax posttrain $P $S/ff_ce model.checkpoint=$F $COMMON train.steps=900 data.seed=1 constraint.sense=ce \
  constraint.density_target=null constraint.tau=3.885 constraint.measure=deterministic constraint.measure_every=4 \
  constraint.pi_kp=2.0 constraint.pi_ki_follow_lr=true gate.bias_lr=0.03 --no-progress > $S/ff_ce.log 2>&1
sparsejax eval $S/ff_ce/config.yaml $S/ff_ce/model data.eval_batches=64 > $S/ff_ce/eval64.json
