"""The loss-sparsity frontier of the Shakespeare LM: post-train the same dense model at several targets and plot
held-out CE against edge density (log x), overall and per layer, with the dense point.

    python experiments/frontier.py --dense runs/shakespeare/dense --out runs/frontier \
        --density-targets 0.1 0.03 0.01 --steps 1000 [--runs runs/shakespeare/sparse ...]

Each density target is a run in density-target mode (minimise CE subject to density <= target, PI multiplier);
``--ce-slacks`` adds CE-target runs (minimise density subject to CE <= dense + slack). ``--runs`` adds finished
runs (e.g. the long CE-target run of experiments/shakespeare.py) as extra points. Writes ``frontier.png``,
``results.json`` and ``table.md`` into ``--out``; reruns skip points already in results.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

CE_PRESET_UNTIL_ROUND26 = (Path(__file__).parent.parent / "docs/results/presets"
                           / "shakespeare_posttrain_until_2026-12-07.yaml")


def point(run_dir: Path, label: str) -> dict:
    from sparsejax.train import RunDir

    final = RunDir(run_dir).records("final")[-1]
    cfg = RunDir(run_dir).config_text()
    return {"label": label, "run": str(run_dir), "eval_ce": final["eval_ce"], "edge_density": final["edge_density"],
            "edge_density_per_layer": final["edge_density_per_layer"], "steps": final["step"],
            "tau": final.get("tau"), "config": cfg}


def plot(results: dict, dense_ce: float, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pts = sorted(results["points"], key=lambda p: p["edge_density"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for steps in sorted({p["steps"] for p in pts}):  # one line per post-training length
        grp = [p for p in pts if p["steps"] == steps]
        ax.plot([p["edge_density"] for p in grp], [p["eval_ce"] for p in grp], "o-",
                label=f"sparse post-trained, {steps} steps (final models)")
    for p in pts:
        ax.annotate(p["label"], (p["edge_density"], p["eval_ce"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.scatter([1.0], [dense_ce], marker="*", s=160, color="black", zorder=3, label="dense")
    ax.axhline(dense_ce + 0.01, color="gray", ls="--", lw=1, label="dense + 0.01 (the CE target)")
    ax.set_xscale("log")
    ax.set_xlabel("edge density (share of causal pairs kept, log)")
    ax.set_ylabel("held-out CE (nats/token)")
    ax.set_title("loss-sparsity frontier, Shakespeare LM (4 layers, context 256)")
    ax.legend(fontsize=8)
    n_layers = len(pts[0]["edge_density_per_layer"])
    for l in range(n_layers):
        ax2.plot([p["edge_density"] for p in pts], [p["edge_density_per_layer"][l] for p in pts], "o-",
                 label=f"layer {l}")
    lim = [min(p["edge_density"] for p in pts) * 0.5, 1.0]
    ax2.plot(lim, lim, color="gray", lw=0.8, ls=":")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("overall edge density (log)")
    ax2.set_ylabel("layer edge density (log)")
    ax2.set_title("where the edges are kept, per layer")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def table(results: dict, dense_ce: float) -> str:
    lines = ["| point | steps | edge density | per layer | held-out CE | CE - dense |", "|---|---:|---:|---|---:|---:|",
             f"| dense | - | 1 | - | {dense_ce:.4f} | 0 |"]
    for p in sorted(results["points"], key=lambda p: -p["edge_density"]):
        per = ", ".join(f"{x:.4f}" for x in p["edge_density_per_layer"])
        lines.append(f"| {p['label']} | {p['steps']} | {p['edge_density']:.4f} | {per} | {p['eval_ce']:.4f} | "
                     f"{p['eval_ce'] - dense_ce:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dense", default="runs/shakespeare/dense")
    p.add_argument("--out", default="runs/frontier")
    p.add_argument("--density-targets", type=float, nargs="*", default=[0.1, 0.03, 0.01])
    p.add_argument("--ce-slacks", type=float, nargs="*", default=[])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--runs", nargs="*", default=[], help="finished runs to add as points")
    p.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    args = p.parse_args(argv)
    from sparsejax.config import load_config
    from sparsejax.files import atomic_write_text
    from sparsejax.train import RunDir, Trainer
    from sparsejax.train.evaluate import evaluate_checkpoint

    dense, out = Path(args.dense), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {"points": []}
    base = [f"model.checkpoint={RunDir(dense).model}", f"data.tokenizer={RunDir(dense).tokenizer}",
            f"train.steps={args.steps}", *args.set]
    if "dense_ce" not in results:
        results["dense_ce"] = evaluate_checkpoint(load_config("shakespeare_posttrain_density", base),
                                                  RunDir(dense).model)["eval_ce"]
    done = {q["label"] for q in results["points"]}
    # each mode's preset: density targets, then CE targets (dense + slack)
    todo = [(f"density<={d:g}", "shakespeare_posttrain_density", [f"constraint.density_target={d}"], f"d{d:g}")
            for d in args.density_targets]
    # the CE preset as these points were measured (until the twenty-sixth round: a fixed target, the dense CE on
    # training batches + the slack, the noise drawn per head)
    todo += [(f"CE<=dense+{s:g}", str(CE_PRESET_UNTIL_ROUND26), [f"constraint.slack={s}"], f"ce{s:g}")
             for s in args.ce_slacks]
    for label, preset, over, name in todo:
        if label in done:
            continue
        Trainer(load_config(preset, base + over), out / name, progress=False).fit()
        results["points"].append(point(out / name, label))
        atomic_write_text(res_path, json.dumps(results, indent=1))
        print(label, {k: v for k, v in results["points"][-1].items() if k != "config"}, flush=True)
    for run in args.runs:
        label = f"{Path(run).parent.name}/{Path(run).name}"
        results["points"] = [q for q in results["points"] if q["label"] != label] + [point(Path(run), label)]
    atomic_write_text(res_path, json.dumps(results, indent=1))
    plot(results, results["dense_ce"], out / "frontier.png")
    atomic_write_text(out / "table.md", table(results, results["dense_ce"]))
    print(table(results, results["dense_ce"]))


if __name__ == "__main__":
    main()
