"""How far does the CE gap a post-training watches carry to the held-out split? For each run (a folder with
``model/`` and ``control_model/``, ``constraint.tau_data=control`` with ``data.aside``), the gap of the sparse model
to its dense control, paired batch by batch, on the whole validation split and on the whole held-aside set (the rows
the multiplier's gap was measured on): each mean with its standard error over batches, and their difference with its
standard error (the two sets are disjoint, so the errors add in quadrature). A difference several standard errors
wide is not sampling noise: the gap on one stretch of text does not carry to another. ``--pair`` compares any two
model folders the same way (two dense controls: how far two models that differ only in their training seed scatter
from one set to the other). Issue J, twenty-seventh round
in docs/controllers.md.

    python experiments/region_gap.py RUN [RUN ...] [--pair CONFIG MODEL REFERENCE] [--json out.json] [--figure f.png]
    python experiments/region_gap.py --from-json out.json --figure f.png [--labels NAME ...]
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


def figure(rows: list[dict], path: str, goal: float = 0.01) -> None:
    """Each row's gap on the held-aside rows and on the validation split (with one standard error), joined by a
    line; the goal's margin over the control dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(rows) + 1.6))
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        a, v = r["aside"], r["validation"]
        ax.plot([a["gap"], v["gap"]], [y, y], color="0.6", zorder=1)
        ax.errorbar(a["gap"], y, xerr=a["se"], fmt="o", color="tab:blue", label="held-aside rows" if i == 0 else None)
        ax.errorbar(v["gap"], y, xerr=v["se"], fmt="s", color="tab:red", label="validation split" if i == 0 else None)
    ax.axvline(goal, ls="--", color="k", lw=1, label=f"goal: control + {goal}")
    ax.axvline(0, color="0.8", lw=1, zorder=0)
    ax.set_yticks(range(len(rows)), [r.get("label", r["run"]) for r in rows][::-1], fontsize=8)
    ax.set_xlabel("CE gap to the reference (nats; ± one standard error over batches)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="run folders (model/, control_model/, config.yaml with data.aside)")
    p.add_argument("--pair", nargs=3, action="append", default=[], metavar=("CONFIG", "MODEL", "REFERENCE"),
                   help="also two model folders against each other on CONFIG's data (e.g. two dense controls: the "
                   "scatter of the gap between two models neither of which is sparse)")
    p.add_argument("--batches", type=int, default=10**6, help="at most this many batches of each set (default: all)")
    p.add_argument("--json", help="also write the rows (per-batch gaps included) to this file")
    p.add_argument("--from-json", help="read the rows from a file --json wrote instead of evaluating (no RUN)")
    p.add_argument("--labels", nargs="+", help="names of the rows in the figure, in order")
    p.add_argument("--figure", help="also draw each row's two gaps to this file (PNG)")
    args = p.parse_args(argv)
    if not (args.runs or args.pair or args.from_json):
        p.error("nothing to compare: give RUN folders, --pair CONFIG MODEL REFERENCE or --from-json FILE")
    if args.from_json and (args.runs or args.pair):
        p.error("--from-json reads the rows from a file: give no RUN and no --pair with it")
    rows = json.loads(Path(args.from_json).read_text()) if args.from_json else table(args.runs, args.batches, args.pair)
    if args.labels:
        if len(args.labels) != len(rows):
            p.error(f"--labels names {len(args.labels)} rows, there are {len(rows)}")
        for r, label in zip(rows, args.labels):
            r["label"] = label
    print("| run | gap on the validation split | gap on the held-aside rows | difference | difference / its SE |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        v, a = r["validation"], r["aside"]
        print(f"| {r['run']} | {v['gap']:+.4f} ± {v['se']:.4f} ({v['batches']} batches) | {a['gap']:+.4f} ± "
              f"{a['se']:.4f} ({a['batches']} batches) | {r['difference']:+.4f} ± {r['difference_se']:.4f} | "
              f"{r['difference'] / r['difference_se']:+.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.figure:
        figure(rows, args.figure)


if __name__ == "__main__":
    main()
