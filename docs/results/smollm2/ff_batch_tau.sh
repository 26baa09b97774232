#!/usr/bin/env bash
# SmolLM2, fine-tune first, then sparsify in CE-target mode with the target measured on every batch (issue I).
# ff_ce.sh (a fixed tau = the control's late training-batch CE + 0.01) was stopped at step 320: the training batches'
# own difficulty drifts by ~0.15 nats between stretches of the data order, far more than the 0.01 slack, so the
# controller's CE EMA sat above the fixed tau and the multiplier at its floor (no sparsity bought).
# constraint.tau_data=batch: the multiplier sees each measured batch's CE (exported gates) minus the dense starting
# model F's CE on the same batch (the frozen LoRA base), against the slack 0.01. Phase A: exactly
# finetune_first.sh's (F reproduces to 1e-3). Phase B from F on finetune_first.sh's schedule (900 steps, data seed 1,
# lr 1e-3 -> 1e-4, the schedule of its dense control ff_control, reused), PI kp 2, the integral following the lr,
# measured every 4 steps, gate bias lr 0.03.
source "$(dirname "$0")/ff_phase_a.sh"  # M, S, P, COMMON; phase A -> F
sparsejax posttrain $P $S/ff_batch model.checkpoint=$F $COMMON train.steps=900 data.seed=1 constraint.sense=ce \
  constraint.density_target=null constraint.tau_data=batch constraint.slack=0.01 constraint.measure=deterministic \
  constraint.measure_every=4 constraint.pi_kp=2.0 constraint.pi_ki_follow_lr=true gate.bias_lr=0.03 --no-progress \
  > $S/ff_batch.log 2>&1
sparsejax eval $S/ff_batch/config.yaml $S/ff_batch/model data.eval_batches=64 > $S/ff_batch/eval64.json
