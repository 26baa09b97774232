"""Held-out edge density and CE - target against step for post-training runs (docs/controllers.md's figures).

    python experiments/toy_curves.py --out docs/figures/toy_density_cliff.png RUN_DIR[=LABEL] ...
    python experiments/toy_curves.py --target 3.6456 --goal 0.01 --beta --out fig.png RUN_A=a RUN_B=b

The CE target is each run's own ``tau`` unless ``--target`` gives one for every run (e.g. the dense model's
held-out CE + slack, when the runs measured tau on training batches); ``--tau`` is the target only for runs
that have none (density-target mode). ``--beta`` adds a panel with the multiplier of each training step,
``--bias`` one with the largest learnt gate bias (``gate_bias_max``; issue J, seventeenth round: its runaway).

    python experiments/toy_curves.py --bias --out docs/figures/toy_gate_bias_runaway.png RUN_A=a RUN_B=b
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparsejax.report import read_metrics  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (metrics.jsonl), optionally DIR=label")
    p.add_argument("--out", required=True)
    p.add_argument("--tau", type=float, help="the CE target for runs that have none (density-target mode)")
    p.add_argument("--target", type=float, help="the CE target for every run (overrides each run's tau)")
    p.add_argument("--goal", type=float, default=0.025, help="density goal line (0: none; default 0.025)")
    p.add_argument("--beta", action="store_true", help="add a panel with the multiplier beta (log)")
    p.add_argument("--bias", action="store_true", help="add a panel with the largest learnt gate bias")
    args = p.parse_args(argv)
    panels = 2 + args.beta + args.bias
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3 + 2.75 * (panels - 1)), sharex=True)
    ax_d, ax_c = axes[0], axes[-1]
    for spec in args.runs:
        path, _, label = spec.partition("=")
        train, evals = read_metrics(path)  # a run folder (report.read_metrics reads it through RunDir)
        target = args.target if args.target is not None else next((r["tau"] for r in train if "tau" in r), args.tau)
        if target is None:
            raise SystemExit(f"{path} has no CE target (density-target run): pass --tau or --target")
        evals = [r for r in evals if "eval_ce" in r and "edge_density" in r]
        steps = [r["step"] for r in evals]
        line, = ax_d.plot(steps, [r["edge_density"] for r in evals], "o-", ms=3, label=label or path)
        ax_c.plot(steps, [r["eval_ce"] - target for r in evals], "o-", ms=3, color=line.get_color())
        if args.beta:
            beta = [r for r in train if "beta" in r]
            if not beta:
                raise SystemExit(f"{path} logs no multiplier beta: drop --beta")
            axes[1].semilogy([r["step"] for r in beta], [r["beta"] for r in beta], lw=0.8, color=line.get_color())
        if args.bias:
            bias = [r for r in train if "gate_bias_max" in r]
            if not bias:
                raise SystemExit(f"{path} logs no gate_bias_max (no learnt gate bias, or a run before it was logged): "
                                 f"drop --bias")
            axes[1 + args.beta].plot([r["step"] for r in bias], [r["gate_bias_max"] for r in bias], lw=0.8,
                                     color=line.get_color())
    ax_d.set_yscale("log")
    if args.goal:
        ax_d.axhline(args.goal, color="gray", ls=":", label=f"goal {100 * args.goal:g}%")
    ax_d.set_ylabel("held-out edge density")
    ax_d.legend(fontsize=7)
    if args.beta:
        axes[1].set_ylabel("multiplier beta (log)")
    if args.bias:
        axes[1 + args.beta].set_ylabel("largest learnt gate bias")
    ax_c.axhline(0.0, color="gray", ls=":")
    ax_c.set_ylabel("held-out CE - target" if args.target is not None else "held-out CE - tau")
    ax_c.set_xlabel("post-training step")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
