"""Where a sparse model's loss gap sits, layer by layer: the held-out CE with one layer's gates opened at a time.

    python experiments/layer_gap.py CONFIG MODEL_DIR [--set key=value ...] [--heads] [--out gap.json]

For each layer ``l`` the saved sparse model is evaluated with layer ``l``'s gate bias raised so high that every
causal edge of that layer is kept (its attention = the dense model's), the other layers as trained; ``gain_l`` =
CE(sparse) - CE(layer l opened). Positive: that layer's sparsity costs loss, given the others; negative: the
weights rely on the sparse pattern (co-adapted), so reopening is no counterfactual for its cost. One compilation
for all variants (the bias is data). Also prints the CE with every gate opened (the same weights, dense attention).

``--heads``: also, for each head, the held-out CE with that head's gates all closed (its bias far below any logit:
the head writes nothing, as if its rows of W_O were zero) and ``cost`` = CE(that head closed) - CE(sparse): which
heads the loss needs, and what a head's edges buy (issue J, thirtieth round: the induction LM's broad layer-0 heads).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def layer_gap(cfg, model_dir, heads: bool = False) -> dict:
    from sparsejax.train.evaluate import checkpoint_evaluator

    with checkpoint_evaluator(cfg, model_dir) as (run, model):
        if model.gate is None:
            raise ValueError(f"{model_dir} has no gate (sparsejax_gate.json): a sparse model is needed")
        bias = np.asarray(model.gate.bias, np.float32)
        bias = np.broadcast_to(bias, (model.config.n_layers, model.config.n_heads)) if bias.ndim < 2 else bias
        base = run(bias)
        rows = []
        for l in range(bias.shape[0]):
            opened = bias.copy()
            opened[l] = 1e4  # far above any attention logit: every edge of layer l kept
            r = run(opened)
            rows.append({"layer": l, "density": base["edge_density_per_layer"][l], "eval_ce": r["eval_ce"],
                         "gain": base["eval_ce"] - r["eval_ce"]})
        every = run(np.full_like(bias, 1e4))
        closed = []
        for l, h in np.ndindex(*bias.shape) if heads else ():
            shut = bias.copy()
            shut[l, h] = -1e4  # far below any attention logit: no edge of head (l, h) kept
            r = run(shut)
            closed.append({"layer": int(l), "head": int(h), "density": base["edge_density_per_head"][l][h],
                           "eval_ce": r["eval_ce"], "cost": r["eval_ce"] - base["eval_ce"]})
    return {"eval_ce": base["eval_ce"], "edge_density": base["edge_density"], "all_opened_eval_ce": every["eval_ce"],
            "layers": rows, **({"heads": closed} if heads else {})}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="the run's config.yaml (its validation data is used)")
    p.add_argument("model", help="the sparse model's directory (config.json, weights, sparsejax_gate.json)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. data.eval_batches=16")
    p.add_argument("--heads", action="store_true", help="also close each head in turn (its cost in CE)")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    from sparsejax.config import load_config

    cfg = load_config(args.config, [f"model.checkpoint={args.model}", *args.set])
    res = layer_gap(cfg, Path(args.model), heads=args.heads)
    print(f"sparse: CE {res['eval_ce']:.4f} at {100 * res['edge_density']:.2f}% of edges; every gate opened: CE "
          f"{res['all_opened_eval_ce']:.4f} (gap {res['eval_ce'] - res['all_opened_eval_ce']:+.4f})")
    print("| layer | edge density | CE, this layer opened | gain |\n|---:|---:|---:|---:|")
    for r in res["layers"]:
        print(f"| {r['layer']} | {100 * r['density']:.2f}% | {r['eval_ce']:.4f} | {r['gain']:+.4f} |")
    if args.heads:
        print("\n| layer | head | edge density | CE, this head closed | cost |\n|---:|---:|---:|---:|---:|")
        for r in res["heads"]:
            print(f"| {r['layer']} | {r['head']} | {100 * r['density']:.2f}% | {r['eval_ce']:.4f} | {r['cost']:+.4f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
