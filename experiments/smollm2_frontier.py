"""The SmolLM2-135M loss-sparsity frontier (issue I): final models of the same LoRA recipe at several density
targets, held-out CE (``sparsejax eval ... data.eval_batches=64``) against edge density (log x), each run's
evaluation trajectory (8 batches, every 50 steps) drawn to its final point, and the dense control.

    python experiments/smollm2_frontier.py --runs runs/smollm2/lora_t03 runs/smollm2/lora_t01 runs/smollm2/lora_d01 \
        --control runs/smollm2/lora_dense_control --out docs/figures/smollm2_frontier.png

Each run directory needs ``eval64.json`` (the 64-batch evaluation of its final ``model/``: the JSON that
``sparsejax eval`` prints) and ``metrics.jsonl``; the control needs ``eval64.json``. Prints the table.

Runs of different recipes, each against its own dense control (the gap to the control on the y axis):

    python experiments/smollm2_frontier.py --gap docs/results/smollm2/long_d008=docs/results/smollm2/long_control \
        docs/results/smollm2/ff_d008=docs/results/smollm2/ff_control --out docs/figures/smollm2_gap.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+")
    p.add_argument("--control")
    p.add_argument("--gap", nargs="+", metavar="RUN=CONTROL", help="final models against their own controls")
    p.add_argument("--out", default="smollm2_frontier.png")
    args = p.parse_args(argv)
    if args.gap:
        return gap_figure([pair.split("=", 1) for pair in args.gap], args.out)
    if not (args.runs and args.control):
        p.error("give --runs and --control (one recipe), or --gap RUN=CONTROL ... (each run against its control)")
    from sparsejax.train import RunDir

    control = json.loads((Path(args.control) / "eval64.json").read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    print("| density target | final edge density | per layer (max) | held-out CE (64 batches) | - dense control |")
    print("|---:|---:|---:|---:|---:|")
    for run in map(Path, args.runs):
        final = json.loads((run / "eval64.json").read_text())
        recs = RunDir(run).records("eval")
        target = RunDir(run).config_dict()["constraint"]["density_target"]
        line, = ax.plot([r["edge_density"] for r in recs], [r["eval_ce"] for r in recs], "-", alpha=0.35, lw=1)
        ax.plot(final["edge_density"], final["eval_ce"], "o", color=line.get_color(), ms=8,
                label=f"target {target:g}: {100 * final['edge_density']:.2f}%, CE {final['eval_ce']:.3f}")
        worst = max(final["edge_density_per_layer"])
        print(f"| {target:g} | {100 * final['edge_density']:.2f}% | {100 * worst:.1f}% | {final['eval_ce']:.3f} | "
              f"{final['eval_ce'] - control['eval_ce']:+.3f} |")
    ax.axhline(control["eval_ce"], color="k", ls="--", lw=1, label=f"dense control {control['eval_ce']:.3f}")
    ax.axhline(control["eval_ce"] + 0.01, color="tab:green", ls=":", lw=1, label="goal: control + 0.01")
    ax.axvline(0.01, color="tab:green", ls=":", lw=1)
    _finish(fig, ax, "held-out CE (nats)", "SmolLM2-135M, LoRA r16, 500 steps: final models (dots), trajectories "
            "(lines)", args.out)


def _finish(fig, ax, ylabel, title, out):
    ax.set_xscale("log")
    ax.set_xlabel("edge density (share of causal pairs kept, log)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    print("wrote", out)


def gap_figure(pairs, out):
    """Each run's final model (dot) and evaluation trajectory (line) as held-out CE minus its own dense control's
    final CE, against edge density (log x); the goal's box is drawn. Prints the table."""
    from sparsejax.train import RunDir

    fig, ax = plt.subplots(figsize=(7, 4.5))
    print("| run | steps | final edge density | densest layer | held-out CE (64 batches) | its control | gap |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run, control_dir in pairs:
        if "=" in control_dir or not (Path(run) / "eval64.json").exists():
            raise SystemExit(f"--gap takes RUN=CONTROL, each a run folder with eval64.json; got {run}={control_dir}")
        final = json.loads((Path(run) / "eval64.json").read_text())
        control = json.loads((Path(control_dir) / "eval64.json").read_text())["eval_ce"]
        recs = RunDir(run).records("eval")
        steps = RunDir(run).config_dict()["train"]["steps"]
        # the trajectory against the control's evaluation at the same step when the two share a schedule, else
        # against its final CE
        same = RunDir(control_dir).config_dict()["train"]["steps"] == steps
        at = {r["step"]: r["eval_ce"] for r in RunDir(control_dir).records("eval")} if same else {}
        line, = ax.plot([r["edge_density"] for r in recs], [r["eval_ce"] - at.get(r["step"], control) for r in recs],
                        "-", alpha=0.35, lw=1)
        gap = final["eval_ce"] - control
        worst = max(final["edge_density_per_layer"])
        ax.plot(final["edge_density"], gap, "o", color=line.get_color(), ms=8,
                label=f"{Path(run).name}: {100 * final['edge_density']:.2f}%, {gap:+.3f} nats")
        print(f"| {Path(run).name} | {steps} | {100 * final['edge_density']:.3f}% | {100 * worst:.2f}% | "
              f"{final['eval_ce']:.3f} | {control:.3f} ({Path(control_dir).name}) | {gap:+.3f} |")
    ax.axhline(0.0, color="k", ls="--", lw=1, label="the run's dense control")
    ax.fill_between([1e-4, 0.01], -0.05, 0.01, color="tab:green", alpha=0.15, lw=0,
                    label="goal: <= 1% of edges at <= control + 0.01")
    _finish(fig, ax, "held-out CE - its dense control's (nats)", "SmolLM2-135M sparse post-training: final models "
            "(dots; 64 held-out batches),\ntrajectories (lines; 8 batches, against the control at the same step, or its "
            "final CE)", out)


if __name__ == "__main__":
    main()
