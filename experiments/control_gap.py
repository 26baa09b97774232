"""How far a small LM is from the goal: each run's final edge density against its held-out CE minus that of the
dense control trained beside it on the same schedule (``constraint.tau_data=control`` records ``control_eval_ce`` at
every evaluation), from the records of docs/results/zoo_induction/evals.json (issue J, sixteenth round).

    python experiments/control_gap.py docs/results/zoo_induction/evals.json --against density=control ce=control \
        ce_batch=control --figure docs/figures/induction_lm_control_gap.png
    python experiments/control_gap.py RECORDS --add NAME RUN_DIR     # add a finished run's records under NAME first
    python experiments/control_gap.py RECORDS --add NAME RUN_DIR CONTROL_DIR   # ... with a dense control run separately
        # on the run's schedule (gate off: `sparsejax pretrain RUN_DIR/config.yaml CONTROL_DIR gate.enabled=false ...`)
    python experiments/control_gap.py docs/results/zoo_shakespeare_d1/evals.json --runs density_control density_noise \
        --curves docs/figures/shakespeare_d1_control_gap_curves.png --title "Shakespeare LM, dense seed 1"
        # the gap at every evaluation of runs with the control beside them (twentieth round)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

TRAIN_KEYS = ("ce", "control_ce", "measured_ce", "ce_ema", "guard_ema", "density_target", "target_progress", "beta",
              "train_edge_density")


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def records(run_dir: str, control_dir: str | None = None) -> dict:
    """A run's config, every evaluation and every 100th training record (the keys above that it logged); and where
    the run directory holds ``eval64_model.json`` and ``eval64_control_model.json`` (``sparsejax eval
    RUN/config.yaml RUN/model data.eval_batches=64 > RUN/eval64_model.json``, the same for ``control_model``), the
    final model and its control on those 64 held-out batches as ``final_eval_64_batches``.

    ``control_dir``: a dense control run separately on the run's schedule (``sparsejax pretrain RUN/config.yaml
    CONTROL gate.enabled=false ...``: the same data order, lr and steps). Its held-out CE becomes the run's
    ``control_eval_ce`` at the steps both evaluated (the same held-out batches), and its
    ``CONTROL/eval64_model.json`` the control side of ``final_eval_64_batches``; the record names it (``control``)."""
    import yaml

    run = Path(run_dir)
    control_ce = {}
    if control_dir is not None:
        control_ce = {r["step"]: r["eval_ce"] for r in _rows(Path(control_dir)) if "eval_ce" in r}
        if not control_ce:
            raise SystemExit(f"{control_dir}/metrics.jsonl has no evaluation (eval_ce): is it the control's run?")
    rows, evals = _rows(run), []
    for r in rows:
        if "eval_ce" in r:
            e = {k: r[k] for k in ("step", "eval_ce", "edge_density", "edge_density_per_layer", "control_eval_ce",
                                   "tau", "final") if k in r}
            if r["step"] in control_ce:
                e["control_eval_ce"] = control_ce[r["step"]]
            evals.append(e)
    train = [{"step": r["step"], **{k: r[k] for k in TRAIN_KEYS if k in r}} for r in rows
             if "ce" in r and "eval_ce" not in r and r["step"] % 100 == 0]
    out = {"config": yaml.safe_load((run / "config.yaml").read_text()), "evals": evals, "train": train}
    if control_dir is not None:
        out["control"] = str(control_dir)
    model = run / "eval64_model.json"
    control = run / "eval64_control_model.json" if control_dir is None else Path(control_dir) / "eval64_model.json"
    if model.exists() and control.exists():
        m, c = json.loads(model.read_text()), json.loads(control.read_text())
        ctrl = f"{run}/control_model" if control_dir is None else f"{control_dir}/model"
        out["final_eval_64_batches"] = {**{k: m[k] for k in ("eval_ce", "edge_density", "edge_density_per_layer")},
                                        "control_eval_ce": c["eval_ce"],
                                        "command": f"sparsejax eval {run}/config.yaml {run}/model|{ctrl} "
                                                   "data.eval_batches=64"}
    return out


def points(recs: dict, against: dict | None = None) -> list[tuple[str, float, float, int]]:
    """``(name, final density, final gap to the control, steps)`` for every record with a control beside it, and for
    each ``against[name]``: the final held-out CE of that separate dense run (on the same schedule) as its control."""
    out = []
    for name, rec in recs.items():
        final = rec["evals"][-1]
        control = final.get("control_eval_ce")
        if name in (against or {}):
            control = recs[against[name]]["evals"][-1]["eval_ce"]
        if control is not None:
            out.append((name, final["edge_density"], final["eval_ce"] - control, final["step"]))
    return sorted(out, key=lambda p: p[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", help="a JSON file of {name: {config, evals, train}}")
    p.add_argument("--add", nargs="+", action="append", metavar="NAME RUN_DIR [CONTROL_DIR]", default=[],
                   help="add (or replace) a finished run's records (CONTROL_DIR: its dense control, run separately)")
    p.add_argument("--against", nargs="*", default=[], metavar="RUN=CONTROL",
                   help="runs measured against a separate dense control record (e.g. density=control)")
    p.add_argument("--figure", help="write the density-gap figure here (PNG)")
    p.add_argument("--runs", nargs="*", help="only these records (default: all)")
    p.add_argument("--curves", help="write the gap to the control beside each run at every evaluation here (PNG)")
    p.add_argument("--title", default="induction LM", help="the model's name in the figures' titles")
    p.add_argument("--ymax", type=float, default=0.1, help="the top of the curves' gap axis (nats)")
    args = p.parse_args(argv)
    path = Path(args.records)
    if not path.exists() and not args.add:
        p.error(f"{path}: no such records file (--add NAME RUN_DIR starts one)")
    text = path.read_text() if path.exists() else ""  # a new file: one space per level, a final newline
    recs = json.loads(text) if text else {}
    for add in args.add:
        if len(add) not in (2, 3):
            p.error(f"--add {' '.join(add)}: give NAME RUN_DIR, or NAME RUN_DIR CONTROL_DIR")
        recs[add[0]] = records(*add[1:])
    if args.add:  # the file's own layout kept (one space per level, or none), so a new record is the whole diff
        indent = 1 if not text or text.startswith("{\n ") else 0 if text.startswith("{\n") else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(recs, indent=indent) + ("\n" if not text or text.endswith("\n") else ""))
    if args.runs:
        missing = [n for n in args.runs if n not in recs]
        if missing:
            p.error(f"--runs: no record {missing} in {path} (it has {sorted(recs)})")
        recs = {n: recs[n] for n in args.runs}
    pts = points(recs, dict(a.split("=", 1) for a in args.against))
    print("| run | steps | final edge density | held-out CE − control | on 64 batches: density, CE − control |\n"
          "|---|---:|---:|---:|---:|")
    for name, density, gap, steps in pts:
        f64 = recs[name].get("final_eval_64_batches", {})
        on64 = (f"{f64['edge_density']:.3%}, {f64['eval_ce'] - f64['control_eval_ce']:+.4f}"
                if {"edge_density", "eval_ce", "control_eval_ce"} <= f64.keys() else "-")
        print(f"| {name} | {steps} | {density:.2%} | {gap:+.3f} | {on64} |")
    if args.figure:
        draw(pts, args.figure, args.title)
    if args.curves:
        if not gap_curves(recs):
            p.error("--curves: no record has a dense control beside it (control_eval_ce: a run with "
                    "constraint.tau_data=control)")
        draw_curves(recs, args.curves, args.title, args.ymax)


def gap_curves(recs: dict) -> dict:
    """``{name: [(step, edge density, held-out CE - control's)]}`` for the records with the control beside them."""
    return {name: [(e["step"], e["edge_density"], e["eval_ce"] - e["control_eval_ce"]) for e in rec["evals"]
                   if "control_eval_ce" in e] for name, rec in recs.items()
            if any("control_eval_ce" in e for e in rec["evals"])}


def draw_curves(recs: dict, path: str, title: str, ymax: float = 0.1) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True)
    for name, rows in gap_curves(recs).items():
        steps, density, gap = zip(*rows)
        top.plot(steps, gap, marker="o", ms=3, label=name)
        bottom.plot(steps, [100 * d for d in density], marker="o", ms=3, label=name)
    top.axhline(0.01, color="k", lw=0.8, ls="--", label="goal: control + 0.01")
    top.set_ylabel("held-out CE − control's (nats)")
    top.set_ylim(-0.02, ymax)
    top.legend(fontsize=7)
    top.set_title(f"{title}: each run against a dense control on its schedule", fontsize=9)
    bottom.axhline(1.0, color="k", lw=0.8, ls="--")
    bottom.set_ylabel("edge density (held out, %)")
    if max(d for rows in gap_curves(recs).values() for _, d, _ in rows) > 0.02:  # a run far above the goal: log
        bottom.set_yscale("log")
    else:
        bottom.set_ylim(0, 2)
    bottom.set_xlabel("step")
    fig.savefig(path, dpi=130, bbox_inches="tight")
    print(f"wrote {path}")


def draw(pts, path: str, title: str = "induction LM") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    low = min(-0.03, min(p[2] for p in pts) - 0.01)
    ax.fill_between([0.004, 0.01], low, 0.01, color="0.85", zorder=0, label="the goal: <= 1% at <= control + 0.01")
    for name, density, gap, steps in pts:
        ax.scatter(density, gap, color="C0" if steps <= 2400 else "C3", zorder=3)
        ax.annotate(f"{name} ({steps})", (density, gap), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.axhline(0.01, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlim(0.004, 1.0)
    ax.set_ylim(low, max(p[2] for p in pts) + 0.02)
    ax.set_xlabel("final edge density (held out)")
    ax.set_ylabel("held-out CE − dense control's (nats)")
    ax.set_title(f"{title}: each final model against a dense control on the same schedule", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.savefig(path, dpi=130, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
