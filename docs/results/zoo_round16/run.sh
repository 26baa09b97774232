#!/usr/bin/env bash
# Issue J, sixteenth round (docs/controllers.md): the toy in Llama layout (RoPE) with a BOS token first in every row
# (data.bos=true), so that a position signal can cost one edge a token; the toy preset (noise_mid_4k_smooth_tail)
# unchanged. Records: docs/results/zoo_round16/toy_llama_bos/results.json.
# Where the final models keep their edges: python experiments/toy_edges.py runs/zoo16/toy_llama_bos/*/seed*/model
set -e
sparsejax pretrain toy_addition_pretrain runs/zoo16/toy_llama_bos/dense model.family=llama data.bos=true \
  model.vocab_size=13
python experiments/controllers.py --task toy --dense runs/zoo16/toy_llama_bos/dense --out runs/zoo16/toy_llama_bos \
  --set model.family=llama data.bos=true --seeds 1 2 --candidates noise_mid_4k_smooth_tail
