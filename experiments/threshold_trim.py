"""Can a sparse model's unspent slack be spent after training, on its gate thresholds alone?

    python experiments/threshold_trim.py RUN [--step 0.5] [--out trim.json]

A final toy model often ends well under its target (held-out CE ~ tau - slack: the dense model's CE). This lowers
one head's learnt gate bias at a time by ``--step`` (its gates then open only above a higher logit: the edges with
the smallest logits close first), greedily: at each step the head whose move closes the most edges per nat of CE,
among the moves that keep the model feasible on the run's own selection batches (``train.final=feasible``: the
first ``data.eval_batches`` training batches, its CE <= the run's tau and, with ``train.feasible_tail``, its tail <=
the tail target, both from the run's ``feasible.json``), until no move is feasible. The weights are not touched.
Held-out data never decides; the end is then evaluated on the held-out split. Prints the path and a before/after
table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def trim(cfg, model_dir, tau: float, tail_tau: float | None, share: float | None, step: float = 0.5,
         held_out_batches: int | None = None, report=print) -> dict:
    """The greedy per-head bias search (module docstring): ``{"start", "end", "path", "bias"}``, start/end each
    ``{"train": ..., "validation": ...}`` evaluation records (:func:`sparsejax.train.evaluate.evaluate`; the
    held-out one on ``held_out_batches`` batches, default ``cfg.data.eval_batches``)."""
    import dataclasses

    from sparsejax.train.evaluate import checkpoint_evaluator

    if step <= 0:
        raise ValueError(f"--step must be > 0 (the logit each move raises a head's threshold by), got {step}")
    with checkpoint_evaluator(cfg, model_dir, "train") as (train, model):
        if model.gate is None:
            raise ValueError(f"{model_dir} has no gate (sparsejax_gate.json): a sparse model is needed")
        shape = (model.config.n_layers, model.config.n_heads)
        bias = np.array(np.broadcast_to(np.asarray(model.gate.bias, np.float32), shape))
        start = current = train(bias, tail=share)
        ok = lambda r: r["eval_ce"] <= tau and (tail_tau is None or r["tail_ce"] <= tail_tau)
        path = []
        while True:
            best = None
            for l, h in np.ndindex(*shape):
                b = bias.copy()
                b[l, h] -= step
                r = train(b, tail=share)
                gain = current["edge_density"] - r["edge_density"]
                if gain > 0 and ok(r):
                    score = gain / max(r["eval_ce"] - current["eval_ce"], 1e-9)
                    if best is None or score > best[0]:
                        best = (score, l, h, r)
            if best is None:
                break
            _, l, h, current = best
            bias[l, h] -= step
            path.append({"layer": int(l), "head": int(h), "bias": float(bias[l, h]), "train_ce": current["eval_ce"],
                         "train_tail_ce": current.get("tail_ce"), "train_edge_density": current["edge_density"]})
            report(f"  layer {l} head {h}: bias {bias[l, h]:+.2f}  training CE {current['eval_ce']:.5f}"
                   + ("" if share is None else f"  tail {current['tail_ce']:.4f}")
                   + f"  density {100 * current['edge_density']:.3f}%")
    if held_out_batches is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, eval_batches=held_out_batches))
    with checkpoint_evaluator(cfg, model_dir) as (held, _):
        before, after = held(np.asarray(model.gate.bias, np.float32)), held(bias)
    return {"start": {"train": start, "validation": before}, "end": {"train": current, "validation": after},
            "path": path, "bias": bias.tolist()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a post-training run directory (config.yaml, model/, feasible.json)")
    p.add_argument("--step", type=float, default=0.5, help="the logit a move lowers one head's gate bias by")
    p.add_argument("--held-out-batches", type=int, default=None,
                   help="held-out batches the start and end are evaluated on (default: the run's data.eval_batches)")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    from sparsejax.config import load_config

    run = Path(args.run)
    missing = [n for n in ("config.yaml", "model", "feasible.json") if not (run / n).exists()]
    if missing:
        raise SystemExit(f"{run} lacks {', '.join(missing)}: pass a post-training run made with train.final=feasible")
    feasible = json.loads((run / "feasible.json").read_text())
    cfg = load_config(run / "config.yaml", [f"model.checkpoint={run / 'model'}"])
    res = trim(cfg, run / "model", feasible["tau"], feasible.get("tail_tau"), feasible.get("tail_share"), args.step,
               args.held_out_batches)
    tau = feasible["tau"]
    print(f"| model | training CE (tau {tau:.5f}) | held-out CE | held-out - tau | held-out density | per layer |")
    print("|---|---:|---:|---:|---:|---|")
    for name in ("start", "end"):
        t, v = res[name]["train"], res[name]["validation"]
        layers = " / ".join(f"{100 * d:.2f}" for d in v["edge_density_per_layer"])
        print(f"| {name} | {t['eval_ce']:.5f} | {v['eval_ce']:.5f} | {v['eval_ce'] - tau:+.5f} | "
              f"{100 * v['edge_density']:.3f}% | {layers}% |")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
