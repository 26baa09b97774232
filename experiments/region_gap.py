"""How far does the CE gap a post-training watches carry to the held-out split? For each run (a folder with
``model/`` and ``control_model/``, ``constraint.tau_data=control`` with ``data.aside``), the gap of the sparse model
to its dense control, paired batch by batch, on the whole validation split and on the whole held-aside set (the rows
the multiplier's gap was measured on): each mean with its standard error over batches, and their difference with its
standard error (the two sets are disjoint, so the errors add in quadrature). A difference several standard errors
wide is not sampling noise: the gap on one stretch of text does not carry to another. Issue J, twenty-seventh round
in docs/controllers.md.

    python experiments/region_gap.py RUN [RUN ...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def paired_gap(run: Path, split: str, batches: int) -> dict:
    """The per-batch CE gap (sparse model − control) of ``run`` on ``split``: mean, standard error, batches."""
    from sparsejax.config import load_config
    from sparsejax.train.evaluate import evaluate_checkpoint

    cfg = load_config(run / "config.yaml", [f"data.eval_batches={batches}"])
    ce = {m: np.asarray(evaluate_checkpoint(cfg, run / m, split, per_batch=True)["eval_ce_per_batch"])
          for m in ("model", "control_model")}
    gap = ce["model"] - ce["control_model"]
    return {"gap": float(gap.mean()), "se": float(gap.std(ddof=1) / math.sqrt(gap.size)), "batches": int(gap.size),
            "per_batch": gap.tolist()}


def table(runs: list[str], batches: int) -> list[dict]:
    rows = []
    for run in runs:
        run = Path(run)
        for m in ("model", "control_model"):
            if not (run / m).is_dir():
                raise FileNotFoundError(f"{run / m} is missing: a run of constraint.tau_data=control exports its "
                                        "final model and its dense control there")
        val, aside = paired_gap(run, "validation", batches), paired_gap(run, "aside", batches)
        rows.append({"run": str(run), "validation": val, "aside": aside, "difference": val["gap"] - aside["gap"],
                     "difference_se": math.hypot(val["se"], aside["se"])})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (model/, control_model/, config.yaml with data.aside)")
    p.add_argument("--batches", type=int, default=10**6, help="at most this many batches of each set (default: all)")
    p.add_argument("--json", help="also write the rows (per-batch gaps included) to this file")
    args = p.parse_args(argv)
    rows = table(args.runs, args.batches)
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
