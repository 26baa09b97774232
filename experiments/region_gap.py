"""How far does the CE gap a post-training watches carry to the held-out split? For each run (a folder with
``model/`` and ``control_model/``, ``constraint.tau_data=control`` with ``data.aside``), the gap of the sparse model
to its dense control, paired batch by batch, on the whole validation split and on the whole held-aside set (the rows
the multiplier's gap was measured on): each mean with its standard error over batches, and their difference with its
standard error (the two sets are disjoint, so the errors add in quadrature). A difference several standard errors
wide is not sampling noise: the gap on one stretch of text does not carry to another. ``--pair`` compares any two
model folders the same way (two dense controls: how far two models that differ only in their training seed scatter
from one set to the other). Issue J, twenty-seventh round
in docs/controllers.md.

    python experiments/region_gap.py RUN [RUN ...] [--pair CONFIG MODEL REFERENCE] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def paired_gap(config: Path, model: Path, reference: Path, split: str, batches: int) -> dict:
    """The per-batch CE gap (``model`` − ``reference``) on ``split`` of ``config``'s data: mean, standard error,
    batches."""
    from sparsejax.config import load_config
    from sparsejax.train.evaluate import evaluate_checkpoint

    cfg = load_config(config, [f"data.eval_batches={batches}"])
    ce = [np.asarray(evaluate_checkpoint(cfg, m, split, per_batch=True)["eval_ce_per_batch"]) for m in (model, reference)]
    gap = ce[0] - ce[1]
    return {"gap": float(gap.mean()), "se": float(gap.std(ddof=1) / math.sqrt(gap.size)), "batches": int(gap.size),
            "per_batch": gap.tolist()}


def table(runs: list[str], batches: int, pairs: list[tuple[str, str, str]] = ()) -> list[dict]:
    """One row per run (its ``model/`` against its ``control_model/``) and per ``(config, model, reference)``."""
    jobs = []
    for run in map(Path, runs):
        for m in ("model", "control_model"):
            if not (run / m).is_dir():
                raise FileNotFoundError(f"{run / m} is missing: a run of constraint.tau_data=control exports its "
                                        "final model and its dense control there")
        jobs.append((str(run), run / "config.yaml", run / "model", run / "control_model"))
    for config, model, reference in pairs:
        for m in (model, reference):
            if not Path(m).is_dir():
                raise FileNotFoundError(f"{m} is not a model folder")
        jobs.append((f"{model} − {reference}", Path(config), Path(model), Path(reference)))
    rows = []
    for name, config, model, reference in jobs:
        val, aside = (paired_gap(config, model, reference, split, batches) for split in ("validation", "aside"))
        rows.append({"run": name, "validation": val, "aside": aside, "difference": val["gap"] - aside["gap"],
                     "difference_se": math.hypot(val["se"], aside["se"])})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="run folders (model/, control_model/, config.yaml with data.aside)")
    p.add_argument("--pair", nargs=3, action="append", default=[], metavar=("CONFIG", "MODEL", "REFERENCE"),
                   help="also two model folders against each other on CONFIG's data (e.g. two dense controls: the "
                   "scatter of the gap between two models neither of which is sparse)")
    p.add_argument("--batches", type=int, default=10**6, help="at most this many batches of each set (default: all)")
    p.add_argument("--json", help="also write the rows (per-batch gaps included) to this file")
    args = p.parse_args(argv)
    rows = table(args.runs, args.batches, args.pair)
    print("| run | gap on the validation split | gap on the held-aside rows | difference | difference / its SE |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        v, a = r["validation"], r["aside"]
        print(f"| {r['run']} | {v['gap']:+.4f} ± {v['se']:.4f} ({v['batches']} batches) | {a['gap']:+.4f} ± "
              f"{a['se']:.4f} ({a['batches']} batches) | {r['difference']:+.4f} ± {r['difference_se']:.4f} | "
              f"{r['difference'] / r['difference_se']:+.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
