"""Does a model have induction heads? Its loss on a repeated sequence, first occurrence against the copy.

For each model: ``n`` held-out passages of ``half`` tokens (from the text of a run config, repeats off) and ``n``
sequences of ``half`` uniform random tokens, each followed by itself; the mean next-token loss (nats) on the first
occurrence (targets 1 .. half-1) and on the copy (targets half+1 .. 2 half-1; the copy's first token cannot be
inferred). A model with induction heads predicts the copy almost exactly (loss well under 1 nat on random tokens,
whose first occurrence costs ~log V); one without barely gains.

    python experiments/induction_score.py --text runs/induction_lm/dense/config.yaml \
        runs/shakespeare/dense/model runs/induction_lm/dense/model
    python experiments/induction_score.py --text runs/induction_lm3/dense/config.yaml runs/induction_lm3/dense/model \
        runs/induction_lm3/sparse_d/d0.01/model --maps docs/figures/induction_lm_attention.png
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def copy_losses(model, sequences: np.ndarray) -> tuple[float, float]:
    """Mean loss on the first occurrence and on the copy of ``sequences`` [n, half] repeated once."""
    import jax.numpy as jnp

    from sparsejax.models import forward
    from sparsejax.objective import cross_entropy

    half = sequences.shape[1]
    x = jnp.asarray(np.concatenate([sequences, sequences], 1), jnp.int32)
    logits = forward(model.config, model.params, x[:, :-1], model.gate, mode="eval")[0]
    return (float(cross_entropy(logits[:, :half - 1], x[:, 1:half])),   # targets 1 .. half-1
            float(cross_entropy(logits[:, half:], x[:, half + 1:])))    # the copy's targets half+1 .. 2 half-1


def main(argv=None):
    import sparsejax as sj
    from sparsejax.config import load_config
    from sparsejax.data import batch_at
    from sparsejax.train import build_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model directories (sparse models run with their eval gates)")
    p.add_argument("--text", required=True, help="a run's config.yaml: held-out passages of its text")
    p.add_argument("--half", type=int, default=24)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--maps", help="with two models (dense, sparse): draw their per-head attention (P x A, eval gates) "
                   "on the first random sequence and its copy to this .png")
    args = p.parse_args(argv)
    if args.maps and len(args.models) != 2:
        raise ValueError(f"--maps draws two models side by side (dense, sparse); got {len(args.models)} models")
    cfg = load_config(args.text)
    cfg.data.repeat = 0.0  # plain held-out text
    with tempfile.TemporaryDirectory() as tmp:
        _, val, tokenizer = build_data(cfg, Path(tmp))
        text = np.asarray(batch_at(val, 0, args.n, seed=args.seed)["tokens"])[:, :args.half]
    rand = np.random.default_rng(args.seed).integers(0, tokenizer.get_vocab_size(), (args.n, args.half))
    rows, models = [], []
    for path in args.models:
        model = sj.from_pretrained(path)
        if 2 * args.half > model.config.max_position:
            raise ValueError(f"2 x --half = {2 * args.half} tokens exceeds {path}'s {model.config.max_position} "
                             "positions: use a smaller --half")
        models.append(model)
        row = {"model": path}
        for name, seqs in (("text", text), ("random", rand)):
            row[f"{name}_first"], row[f"{name}_copy"] = copy_losses(model, seqs)
        rows.append(row)
    print(f"| model | text: first | text: copy | random: first | random: copy |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['text_first']:.3f} | {r['text_copy']:.3f} | {r['random_first']:.3f} | "
              f"{r['random_copy']:.3f} |")
    print(json.dumps(rows))
    if args.maps:
        from sparsejax import report

        seq = np.concatenate([rand[0], rand[0]])
        maps = [report.head_maps(m, seq, m.gate) for m in models]
        report.plot_attention_maps(*maps, [""] * len(seq), Path(args.maps),
                                   f"a random {args.half}-token sequence and its copy: {args.models[0]} (left), "
                                   f"{args.models[1]} (right); red: edges kept")
        print(f"wrote {args.maps}")


if __name__ == "__main__":
    main()
