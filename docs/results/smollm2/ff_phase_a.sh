# Sourced by the fine-tune-first scripts (finetune_first.sh, ff_short_memory.sh, ff_ce.sh, ff_batch_tau.sh): their
# shared settings and phase A, the dense LoRA fine-tuning on Shakespeare (600 steps, gate off) that gives the
# fine-tuned model F = $F. Resumable: a finished phase A is only reloaded. LoRA r16 on q/k/v/o, T=64, batch 8.
set -e
M=~/.cache/sparsejax/models/smollm2
S=runs/smollm2
P=docs/results/presets/shakespeare_posttrain_until_2026-12-02.yaml
COMMON="data.tokenizer=$M/tokenizer.json data.seq_len=64 data.batch_size=8 train.lora_rank=16 \
  train.eval_every=100 train.checkpoint_every=50 train.keep=2 train.log_every=10"
sparsejax pretrain $P $S/ff_a model.checkpoint=$M $COMMON train.steps=600 constraint.sense=ce constraint.density_target=null --no-progress
F=$S/ff_a/model
