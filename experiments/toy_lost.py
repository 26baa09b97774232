"""Which held-out toy problems a sparse model loses, and what they share (issue J, twenty-eighth round).

    python experiments/toy_lost.py RUN/model RUN@last [--threshold 0.05] [--logits]

Each MODEL is a model directory, or ``RUN@last``: the newest checkpoint of a post-training run directory (restored
as a resumed run would be, from a copy: the run is not touched). For each model: the held-out answer CE, the share
of problems with every answer digit right under teacher forcing, and the problems it loses (mean answer CE over
``--threshold``), grouped by the operand digits they share: a late break of a toy run (held-out CE jumping to 2-4x
tau) is one pair of units or tens digits lost, e.g. every problem whose units digits are 8 and 2 (9 of 1,000, each
at ~1 nat: +0.01 on the mean). ``--logits``: where each layer's closed edges sit (the quantiles of their gate logits
over the held-out problems): a closed edge the CE needs again gets its straight-through gradient through
``sigmoid'(g)``, 0.25 at 0 and 2.5e-3 at -6.
"""
from __future__ import annotations

import argparse
from collections import Counter


def lost_groups(rows, ce, threshold: float = 0.05) -> list[tuple[str, int, int]]:
    """``(pattern, lost, total)`` for the operand-digit patterns shared by the lost problems (``ce > threshold``),
    most lost first: ``units b+d`` / ``tens a+c`` for the digit pairs of ``ab+cd``; ``total`` counts every problem
    of ``rows`` with that pattern. Only patterns that at least two lost problems share."""
    import numpy as np

    rows, ce = np.asarray(rows), np.asarray(ce)
    keys = {"units": lambda r: f"units {r[1]}+{r[4]}", "tens": lambda r: f"tens {r[0]}+{r[3]}"}
    lost = ce > threshold
    out = []
    for name, key in keys.items():
        every = Counter(key(r) for r in rows)
        for pattern, n in Counter(key(r) for r in rows[lost]).items():
            if n >= 2:
                out.append((pattern, n, every[pattern]))
    return sorted(out, key=lambda t: (-t[1], t[0]))


def load(spec: str):
    """A model directory, or ``RUN@last`` (the run's newest checkpoint, exported from a copy of the run)."""
    import shutil
    import tempfile
    from pathlib import Path

    import sparsejax as sj
    if not spec.endswith("@last"):
        return sj.from_pretrained(spec)
    from sparsejax.config import load_config
    from sparsejax.train import Trainer, checkpointing

    run = Path(spec[:-len("@last")])
    if not (run / "checkpoints").is_dir():
        raise SystemExit(f"{run} has no checkpoints/: RUN@last needs a post-training run directory")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(run, tmp / "run")
        trainer = Trainer(load_config(str(tmp / "run" / "config.yaml"), []), tmp / "run", progress=False)
        trainer.state, step = checkpointing.restore_latest(
            checkpointing.manager(trainer.dir, trainer.cfg.train.keep), trainer.state)
        trainer.export(tmp / "model")
        print(f"{spec}: step {step}")
        return sj.from_pretrained(str(tmp / "model"))


def per_problem(model):
    """``(rows, answer CE of each held-out problem, all answer digits right under teacher forcing)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sparsejax as sj
    from sparsejax.data import addition

    bos = model.config.vocab_size == addition.vocab(True)
    rows = addition.split("validation", bos)
    x, y = jnp.asarray(rows[:, :-1]), np.asarray(rows[:, 1:])
    mask = addition.answer_mask(len(rows), bos)
    logits = sj.forward(model.config, model.params, x, model.gate, mode="eval")[0]
    logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)))
    ce = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    right = (logp.argmax(-1) == y) | (mask == 0)
    return rows[:, int(bos):], (ce * mask).sum(1) / mask.sum(1), right.all(1)


def closed_logits(model, quantiles=(0.1, 0.5, 0.9)) -> list[dict]:
    """Per layer: the share of causal pairs open (gate logit ``g > 0``) over the held-out problems, and the
    ``quantiles`` of the closed pairs' gate logits (``toy_edges.gate_logits``)."""
    import jax.numpy as jnp
    import numpy as np
    from toy_edges import gate_logits, logit_hooks

    import sparsejax as sj
    from sparsejax.data import addition

    bos = model.config.vocab_size == addition.vocab(True)
    x = jnp.asarray(addition.split("validation", bos)[:, :-1])
    layers = range(model.config.n_layers)
    caps = sj.forward(model.config, model.params, x, model.gate, mode="eval",
                      capture=[n for layer in layers for n in logit_hooks(model.config, layer)])[1]["captures"]
    causal = np.tril(np.ones((x.shape[1], x.shape[1]), bool))
    out = []
    for layer in layers:
        g = gate_logits(model, caps, layer)[..., causal]
        closed = g[g <= 0]
        out.append({"layer": layer, "open": float(np.mean(g > 0)),
                    "closed_quantiles": dict(zip(quantiles, np.quantile(closed, quantiles).tolist() if closed.size
                                                 else [float("nan")] * len(quantiles)))})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model directories or RUN@last")
    p.add_argument("--threshold", type=float, default=0.05, help="a problem is lost above this mean answer CE")
    p.add_argument("--logits", action="store_true", help="also the gate logits of each layer's closed edges")
    a = p.parse_args(argv)
    for spec in a.models:
        model = load(spec)
        rows, ce, right = per_problem(model)
        lost = ce > a.threshold
        print(f"{spec}: held-out answer CE {ce.mean():.5f}, all digits right {right.mean():.3f}, "
              f"{int(lost.sum())} of {len(ce)} problems lost (CE > {a.threshold})")
        for pattern, n, total in lost_groups(rows, ce, a.threshold):
            print(f"  {pattern}: {n} lost of the {total} held-out problems with it")
        if a.logits:
            for r in closed_logits(model):
                qs = ", ".join(f"{100 * q:g}% {v:.1f}" for q, v in r["closed_quantiles"].items())
                print(f"  layer {r['layer']}: {100 * r['open']:.2f}% of pairs open; closed gate logits {qs}")


if __name__ == "__main__":
    main()
