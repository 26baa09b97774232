"""The HTML page of ``sparsejax report``: per run a section (summary table, figures, attention maps, config), an
experiment's ``results.json`` and figures, written as one self-contained ``report.html`` (images embedded)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from ..seeds import EVAL_ORDER
from ..train.rundir import RunDir
from .figures import attention_html, circuitsvis_patterns, head_maps, pick_heads, plot_attention_maps, plot_dynamics, \
    plot_head_density
from .runs import find_runs, read_metrics, summary_rows


def _img(path: Path, caption: str | None = None) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" style="max-width:100%"><figcaption>' \
           f'{html.escape(caption or path.name)}</figcaption></figure>'


MAX_RUNS = 16  # a folder holding more runs is refused: give one run directory
MAX_MAP_HEADS = 12  # a model with more heads gets a figure of the heads worth a look


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
        return ", ".join(_fmt(float(x)) for x in v)
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):  # records: a nested table, not JSON
        keys = list(dict.fromkeys(k for x in v for k in x))
        return _table(keys, [[x.get(k, "") for k in keys] for x in v])
    return html.escape(json.dumps(v) if isinstance(v, (dict, list)) else str(v))


def _table(header: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table border=1 cellpadding=4 style='border-collapse:collapse'><tr>{th}</tr>{body}</table>"


def _attention_section(run: Path, n_tokens: int = 24) -> str:
    """Dense vs sparse per-head attention on the first held-out example (needs the run's model/ and its dense
    starting checkpoint); a note instead when something is missing."""
    import tempfile

    from ..checkpoints import from_pretrained
    from ..data import batch_at
    from ..train.data import build_data

    run = RunDir.of(run)
    if not run.model.exists() or not run.config.exists():
        return f"<p>attention maps: no exported {run.MODEL}/ yet.</p>"
    try:
        cfg = run.load_config()
        sparse = from_pretrained(run.model)
        if sparse.gate is None:
            return "<p>attention maps: a dense run (no gate).</p>"
        dense_dir = cfg.model.checkpoint
        if not dense_dir or not Path(dense_dir).exists():
            return f"<p>attention maps: the dense checkpoint ({html.escape(str(dense_dir))}) is not here.</p>"
        with tempfile.TemporaryDirectory() as tmp:
            _, val, tok = build_data(cfg, Path(tmp))
            row = np.asarray(batch_at(val, 0, 1, seed=EVAL_ORDER)["tokens"])[0][:n_tokens]
        if tok is not None:
            labels = [tok.id_to_token(int(i)) for i in row]
        elif cfg.data.kind == "addition":
            from ..data import addition

            labels = list(addition.decode(row))
        else:
            labels = [str(int(i)) for i in row]
        dense = from_pretrained(dense_dir)
        dense_maps, sparse_maps = head_maps(dense, row, None), head_maps(sparse, row, sparse.gate)
        out = run.attention_maps
        what = f"first {len(row)} tokens of the first held-out example: dense (left) vs final sparse (right)"
        n_heads = sparse.config.n_layers * sparse.config.n_heads
        if n_heads <= MAX_MAP_HEADS:
            plot_attention_maps(dense_maps, sparse_maps, labels, out, f"{what}; red: edges kept")
            return _img(out, "per-head effective attention P x A, dense vs final sparse model")
        heads = pick_heads(dense_maps, sparse_maps, MAX_MAP_HEADS)
        plot_attention_maps(dense_maps, sparse_maps, labels, out, f"{what}; {len(heads)} of {n_heads} heads; red: "
                            "edges kept", heads=heads)
        everything = run.attention_maps_all
        plot_attention_maps(dense_maps, sparse_maps, labels, everything, f"{what}; all heads; red: edges kept")
        viewer = run.attention_viewer
        names = [f"L{l} h{h}" for l in range(sparse.config.n_layers) for h in range(sparse.config.n_heads)]
        attention_html(viewer, labels, circuitsvis_patterns(sparse, row, sparse.gate), names,
                       "final sparse model: effective attention P x A per head")
        return (_img(out, f"the {len(heads)} heads worth a look (most changed, sparsest non-trivial, the busiest of "
                          f"evenly spaced layers) of {n_heads}: dense vs final sparse")
                + f'<p>all {n_heads} heads: <a href="{everything.name}">one sheet</a> (large), '
                  f'<a href="{viewer.name}">an interactive viewer</a> of the sparse model.</p>')
    except Exception as e:  # the report still renders; say what was missing
        return f"<p>attention maps skipped: {html.escape(type(e).__name__)}: {html.escape(str(e))}</p>"


def _run_section(run_dir: Path, run: Path, maps: bool) -> list[str]:
    rel = run.relative_to(run_dir) if run != run_dir else Path(".")
    parts = [f"<h2>run {html.escape(str(rel))}</h2>"]
    run = RunDir.of(run)
    train, evals = read_metrics(run)
    if not train and not evals:
        return parts + ["<p>no records yet: the run has not logged its first step (or was stopped before).</p>"]
    header, rows = summary_rows(run)
    if rows:
        parts.append(_table(header, rows))
    target = next((r for r in reversed(evals) if "tau" in r), None)
    if target is not None:
        cfg = run.config_text() or ""
        if target.get("eval_tau") is not None and target.get("control_eval_ce") is not None:  # tau_data=control
            what = (f"held-out CE <= {target['eval_tau']:.4g} (the dense control's held-out CE + slack); the "
                    "multiplier holds the CE gap to the control at the slack")
        elif target.get("eval_tau") is not None:  # tau_data=train: tau is on training batches
            what = (f"held-out CE <= {target['eval_tau']:.4g} (the dense held-out CE + slack); the multiplier's "
                    f"target on training batches: tau = {target['tau']:.4g}")
        else:
            what = ("edge density <= " if "sense: density" in cfg else "held-out CE <= tau = ") + f"{target['tau']:.4g}"
        parts.append(f"<p>constraint: {html.escape(what)}</p>")
    if train:
        gated = any("train_edge_density" in r for r in train)
        parts.append(_img(plot_dynamics(run, run.dynamics),
                          f"training dynamics: {'density, multiplier, CE' if gated else 'CE (a dense run)'}; dots are "
                          "held-out evaluations"))
    last = next((r for r in reversed(evals) if "edge_density_per_head" in r), None)
    if last is not None:
        parts.append(_img(plot_head_density(last["edge_density_per_head"], run.head_density,
                                            f"held-out edge density per head (%), step {last['step']}")))
    if maps:
        parts.append(_attention_section(run))
    if run.config.exists():
        parts.append(f"<details><summary>{run.CONFIG}</summary><pre>{html.escape(run.config_text())}"
                     f"</pre></details>")
    return parts


def write_report(run_dir: str | Path, *, maps: bool = True) -> Path:
    """Build ``RUN_DIR/report.html`` (one self-contained file) from what the run left there: per run a summary
    table (dense / before / final / best feasible: held-out CE, edge density overall and per layer), the training
    dynamics, the per-head density heatmap, dense-vs-sparse attention maps (``maps``) and the config; an
    experiment's ``results.json`` and figures. Works on partial runs (empty or truncated metrics)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    runs = find_runs(run_dir)
    folder = RunDir(run_dir)
    if not runs and not folder.results.exists():
        raise FileNotFoundError(f"{run_dir} holds no {RunDir.METRICS} or {RunDir.RESULTS} (nor one or two levels "
                                "below): give a run directory written by sparsejax pretrain/posttrain or an experiment")
    if len(runs) > MAX_RUNS:
        raise ValueError(f"{run_dir} holds {len(runs)} runs (more than {MAX_RUNS}): give one run directory, e.g. "
                         f"{runs[0]}")
    parts = [f"<h1>sparsejax run: {html.escape(str(run_dir))}</h1>"]
    if folder.results.exists():
        results = json.loads(folder.results.read_text())
        flat = [[k, v] for k, v in results.items() if not isinstance(v, dict)]
        parts.append("<h2>results</h2>" + _table(["key", "value"], flat))
    for run in runs:
        parts += _run_section(run_dir, run, maps)
    made = set(RunDir.REPORT_FILES) if run_dir in runs else set()
    for png in sorted(run_dir.glob("*.png")):  # an experiment's own figures (not the ones made above)
        if png.name not in made:
            parts.append(_img(png))
    out = folder.report
    atomic_write_text(out, "<!doctype html><meta charset=utf-8><title>sparsejax report</title>"
                      "<body style='font-family:sans-serif;max-width:1300px;margin:auto;padding:0 16px'>" +
                      "\n".join(parts) + "</body>")
    return out
