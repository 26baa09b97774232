"""The paper's toy reproduction (Fig. 1 and the carry figure): 2-digit addition, dense then sparse.

    python experiments/toy_addition.py --out runs/toy            # the README's main job (~4 min on 2 CPU cores)
    python experiments/toy_addition.py --out runs/toy --quick    # a smoke run (fewer steps)

1. trains the 4-layer model densely on "ab+cd=" -> 5-digit sums (``sparsejax pretrain toy_addition_pretrain``),
2. post-trains it sparse under CE <= tau, tau = its own held-out CE (+ slack) (``sparsejax posttrain
   toy_addition_posttrain``), PI-controlled multiplier,
3. reports, for the **final** model, exact match on the 1,000 held-out problems (greedy autoregressive decoding
   of the 5 answer digits, and teacher-forced) and the deterministic edge density, and draws the attention graphs
   (layers x positions, one line per kept edge) for a no-carry, a single-carry and a double-carry problem, plus the
   post-training dynamics. The sparsest evaluated checkpoint meeting the constraint (``best_model/``) is reported
   beside it as the safety net. Writes PNGs and ``results.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from sparsejax.files import atomic_write_text

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import sparsejax as sj  # noqa: E402
from sparsejax.config import load_config  # noqa: E402
from sparsejax import report  # noqa: E402
from sparsejax.data import addition  # noqa: E402
from sparsejax.train import RunDir, Trainer  # noqa: E402

EXAMPLES = {"no carry": (12, 34), "single carry": (15, 37), "double carry": (95, 17)}


@functools.partial(jax.jit, static_argnums=0)  # shared by the models of one config: compiled once per length
def _logits(config, params, tokens, gate):
    return sj.forward(config, params, tokens, gate)[0]


def exact_match(model: sj.Model, rows: np.ndarray) -> float:
    """Teacher-forced: every answer digit right given the true earlier digits."""
    logits = _logits(model.config, model.params, rows[:, :-1], model.gate)
    pred = np.asarray(jnp.argmax(logits[:, addition.PROMPT_LEN - 1:], -1))
    return float(np.mean(np.all(pred == rows[:, addition.PROMPT_LEN:], axis=1)))


def greedy_exact_match(model: sj.Model, rows: np.ndarray) -> float:
    """Greedy autoregressive decoding of the 5 answer digits from the prompt alone."""
    f = lambda t: _logits(model.config, model.params, t, model.gate)
    return addition.greedy_exact_match(f, rows)


def attention_graph(model: sj.Model, row: np.ndarray, gate):
    """Per layer ``[T, T]`` effective attention (max over heads) and adjacency (any head)."""
    pattern, adjacency = report.head_maps(model, row[:-1], gate)
    return list(pattern.max(1)), list(adjacency.any(1))


def draw_graph(ax, weights, adjacency, labels, title):
    n_layers, t = len(weights), len(labels)
    for l in range(n_layers):
        for i in range(t):
            for j in range(i + 1):
                if adjacency[l][i, j]:
                    w = float(weights[l][i, j])
                    ax.plot([j, i], [l, l + 1], color="tab:blue", alpha=0.15 + 0.85 * min(1.0, w), lw=0.4 + 1.6 * w)
    xs, ys = np.meshgrid(np.arange(t), np.arange(n_layers + 1))
    ax.scatter(xs, ys, s=8, color="black", zorder=3)
    ax.set_xticks(range(t), labels)
    ax.set_yticks(range(n_layers + 1), ["emb"] + [f"L{l}" for l in range(n_layers)])
    n_edges = int(sum(a.sum() for a in adjacency))
    ax.set_title(f"{title} ({n_edges} edges)", fontsize=9)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/toy")
    p.add_argument("--quick", action="store_true", help="a few hundred steps only (smoke test, not the result)")
    p.add_argument("--pretrain-steps", type=int)
    p.add_argument("--posttrain-steps", type=int)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    pre_steps = args.pretrain_steps or (300 if args.quick else None)
    post_steps = args.posttrain_steps or (200 if args.quick else None)

    print("== 1/3 dense pretraining")
    pre_cfg = load_config("toy_addition_pretrain", [f"train.steps={pre_steps}"] if pre_steps else [])
    dense_run, sparse_run = RunDir(out / "dense"), RunDir(out / "sparse")
    Trainer(pre_cfg, dense_run, progress=not args.no_progress).fit()
    dense = sj.from_pretrained(dense_run.model)
    val = addition.split("validation")

    print("== 2/3 sparse post-training (PI multiplier, CE <= tau)")
    post_over = [f"model.checkpoint={dense_run.model}"] + ([f"train.steps={post_steps}"] if post_steps else [])
    post_cfg = load_config("toy_addition_posttrain", post_over)
    last = Trainer(post_cfg, sparse_run, progress=not args.no_progress).fit()
    sparse = sj.from_pretrained(sparse_run.model)  # the run's output (model/) is the result
    final = {**sparse_run.model_record().to_dict(), "tau": last["tau"]}  # its held-out evaluation

    print("== 3/3 evaluation and figures")
    results = {"dense_exact_match_greedy": greedy_exact_match(dense, val),
               "dense_exact_match": exact_match(dense, val),  # teacher-forced
               "tau": final["tau"], "final_step": final["step"], "final_eval_ce": final["eval_ce"],
               "final_ce_minus_tau": final["eval_ce"] - final["tau"],
               "final_exact_match_greedy": greedy_exact_match(sparse, val),
               "final_exact_match_teacher_forced": exact_match(sparse, val),
               "edge_density": final["edge_density"], "edge_density_per_layer": final["edge_density_per_layer"],
               "last_step": last["step"], "last_edge_density": last["edge_density"],
               "last_ce_minus_tau": last["eval_ce"] - last["tau"],
               "pretrain_steps": pre_cfg.train.steps, "posttrain_steps": post_cfg.train.steps,
               "seeds": {"pretrain": pre_cfg.train.seed, "posttrain": post_cfg.train.seed}}
    results["goal_met"] = bool(results["edge_density"] <= 0.025 and results["final_exact_match_greedy"] >= 0.99)
    best = sparse_run.best_record()
    if best is not None:  # the safety net: the sparsest evaluated checkpoint that met CE <= tau
        results["best_feasible"] = {"step": best["step"], "eval_ce": best["eval_ce"],
                                    "edge_density": best["edge_density"],
                                    "exact_match_greedy": greedy_exact_match(
                                        sj.from_pretrained(sparse_run.best_model), val)}
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for col, (name, (a, b)) in enumerate(EXAMPLES.items()):
        row = addition.encode(a, b)
        labels = list(addition.decode(row[:-1]))
        w, adj = attention_graph(dense, row, None)
        draw_graph(axes[0, col], w, adj, labels, f"dense: {a}+{b} ({name})")
        w, adj = attention_graph(sparse, row, sparse.gate)
        draw_graph(axes[1, col], w, adj, labels, f"sparse: {a}+{b} ({name})")
        results[f"edges_{name.replace(' ', '_')}"] = int(sum(x.sum() for x in adj))
    fig.suptitle(f"2-digit addition: dense (top) vs sparse post-trained, final model (bottom); greedy exact match "
                 f"{results['dense_exact_match_greedy']:.3f} -> {results['final_exact_match_greedy']:.3f}, "
                 f"edge density {results['edge_density']:.4f}")
    fig.tight_layout()
    fig.savefig(out / "attention_graphs.png", dpi=120)
    plt.close(fig)
    report.plot_dynamics(sparse_run, out / "training_dynamics.png")
    row = addition.encode(*EXAMPLES["double carry"])
    sparse_maps = report.head_maps(sparse, row[:-1], sparse.gate)
    report.plot_attention_maps(report.head_maps(dense, row[:-1], None), sparse_maps, list(addition.decode(row[:-1])),
                               out / "attention_maps.png", "95+17: per-head attention, dense (left) vs sparse (right)")
    results["nontrivial_heads_95+17"] = report.nontrivial_heads(sparse_maps[1])
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if not k.startswith(("edge_density_per", "nontrivial"))},
                     indent=1))
    print(f"figures: {out / 'attention_graphs.png'}, {out / 'training_dynamics.png'}, {out / 'attention_maps.png'};"
          f" report: {report.write_report(out)}")


if __name__ == "__main__":
    main()
