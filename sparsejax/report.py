"""Figures and the HTML report of a run: training dynamics, per-head attention maps, numbers.

``sparsejax report RUN_DIR`` gathers every ``metrics.jsonl`` under RUN_DIR (curves), every PNG already there
(e.g. attention graphs) and ``results.json`` / final metrics (numbers) into ``RUN_DIR/report.html`` (images
embedded, one self-contained file).
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


from .train.evaluate import summary  # noqa: E402


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """``(training records, evaluation records)`` of a metrics.jsonl, the last record per step kept."""
    from .train.metrics import read_records

    train, evals = {}, {}
    for r in read_records(path):  # a truncated last line (a killed run) is skipped
        if "step" in r:
            (train if "ce" in r else evals)[r["step"]] = r
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def plot_dynamics(metrics_path: Path, out: Path) -> Path:
    """Edge density (log: training batch, expected, and held-out per layer at evaluations), the multiplier (log),
    and CE (training, its EMA, held-out at evaluations) against the dashed target, over steps."""
    plt = _plt()
    train, evals = read_metrics(metrics_path)
    evals = [r for r in evals if "eval_ce" in r]
    steps = [r["step"] for r in train]
    gated = any(r.get("expected_density", 0) > 0 for r in train)
    fig, axes = plt.subplots(1, 3 if gated else 1, figsize=(14 if gated else 4.8, 3.6), squeeze=False)
    axes = axes[0]
    ce_ax = axes[-1]
    ce_ax.plot(steps, [r["ce"] for r in train], label="train CE (sampled gates)", alpha=0.5, lw=0.8)
    if train and "ce_ema" in train[0]:
        ce_ax.plot(steps, [r["ce_ema"] for r in train], label="CE EMA (controller input)")
    if evals:
        ce_ax.plot([r["step"] for r in evals], [r["eval_ce"] for r in evals], "o-", ms=3, color="tab:red",
                   label="held-out CE (eval gates)")
    if train and "tau" in train[0]:
        ce_ax.axhline(train[0]["tau"], ls="--", color="black", label="target tau")
        lo = min([r["eval_ce"] for r in evals] + [train[0]["tau"]])
        ce_ax.set_ylim(lo - 0.05 * abs(lo) - 0.01, train[0]["tau"] + max(0.3 * abs(train[0]["tau"]), 0.05))
    ce_ax.set_title("cross-entropy")
    ce_ax.set_ylabel("CE (nats/token)")
    ce_ax.legend(fontsize=7)
    if gated:
        ax = axes[0]
        if "train_edge_density" in train[0]:
            ax.semilogy(steps, [max(r["train_edge_density"], 1e-6) for r in train], lw=0.8, label="train batch")
        ax.semilogy(steps, [r["expected_density"] for r in train], lw=0.8, alpha=0.6, label="expected (regulariser)")
        if evals and "edge_density_per_layer" in evals[0]:
            es = [r["step"] for r in evals]
            ax.semilogy(es, [max(r["edge_density"], 1e-6) for r in evals], "o-", ms=3, color="black",
                        label="held-out, all layers")
            for l in range(len(evals[0]["edge_density_per_layer"])):
                ax.semilogy(es, [max(r["edge_density_per_layer"][l], 1e-6) for r in evals], ":", lw=1,
                            label=f"held-out, layer {l}")
        if "density_target" in train[0]:
            ax.axhline(train[0]["density_target"], ls="--", color="black", lw=1, label="density target")
        ax.set_title("edge density (log)")
        ax.set_ylabel("share of causal pairs kept")
        ax.legend(fontsize=6)
        key = "beta" if "beta" in train[0] else "lambda" if "lambda" in train[0] else None
        if key:
            axes[1].semilogy(steps, [max(r[key], 1e-12) for r in train], color="tab:orange")
            axes[1].set_title(f"multiplier {key} (log)")
            axes[1].set_ylabel(key)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def head_maps(model, tokens, gate) -> tuple[np.ndarray, np.ndarray]:
    """``(pattern, adjacency)``, each ``[L, H, T, T]``, for one sequence (effective attention P * A)."""
    from .models import forward

    _, aux = forward(model.config, model.params, np.asarray(tokens)[None], gate,
                     capture=["attn.hook_pattern", "attn.hook_adjacency"])
    caps = aux["captures"]
    L = model.config.n_layers
    pattern = np.stack([np.asarray(caps[f"blocks.{l}.attn.hook_pattern"][0]) for l in range(L)])
    adjacency = np.stack([np.asarray(caps[f"blocks.{l}.attn.hook_adjacency"][0]) for l in range(L)])
    return pattern, adjacency


def nontrivial_heads(adjacency: np.ndarray) -> list[dict]:
    """Heads keeping an edge that is neither to the first token nor to the query itself, with their counts."""
    t = adjacency.shape[-1]
    trivial = np.eye(t, dtype=bool) | (np.arange(t)[None, :] == 0)
    out = []
    for l, layer in enumerate(adjacency):
        for h, adj in enumerate(layer):
            n = int((adj & ~trivial).sum())
            if n:
                out.append({"layer": l, "head": h, "nontrivial_edges": n, "edges": int(adj.sum())})
    return out


def plot_attention_maps(dense_maps, sparse_maps, labels, out: Path, title: str = "") -> Path:
    """Per-head maps, dense (left block) and sparse (right block) side by side; rows are layers."""
    plt = _plt()
    (dp, _), (sp, sa) = dense_maps, sparse_maps
    L, H, T, _ = dp.shape
    fig, axes = plt.subplots(L, 2 * H, figsize=(1.9 * 2 * H, 1.9 * L + 0.6), squeeze=False)
    for l in range(L):
        for h in range(H):
            for block, (maps, name) in enumerate(((dp, "dense"), (sp, "sparse"))):
                ax = axes[l, block * H + h]
                ax.imshow(maps[l, h], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if l == 0:
                    ax.set_title(f"{name} h{h}", fontsize=8)
                if block * H + h == 0:
                    ax.set_ylabel(f"L{l}", fontsize=8)
                if name == "sparse":
                    ax.text(0.98, 0.02, f"{int(sa[l, h].sum())}", transform=ax.transAxes, ha="right", va="bottom",
                            fontsize=6, color="tab:red")
    if T <= 24:
        for ax in axes[-1]:
            ax.set_xticks(range(T), labels, fontsize=5)
    fig.suptitle(title or "per-head attention (P x A); red: edges kept", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" style="max-width:100%"><figcaption>' \
           f'{html.escape(path.name)}</figcaption></figure>'


def write_report(run_dir: str | Path) -> Path:
    """Build ``RUN_DIR/report.html`` from what the run left there."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    metrics = sorted(run_dir.rglob("metrics.jsonl"))
    if not metrics and not (run_dir / "results.json").exists():
        raise FileNotFoundError(f"{run_dir} holds no metrics.jsonl or results.json: is it a sparsejax run?")
    parts = [f"<h1>sparsejax run: {html.escape(str(run_dir))}</h1>"]
    if (run_dir / "results.json").exists():
        results = json.loads((run_dir / "results.json").read_text())
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                       for k, v in results.items())
        parts.append(f"<h2>results</h2><table border=1 cellpadding=4>{rows}</table>")
    for m in metrics:
        rel = m.parent.relative_to(run_dir)
        _, evals = read_metrics(m)
        png = m.parent / "dynamics.png"
        plot_dynamics(m, png)
        parts.append(f"<h2>run {html.escape(str(rel))}</h2>{_img(png)}")
        if evals:
            last = summary(evals[-1])
            parts.append(f"<pre>{html.escape(json.dumps(last, indent=1))}</pre>")
    for png in sorted(run_dir.glob("*.png")):
        parts.append(_img(png))
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text("<!doctype html><meta charset=utf-8><title>sparsejax report</title>"
                   "<body style='font-family:sans-serif;max-width:1300px'>" + "\n".join(parts) + "</body>")
    tmp.replace(out)
    return out
