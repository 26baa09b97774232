"""Has a dense model seen the rows a post-training would hold aside? Its held-out CE on the validation split against
its CE on the held-aside rows (``data.aside``: the last share of the training rows) and on stretches of the rows it
trains on, each as many rows as are held aside. A model pretrained on all the training rows has memorised the
held-aside ones (their CE is that of training rows, far under the validation CE), so the CE gap a post-training
measures there counts what the sparse model forgets, not what it loses on new text; a model pretrained with the same
rows held aside (``sparsejax pretrain ... data.aside=0.05``) sees them as new. Issue J, twenty-sixth round in
docs/controllers.md.

    python experiments/aside_ce.py RUN/config.yaml MODEL_DIR [MODEL_DIR ...] [--aside 0.05] [--batches 32]
"""
from __future__ import annotations

import argparse
import tempfile


def table(config: str, models: list[str], aside: float, batches: int) -> list[dict]:
    """One row per model: its dense CE on the validation split, the held-aside rows and three training stretches."""
    from sparsejax.config import load_config
    from sparsejax.data import Rows, hold_aside
    from sparsejax.train import Trainer

    out = []
    for model in models:
        cfg = load_config(config, [f"model.checkpoint={model}", f"data.eval_batches={batches}", "data.aside=0.0"])
        with tempfile.TemporaryDirectory() as tmp:
            t = Trainer(cfg, tmp, progress=False)
            rest, held = hold_aside(t.train_src, aside)
            n, k = len(rest), len(held)
            row = {"model": model, "validation": t.evaluate(dense=True)["eval_ce"],
                   "held aside": t.evaluate(dense=True, src=held)["eval_ce"]}
            for name, start in (("training, first", 0), ("training, middle", n // 2), ("training, last", n - k)):
                row[name] = t.evaluate(dense=True, src=Rows(rest, start, start + k))["eval_ce"]
        out.append(row)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="a run's config.yaml (or a preset) that reads the model's data and tokenizer")
    p.add_argument("models", nargs="+", help="dense model folders")
    p.add_argument("--aside", type=float, default=0.05, help="the share of the training rows held aside")
    p.add_argument("--batches", type=int, default=32, help="batches of each part (data.batch_size rows each)")
    args = p.parse_args(argv)
    rows = table(args.config, args.models, args.aside, args.batches)
    keys = [k for k in rows[0] if k != "model"]
    print("| model | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for r in rows:
        print(f"| {r['model']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
