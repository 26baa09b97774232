"""The report's figures, each usable on its own: training dynamics, per-head attention maps (and which heads to
show), the per-head density heatmap, edge-circuit graphs, CircuitsVis arrays and the self-contained attention viewer
page. Each ``plot_*`` writes a PNG, ``draw_circuit`` when given ``out`` (matplotlib, Agg backend)."""
from __future__ import annotations

import functools
import html
import json
from pathlib import Path

import jax
import numpy as np

from ..files import atomic_write_text
from ..train.rundir import RunDir
from .runs import read_metrics


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _target(ax, steps, values, label, **style):
    """A controller's target: the series it was where it moved (annealed: constraint.anneal_steps), else one line."""
    if len(set(values)) > 1:
        ax.plot(steps, values, label=f"{label} (annealed)", **style)
    else:
        ax.axhline(values[0], label=label, **style)


def plot_dynamics(metrics_path, out: Path) -> Path:
    """Edge density (log: training batch, expected, and held-out per layer at evaluations), the multiplier (log),
    and CE (training, its EMA, held-out at evaluations) against the dashed target, over steps. ``metrics_path``: a
    run folder or its ``metrics.jsonl``."""
    from .. import controllers

    plt = _plt()
    # the record names the controllers log under: the estimate and the target of a CE target, the density target,
    # the multipliers (each controller names its own)
    ema, ce_target = controllers.record_name(controllers.EMA, "ce"), controllers.record_name(controllers.TARGET, "ce")
    density_target = controllers.record_name(controllers.TARGET, "density")
    train, evals = read_metrics(metrics_path)
    evals = [r for r in evals if "eval_ce" in r]
    steps = [r["step"] for r in train]
    gated = any(r.get("expected_density", 0) > 0 for r in train)
    fig, axes = plt.subplots(1, 3 if gated else 1, figsize=(14 if gated else 4.8, 3.6), squeeze=False)
    axes = axes[0]
    ce_ax = axes[-1]
    ce_ax.plot(steps, [r["ce"] for r in train], label="train CE (sampled gates)", alpha=0.5, lw=0.8)
    # constraint.tau_data=batch / control: the controller's input and target are a gap to a dense model on each batch
    # (a few hundredths of a nat), drawn on their own axis
    run = RunDir(metrics_path) if Path(metrics_path).is_dir() else RunDir(Path(metrics_path).parent)
    config = run.config_dict()
    relative = (config or {}).get("constraint", {}).get("tau_data") in ("batch", "control")
    gap_ax = ce_ax.twinx() if relative and train and ema in train[0] else None
    if train and ema in train[0]:
        (gap_ax or ce_ax).plot(steps, [r[ema] for r in train], color="tab:orange",
                               label="CE gap EMA (controller input, right)" if gap_ax else "CE EMA (controller input)")
    if evals:
        ce_ax.plot([r["step"] for r in evals], [r["eval_ce"] for r in evals], "o-", ms=3, color="tab:red",
                   label="held-out CE (eval gates)")
        control = [r for r in evals if "control_eval_ce" in r]
        if control:  # constraint.tau_data=control: the dense control trained beside
            ce_ax.plot([r["step"] for r in control], [r["control_eval_ce"] for r in control], "s--", ms=3,
                       color="tab:green", label="held-out CE, dense control")
    if gap_ax is not None:
        if ce_target in train[0]:
            gap_ax.axhline(train[0][ce_target], ls=":", color="tab:orange", label="target: the slack (right)")
        gap_ax.set_ylabel("CE gap to the dense model (nats)")
        gap_ax.legend(fontsize=7, loc="lower left")
    elif train and ce_target in train[0]:
        target = [r[ce_target] for r in train]
        tau = target[-1]
        _target(ce_ax, steps, target, "target tau", ls="--", color="black")
        lo = min([r["eval_ce"] for r in evals] + [tau])
        ce_ax.set_ylim(lo - 0.05 * abs(lo) - 0.01, tau + max(0.3 * abs(tau), 0.05))
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
        if density_target in train[0]:
            _target(ax, steps, [r[density_target] for r in train], "density target", ls="--", color="black", lw=1)
        ax.set_title("edge density (log)")
        ax.set_ylabel("share of causal pairs kept")
        ax.legend(fontsize=6)
        key = next((k for k in controllers.multiplier_names() if k in train[0]), None)
        if key:
            axes[1].semilogy(steps, [max(r[key], 1e-12) for r in train], color="tab:orange")
            axes[1].set_title(f"multiplier {key} (log)")
            axes[1].set_ylabel(key)
        if train and "gate_bias_max" in train[0]:  # a learnt gate bias: its largest entry (gate.bias_max bounds it)
            bias_ax = axes[1].twinx()
            bias_ax.plot(steps, [r["gate_bias_max"] for r in train], color="tab:purple", lw=0.8,
                         label="largest learnt gate bias (right)")
            bias_ax.set_ylabel("gate bias")
            bias_ax.legend(fontsize=7, loc="lower right")
    chosen = run.feasible_record()  # train.final=feasible rolled model/ back to an earlier evaluation
    for ax in axes:
        ax.set_xlabel("step")
        if chosen is not None and steps and chosen["step"] < steps[-1]:
            ax.axvline(chosen["step"], color="gray", lw=0.8, ls="-.")
    if chosen is not None and steps and chosen["step"] < steps[-1]:
        axes[0].set_title(f"edge density (log); model/ = step {chosen['step']} (-.)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


@functools.partial(jax.jit, static_argnums=0)  # once per model config, gate kind and length, not once per call
def _captured_maps(config, params, tokens, gate):
    from ..models import forward

    return forward(config, params, tokens, gate, capture=["attn.hook_pattern", "attn.hook_adjacency"])[1]["captures"]


def head_maps(model, tokens, gate) -> tuple[np.ndarray, np.ndarray]:
    """``(pattern, adjacency)``, each ``[L, H, T, T]``, for one sequence (effective attention P * A)."""
    caps = _captured_maps(model.config, model.params, np.asarray(tokens)[None], gate)
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


def pick_heads(dense_maps, sparse_maps, n: int = 12) -> list[tuple[int, int, str]]:
    """The heads worth looking at, ``(layer, head, why)``: a third the most changed by sparsification (L1 distance
    between the dense and the sparse effective attention), a third the sparsest heads that keep a non-trivial edge
    (neither to the first token nor to the query itself), the rest the busiest head of evenly spaced layers."""
    (dp, _), (sp, sa) = dense_maps, sparse_maps
    L, H = dp.shape[:2]
    change = np.abs(dp - sp).sum(axis=(2, 3))
    edges = sa.sum(axis=(2, 3))
    nontrivial = {(h["layer"], h["head"]): h["nontrivial_edges"] for h in nontrivial_heads(sa)}
    picked: dict[tuple[int, int], str] = {}

    def take(candidates, why, k):
        for lh in candidates:
            if len(picked) >= n or k <= 0:
                return
            if lh not in picked:
                picked[lh], k = why, k - 1

    order = lambda score: [tuple(int(x) for x in np.unravel_index(i, (L, H))) for i in np.argsort(score, axis=None)]
    take(order(-change), "most changed", n // 3)
    take(sorted(nontrivial, key=lambda lh: (edges[lh], lh)), "sparsest non-trivial", n // 3)
    take([(int(l), int(np.argmax(edges[l]))) for l in np.unique(np.linspace(0, L - 1, n).round().astype(int))],
         "busiest of its layer", n)
    return sorted((l, h, why) for (l, h), why in picked.items())


def plot_attention_maps(dense_maps, sparse_maps, labels, out: Path, title: str = "", heads=None) -> Path:
    """Per-head maps, dense and sparse side by side. All heads: rows are layers, the dense block left and the sparse
    block right. ``heads``: only these ``(layer, head, why)`` (:func:`pick_heads`), as a grid of (dense | sparse)
    pairs, four pairs a row, each titled with its head and why it was picked."""
    plt = _plt()
    (dp, _), (sp, sa) = dense_maps, sparse_maps
    L, H, T, _ = dp.shape
    if heads is None:
        cells = [[(l, h, f"h{h}") for h in range(H)] for l in range(L)]
    else:
        pairs = [(l, h, f"L{l} h{h}: {why}") for l, h, why in heads]
        cells = [pairs[i:i + 4] for i in range(0, len(pairs), 4)]
    rows, cols = len(cells), max(len(r) for r in cells)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(1.9 * 2 * cols, 1.9 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, row in enumerate(cells):
        for c, (l, h, name) in enumerate(row):
            for block, (maps, kind) in enumerate(((dp, "dense"), (sp, "sparse"))):
                ax = axes[r, block * cols + c] if heads is None else axes[r, 2 * c + block]
                ax.set_axis_on()
                ax.imshow(maps[l, h], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if heads is not None:
                    ax.set_title(f"{name}\n{kind}" if block == 0 else f"\n{kind}", fontsize=7, loc="left")
                elif r == 0:
                    ax.set_title(f"{kind} {name}", fontsize=8)
                if heads is None and block * cols + c == 0:
                    ax.set_ylabel(f"L{l}", fontsize=8)
                if kind == "sparse":
                    ax.text(0.98, 0.02, f"{int(sa[l, h].sum())}", transform=ax.transAxes, ha="right", va="bottom",
                            fontsize=6, color="tab:red")
    if T <= 24 and heads is None:
        for ax in axes[-1]:
            ax.set_xticks(range(T), labels, fontsize=5)
    fig.suptitle(title or "per-head attention (P x A); red: edges kept", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def plot_head_density(per_head, out: Path, title: str = "") -> Path:
    """Heatmap of the held-out edge density per (layer, head), log colour scale, values written in the cells."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    d = np.maximum(np.asarray(per_head, float), 1e-5)
    L, H = d.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 + 0.55 * H), 1.0 + 0.45 * L))
    im = ax.imshow(d, cmap="viridis", norm=LogNorm(vmin=max(d.min(), 1e-4), vmax=1.0), aspect="auto")
    for l in range(L):
        for h in range(H):
            ax.text(h, l, f"{100 * d[l, h]:.3g}", ha="center", va="center", fontsize=6,
                    color="white" if d[l, h] < 0.1 else "black")
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="share of causal pairs kept")
    ax.set_title(title or "held-out edge density per head (%)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def circuitsvis_patterns(model, tokens, gate=None) -> np.ndarray:
    """The effective attention ``P * A`` of one sequence as CircuitsVis expects it: ``[layers * heads, dest, src]``
    (layer-major; ``circuitsvis.attention.attention_patterns(tokens=labels, attention=array)``)."""
    pattern, _ = head_maps(model, tokens, gate)
    L, H, T, _ = pattern.shape
    return pattern.reshape(L * H, T, T)


_HTML = """<!doctype html><meta charset=utf-8><title>%(title)s</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:auto}span.t{padding:2px 3px;margin:1px;display:inline-block;
border-radius:3px;cursor:pointer;font-family:monospace;white-space:pre}#heads button{margin:2px;font-size:11px}
button.on{background:#2060c0;color:white}</style>
<h2>%(title)s</h2><p>Pick a head, then hover a token (the query): keys are shaded by the attention it gives them
(<code>P&times;A</code>, eval gates; a red outline marks an edge kept by the gate).</p>
<div id=heads></div><div id=toks></div>
<script>
const D = %(data)s; let cur = 0;
const heads = document.getElementById('heads'), toks = document.getElementById('toks');
D.names.forEach((n, i) => { const b = document.createElement('button'); b.textContent = n;
  b.onclick = () => { cur = i; draw(-1); [...heads.children].forEach((c, j) => c.className = j == i ? 'on' : ''); };
  heads.appendChild(b); });
function draw(q) { toks.innerHTML = ''; D.tokens.forEach((t, k) => { const s = document.createElement('span');
  s.className = 't'; s.textContent = t; const w = q < 0 ? 0 : D.attention[cur][q][k];
  s.style.background = q == k ? '#ffe08a' : `rgba(32,96,192,${Math.min(1, w)})`;
  s.style.color = w > 0.5 ? 'white' : 'black'; if (q >= 0 && w > 0) s.style.outline = '1px solid #c02020';
  s.title = q < 0 ? '' : `attention ${w.toFixed(3)}`; s.onmouseenter = () => draw(k); toks.appendChild(s); }); }
heads.children[0].className = 'on'; draw(-1);
</script>"""


def attention_html(path, tokens: list[str], attention, names: list[str] | None = None, title: str = "attention"):
    """A self-contained HTML page (no network) to browse ``attention [heads, dest, src]`` over ``tokens``."""
    att = np.asarray(attention, float)
    if att.ndim != 3 or att.shape[1] != att.shape[2] or att.shape[1] != len(tokens):
        raise ValueError(f"attention must be [heads, dest, src] with dest = src = {len(tokens)} tokens, got "
                         f"{att.shape}")
    names = names or [f"head {i}" for i in range(att.shape[0])]
    data = json.dumps({"tokens": [str(t) for t in tokens], "names": names,
                       "attention": np.round(att, 4).tolist()}).replace("</", "<\\/")  # safe inside <script>
    atomic_write_text(Path(path), _HTML % {"title": html.escape(title), "data": data})
    return Path(path)


READER_COLOURS = {"q": "tab:blue", "k": "tab:green", "v": "tab:orange", "mlp": "tab:gray", "logits": "black"}


def draw_circuit(config, keep, out: Path | None = None, *, scores=None, title: str = "", max_edges: int | None = None):
    """Draw an edge circuit (``keep``: bool ``[writers, readers]``, e.g. :func:`sparsejax.circuits.top_edges`, or a
    list of ``(writer, reader)`` edges) as a
    graph: the embedding at the bottom, each layer's heads in a row with its MLP above and to the right, the logits on
    top; one
    line per kept edge from the writer to the reader's node, coloured by what it feeds (a head's q / k / v input,
    an MLP, the logits), width by ``|score|`` when ``scores`` (``[writers, readers]``) is given. Nodes that no kept
    edge touches are drawn faint. ``max_edges`` (needs ``scores``): a larger circuit is drawn as its ``max_edges``
    strongest edges by ``|score|``, and the title says so (thousands of lines read as one smear). Returns the figure
    (saved to ``out`` when given)."""
    from .. import circuits

    plt = _plt()
    ws, rs = circuits.writers(config), circuits.readers(config)
    keep = np.asarray(keep, bool) if hasattr(keep, "shape") else circuits._edge_matrix(config, keep)
    if keep.shape != (len(ws), len(rs)):
        raise ValueError(f"keep must be a [writers, readers] = {(len(ws), len(rs))} bool matrix (circuits.top_edges), "
                         f"got {keep.shape}")
    n_total = int(keep.sum())
    if max_edges is not None and n_total > max_edges:
        if scores is None:
            raise ValueError(f"max_edges={max_edges} picks the strongest edges of the {n_total}: pass scores= "
                             "([writers, readers], e.g. EAP-IG) or max_edges=None")
        mag = np.where(keep, np.abs(np.asarray(scores, float)), -np.inf).ravel()
        strongest = np.zeros(keep.size, bool)
        strongest[np.argsort(-mag, kind="stable")[:max_edges]] = True
        keep = strongest.reshape(keep.shape)
        title = f"{title}\n(drawn: the {max_edges} strongest of its {n_total} edges by |score|)" if title else \
            f"the {max_edges} strongest of {n_total} edges by |score|"
    n_heads, group = config.n_heads, config.n_heads // config.n_kv_heads
    mid = (n_heads - 1) / 2

    def where(node):  # (x, y) of a node
        kind = node[0]
        if kind == "embed":
            return mid, 0.0
        if kind == "logits":
            return mid, 2.0 * config.n_layers + 1
        if kind == "mlp":  # a column right of the heads, half a row above them
            return n_heads + 0.2, 2.0 * node[1] + 2
        if kind in ("k", "v"):  # a key/value head feeds the query heads of its group: drawn at the group's centre
            return node[2] * group + (group - 1) / 2, 2.0 * node[1] + 1
        return node[2], 2.0 * node[1] + 1

    mags = None if scores is None else np.abs(np.asarray(scores, float))
    top = 1.0 if mags is None else max(float(mags[keep].max()) if keep.any() else 1.0, 1e-12)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n_heads, 1.5 + 0.9 * config.n_layers))
    used = set()
    for i, j in zip(*np.nonzero(keep)):
        (x0, y0), (x1, y1) = where(ws[i]), where(rs[j])
        width = 1.2 if mags is None else 0.4 + 3.0 * mags[i, j] / top
        ax.plot([x0, x1], [y0, y1], color=READER_COLOURS[rs[j][0]], lw=width, alpha=0.7, zorder=1)
        used.add(ws[i])
        used.add(("head", rs[j][1], rs[j][2]) if rs[j][0] == "q" else rs[j])
        if rs[j][0] in ("k", "v"):
            used.update(("head", rs[j][1], h) for h in range(rs[j][2] * group, (rs[j][2] + 1) * group))
    nodes = circuits.nodes(config) + [("logits",)]
    for node in nodes:
        x, y = where(node)
        on = node in used
        label = {"embed": "emb", "logits": "logits", "mlp": f"MLP{node[1]}" if len(node) > 1 else "",
                 "head": f"{node[1]}.{node[2]}" if len(node) > 2 else ""}[node[0]]
        ax.scatter([x], [y], s=260 if node[0] == "head" else 420, zorder=2, color="white",
                   edgecolors="black" if on else "lightgray", linewidths=1.5 if on else 0.8,
                   marker="o" if node[0] == "head" else "s")
        ax.annotate(label, (x, y), ha="center", va="center", fontsize=6, zorder=3,
                    color="black" if on else "lightgray")
    for kind, colour in READER_COLOURS.items():
        ax.plot([], [], color=colour, label=f"into {kind}")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xlim(-0.8, n_heads + 1.0)
    ax.set_ylim(-0.8, 2 * config.n_layers + 1.8)
    ax.axis("off")
    ax.set_title(title or f"{int(keep.sum())} edges", fontsize=9)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=130)
    return fig
