"""Held-out edge density and CE - target against step for post-training runs (docs/controllers.md's figure).

    python experiments/toy_curves.py --out docs/figures/toy_density_cliff.png RUN_DIR[=LABEL] ...
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparsejax.report import read_metrics  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (metrics.jsonl), optionally DIR=label")
    p.add_argument("--out", required=True)
    p.add_argument("--tau", type=float, help="the CE target for runs that have none (density-target mode)")
    args = p.parse_args(argv)
    fig, (ax_d, ax_c) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for spec in args.runs:
        path, _, label = spec.partition("=")
        train, evals = read_metrics(Path(path) / "metrics.jsonl")
        target = next((r["tau"] for r in train if "tau" in r), args.tau)
        if target is None:
            raise SystemExit(f"{path} has no CE target (density-target run): pass --tau")
        evals = [r for r in evals if "eval_ce" in r and "edge_density" in r]
        steps = [r["step"] for r in evals]
        line, = ax_d.plot(steps, [r["edge_density"] for r in evals], label=label or path)
        ax_c.plot(steps, [r["eval_ce"] - target for r in evals], color=line.get_color())
    ax_d.set_yscale("log")
    ax_d.axhline(0.025, color="gray", ls=":", label="goal 2.5%")
    ax_d.set_ylabel("held-out edge density")
    ax_d.legend(fontsize=7)
    ax_c.axhline(0.0, color="gray", ls=":")
    ax_c.set_ylabel("held-out CE - tau")
    ax_c.set_xlabel("post-training step")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
