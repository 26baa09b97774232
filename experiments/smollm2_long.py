"""A long SmolLM2-135M density run against its dense control (issue I): held-out CE against step for both (the
control may be partial), the edge density and the densest layer against step (log) with the annealed target, and
CE against density; prints the table at every evaluation both runs have.

    python experiments/smollm2_long.py --run runs/smollm2/long_d008 --control runs/smollm2/long_control \
        --out docs/figures/smollm2_long_d008.png

Reads each run's ``metrics.jsonl`` (evaluations on the run's own 8 held-out batches) through ``RunDir``; with
``--final FILE`` (the JSON ``sparsejax eval ... data.eval_batches=64`` prints for the final model) marks the final
model's 64-batch numbers. ``--continued RUN`` adds a run post-trained further from the final model (its steps drawn
after the first run's last step; ``--continued-final FILE`` its final model's 64-batch evaluation):

    python experiments/smollm2_long.py --run runs/smollm2/long_d008 --control runs/smollm2/long_control \
        --final runs/smollm2/long_d008/eval64.json --continued runs/smollm2/long_hold \
        --continued-final runs/smollm2/long_hold/eval64.json --out docs/figures/smollm2_long_d008.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def target_at(step: int, start: float, final: float, anneal: int) -> float:
    """The annealed density target (sparsejax.controllers.common.target_schedule: geometric from start to final)."""
    return start * (final / start) ** min(step / anneal, 1.0) if anneal else final


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--final", help="64-batch eval JSON of the run's final model")
    p.add_argument("--continued", help="a run post-trained further from the run's final model")
    p.add_argument("--continued-final", help="64-batch eval JSON of the continued run's final model")
    p.add_argument("--out", required=True)
    p.add_argument("--before", help="a dense run both started from (its curve drawn at negative steps)")
    p.add_argument("--title", default="SmolLM2-135M", help="the figure title's start (the model, how it began)")
    args = p.parse_args(argv)
    from sparsejax.train import RunDir

    run, ctl = RunDir(Path(args.run)), RunDir(Path(args.control))
    ev = {r["step"]: r for r in run.records("eval")}
    cv = {r["step"]: r for r in ctl.records("eval")} if Path(args.control, "metrics.jsonl").exists() else {}
    c = run.config_dict()["constraint"]
    steps = sorted(ev)
    start = c["anneal_from"] or ev[0]["edge_density"]
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(16, 4.3))
    ax.plot(steps, [ev[s]["eval_ce"] for s in steps], "o-", ms=3, label="sparse (density target)")
    if cv:
        cs = sorted(cv)
        ax.plot(cs, [cv[s]["eval_ce"] for s in cs], "s-", ms=3, color="k", label="dense control (same schedule)")
        ax.plot(cs, [cv[s]["eval_ce"] + 0.01 for s in cs], ":", color="tab:green", label="goal: control + 0.01")
    if args.before:  # the fine-tuning that preceded both, ending at step 0
        bv = RunDir(Path(args.before)).records("eval")
        last = max(r["step"] for r in bv)
        ax.plot([r["step"] - last for r in bv], [r["eval_ce"] for r in bv], "d-", ms=3, color="tab:gray",
                label="dense fine-tuning before (gate off)")
    more = {}
    if args.continued:  # steps after the first run's last one
        more = {steps[-1] + r["step"]: r for r in RunDir(Path(args.continued)).records("eval") if r["step"] > 0}
        ms = sorted(more)
        ax.plot(ms, [more[s]["eval_ce"] for s in ms], "o-", ms=3, color="tab:purple",
                label="sparse, continued at the fixed final target")
        bx.plot(ms, [more[s]["edge_density"] for s in ms], "o-", ms=3, color="tab:purple", label="continued")
        cx.plot([more[s]["edge_density"] for s in ms], [more[s]["eval_ce"] for s in ms], "o-", ms=3,
                color="tab:purple", label="continued")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out CE (8 batches, nats)")
    ax.legend(fontsize=7)
    bx.plot(steps, [ev[s]["edge_density"] for s in steps], "o-", ms=3, label="edge density (held-out)")
    bx.plot(steps, [max(ev[s]["edge_density_per_layer"]) for s in steps], "^-", ms=3, label="densest layer")
    bx.plot(steps, [target_at(s, start, c["density_target"], c["anneal_steps"]) for s in steps], "--", color="gray",
            label=f"annealed target (to {c['density_target']:g} at step {c['anneal_steps']})")
    bx.axhline(0.01, color="tab:green", ls=":", lw=1, label="goal: 1% (every layer <= 5%)")
    bx.axhline(0.05, color="tab:red", ls=":", lw=1)
    bx.set_yscale("log")
    bx.set_xlabel("step")
    bx.set_ylabel("share of causal edges kept (log)")
    bx.legend(fontsize=7)
    cx.plot([ev[s]["edge_density"] for s in steps], [ev[s]["eval_ce"] for s in steps], "o-", ms=3, label="sparse")
    if args.final:
        final = json.loads(Path(args.final).read_text())
        cx.plot(final["edge_density"], final["eval_ce"], "*", ms=14, color="tab:red",
                label=f"final model, 64 batches: {100 * final['edge_density']:.2f}%, CE {final['eval_ce']:.3f}")
    if args.continued_final:
        final = json.loads(Path(args.continued_final).read_text())
        cx.plot(final["edge_density"], final["eval_ce"], "P", ms=12, color="tab:purple",
                label=f"continued final, 64 batches: {100 * final['edge_density']:.2f}%, CE {final['eval_ce']:.3f}")
    cx.set_xscale("log")
    cx.invert_xaxis()
    cx.set_xlabel("edge density (log, falling to the right)")
    cx.set_ylabel("held-out CE (nats)")
    cx.legend(fontsize=7)
    fig.suptitle(f"{args.title}, LoRA r16, {steps[-1]} steps, density target annealed "
                 f"{start:.2f} -> {c['density_target']:g} over {c['anneal_steps']} steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print("| step | sparse CE | control CE | gap | edge density | densest layer |")
    print("|---:|---:|---:|---:|---:|---:|")
    for s in steps + sorted(more):
        r, k = (ev | more)[s], cv.get(s)
        gap = f"{r['eval_ce'] - k['eval_ce']:+.3f}" if k else ""
        print(f"| {s} | {r['eval_ce']:.3f} | {k['eval_ce']:.3f} | {gap} | {100 * r['edge_density']:.2f}% | "
              f"{100 * max(r['edge_density_per_layer']):.1f}% |" if k else
              f"| {s} | {r['eval_ce']:.3f} | | | {100 * r['edge_density']:.2f}% | "
              f"{100 * max(r['edge_density_per_layer']):.1f}% |")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
