"""The SmolLM2-135M loss-sparsity frontier (issue I): final models of the same LoRA recipe at several density
targets, held-out CE (``sparsejax eval ... data.eval_batches=64``) against edge density (log x), each run's
evaluation trajectory (8 batches, every 50 steps) drawn to its final point, and the dense control.

    python experiments/smollm2_frontier.py --runs runs/smollm2/lora_t03 runs/smollm2/lora_t01 runs/smollm2/lora_d01 \
        --control runs/smollm2/lora_dense_control --out docs/figures/smollm2_frontier.png

Each run directory needs ``eval64.json`` (the 64-batch evaluation of its final ``model/``: the JSON that
``sparsejax eval`` prints) and ``metrics.jsonl``; the control needs ``eval64.json``. Prints the table.
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
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--out", default="smollm2_frontier.png")
    args = p.parse_args(argv)
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
    ax.set_xscale("log")
    ax.set_xlabel("edge density (share of causal pairs kept, log)")
    ax.set_ylabel("held-out CE (nats)")
    ax.set_title("SmolLM2-135M, LoRA r16, 500 steps: final models (dots), trajectories (lines)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
