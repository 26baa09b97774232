"""Where a sparse toy model keeps its edges: the mean number of kept edges per held-out problem in each layer, per
head of layer 0, and (``--map``) layer 0's ``[query, key]`` map of kept edges summed over heads. A problem has
4 layers x 4 heads x 55 causal pairs = 880 edges, so 2.5% of edges is 22 edges a problem (with a BOS token,
``data.bos=true``, read from the run's config: 66 pairs, 1,056 edges). Issue J, sixteenth round in
docs/controllers.md: the dense model that needs 2.5-3.5% keeps twice the edges of the easy ones in layer 0. With
``--logits`` on a RoPE model (no absolute positions) it also measures that layer 0's gate logit depends on (head,
query token, key token, offset) alone and how many idle edges share that class with a needed one (twentieth round).

    python experiments/toy_edges.py runs/zoo15/toy_d2/noise_mid_4k_smooth_tail/seed2/model [MODEL ...] [--map]
        [--logits]
        [--figure docs/figures/toy_layer0_edges.png --labels NAME ...]
"""
from __future__ import annotations

import argparse


def run_bos(model_dir: str) -> bool:
    """Whether the run that exported ``model_dir`` (its parent folder) put a BOS token first in every row
    (``data.bos`` in its ``config.yaml``; a model folder outside a run: no)."""
    from pathlib import Path

    from sparsejax.train.rundir import RunDir

    cfg = RunDir(Path(model_dir).resolve().parent).config_dict() or {}
    return bool(cfg.get("data", {}).get("bos", False))


def edges(model_dir: str) -> dict:
    """``{"per_layer": [L], "layer0_heads": [H], "layer0_map": [T, T], "causal": int, "layer0_bias": [H] | None}``:
    mean kept edges per problem over the 1,000 held-out problems under the exported (deterministic) gates;
    ``causal``: causal pairs a problem; ``layer0_bias``: layer 0's gate bias per head (a per-head bias only)."""
    import jax.numpy as jnp
    import numpy as np

    import sparsejax as sj
    from sparsejax.data import addition

    m = sj.from_pretrained(model_dir)
    if m.gate is None:
        raise SystemExit(f"{model_dir} has no gate (a dense model): give a sparse run's model/")
    rows = addition.split("validation", run_bos(model_dir))
    caps = sj.forward(m.config, m.params, jnp.asarray(rows[:, :-1]), m.gate, mode="eval",
                      capture="blocks.*.attn.hook_adjacency")[1]["captures"]
    adj = [np.asarray(caps[f"blocks.{layer}.attn.hook_adjacency"]) for layer in range(m.config.n_layers)]
    t = adj[0].shape[-1]
    return {"per_layer": [float(a.sum((1, 2, 3)).mean()) for a in adj],
            "layer0_heads": adj[0].sum((2, 3)).mean(0).tolist(), "layer0_map": adj[0].mean(0).sum(0),
            "causal": m.config.n_layers * m.config.n_heads * t * (t + 1) // 2,
            "layer0_bias": np.asarray(m.gate.bias)[0].tolist() if np.ndim(m.gate.bias) == 2 else None}


def logit_hooks(config, layer: int) -> list[str]:
    """The hooks whose captures give ``layer``'s gate logits: its queries and keys as the logits see them (rotated
    under RoPE)."""
    rot = "rot_" if config.position == "rope" else ""
    return [f"blocks.{layer}.attn.hook_{rot}q", f"blocks.{layer}.attn.hook_{rot}k"]


def gate_logits(model, captures: dict, layer: int):
    """``[B, H, T, T]`` float64 gate logits ``q . k / sqrt(d_head) + bias`` of ``layer`` from the captures of
    :func:`logit_hooks` (grouped k/v heads repeated; a scalar, per-layer or per-layer-and-head bias)."""
    import numpy as np

    q, k = (np.asarray(captures[n], np.float64) for n in logit_hooks(model.config, layer))
    k = np.repeat(k, q.shape[2] // k.shape[2], axis=2)
    bias = np.asarray(model.gate.bias, np.float64)
    bias = np.broadcast_to(bias[layer] if bias.ndim else bias, (q.shape[2],))
    return np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(q.shape[-1]) + bias[None, :, None, None]


def layer0_edges(model_dir: str, min_kept: float = 0.05) -> list[dict]:
    """Each (head, query, key) edge of layer 0 kept on at least ``min_kept`` of the held-out problems: the share of
    problems that keep it, its median gate logit there, and the answer CE's change when it alone is closed on every
    problem (``blocks.0.attn.hook_gate`` patched to 0; exact, not an attribution). Issue J, nineteenth round: an edge
    the CE does not need (change ~0) at a logit far above 0, where the density penalty's slope vanishes."""
    import jax.numpy as jnp
    import numpy as np

    import sparsejax as sj
    from sparsejax import objective
    from sparsejax.data import addition

    m = sj.from_pretrained(model_dir)
    bos = run_bos(model_dir)
    rows = addition.split("validation", bos)
    x, y = jnp.asarray(rows[:, :-1]), jnp.asarray(rows[:, 1:])
    mask = jnp.asarray(addition.answer_mask(len(rows), bos))
    logits, aux = sj.forward(m.config, m.params, x, m.gate, mode="eval",
                             capture=[*logit_hooks(m.config, 0), "blocks.0.attn.hook_gate"])
    caps = aux["captures"]
    g = gate_logits(m, caps, 0)
    gate = np.asarray(caps["blocks.0.attn.hook_gate"])
    kept = gate > 0
    base = float(objective.cross_entropy(logits, y, mask))
    out = []
    for h, i, j in zip(*np.nonzero(kept.mean(0) >= min_kept)):
        closed = gate.copy()
        closed[:, h, i, j] = 0.0
        patched = sj.forward(m.config, m.params, x, m.gate, mode="eval",
                             interventions={"blocks.0.attn.hook_gate": jnp.asarray(closed)})[0]
        out.append({"head": int(h), "query": int(i), "key": int(j), "kept": float(kept[:, h, i, j].mean()),
                    "logit": float(np.median(g[:, h, i, j][kept[:, h, i, j]])),
                    "ce_change": float(objective.cross_entropy(patched, y, mask)) - base})
    if m.config.position == "rope" and not bos:
        tie_needed(out, np.asarray(x), kept, g)
    return out


def tie_needed(rows: list[dict], tokens, kept, g) -> None:
    """Layer 0 of a RoPE model without absolute positions sees only tokens, so its gate logit is a function of
    (head, query token, key token, offset) alone: an edge shares its gate with every edge of the same class at other
    positions. Adds to each row ``tied``: the share of the problems keeping it whose class is also kept by an edge
    whose closing changes the answer CE by >= 1e-4 (closing the idle edge would close that one), and to the first
    row ``class_spread``: the largest spread of the gate logit within a class (~0 when the statement holds)."""
    import numpy as np

    def classes(r):  # the class of each problem that keeps the edge, and the edge's gate logit there
        h, i, j = r["head"], r["query"], r["key"]
        on = kept[:, h, i, j]
        return [(h, int(a), int(b), i - j) for a, b in zip(tokens[on, i], tokens[on, j])], g[on, h, i, j]

    needed = {c for r in rows if abs(r["ce_change"]) >= 1e-4 for c in classes(r)[0]}
    spread = {}
    for r in rows:
        pairs, logits = classes(r)
        r["tied"] = float(np.mean([c in needed for c in pairs])) if pairs else 0.0
        for c, v in zip(pairs, logits):
            lo, hi = spread.get(c, (v, v))
            spread[c] = (min(lo, v), max(hi, v))
    if rows:
        rows[0]["class_spread"] = float(max(hi - lo for lo, hi in spread.values()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="exported model directories (a run's model/)")
    p.add_argument("--map", action="store_true", help="also print layer 0's [query, key] map (kept edges a problem)")
    p.add_argument("--logits", action="store_true",
                   help="also list layer 0's kept edges: share of problems, median gate logit, answer-CE change when "
                        "closed (the edges the CE does not need, and how far their logits are from the threshold)")
    p.add_argument("--figure", help="draw each model's layer-0 map side by side into this PNG")
    p.add_argument("--labels", nargs="*", help="a title for each model in the figure (default: its path)")
    args = p.parse_args(argv)
    if args.labels and len(args.labels) != len(args.models):
        p.error(f"--labels: {len(args.labels)} titles for {len(args.models)} models")
    import numpy as np

    found = []
    for path in args.models:
        e = edges(path)
        found.append(e)
        total = sum(e["per_layer"])
        print(f"{path}: {total:.1f} of {e['causal']} edges a problem ({total / e['causal']:.2%}); per layer "
              f"{[round(x, 1) for x in e['per_layer']]}; layer 0 per head {[round(x, 1) for x in e['layer0_heads']]}"
              + ("" if e["layer0_bias"] is None else f", its gate bias {[round(x, 2) for x in e['layer0_bias']]}"))
        if args.map:
            print(np.array2string(e["layer0_map"], precision=2, suppress_small=True, max_line_width=200))
        if args.logits:
            rows = layer0_edges(path)
            idle = [r for r in rows if abs(r["ce_change"]) < 1e-4]
            print(f"  layer 0: {len(rows)} edges kept on >= 5% of problems; {len(idle)} of them change the answer CE "
                  f"by < 1e-4 when closed ({sum(r['kept'] for r in idle):.1f} edges a problem, median logit "
                  f"{np.median([r['logit'] for r in idle]) if idle else float('nan'):.1f})")
            if rows and "tied" in rows[0]:
                print(f"  RoPE layer 0: the gate logit is a function of (head, query token, key token, offset) "
                      f"(largest spread within a class {rows[0]['class_spread']:.1e}); "
                      f"{sum(r['kept'] * r['tied'] for r in idle):.1f} of the idle edges a problem share their class "
                      f"with a needed edge's")
            for r in rows:
                print(f"  head {r['head']} query {r['query']} key {r['key']}: kept {r['kept']:.2f}, logit "
                      f"{r['logit']:6.2f}, answer CE {r['ce_change']:+.5f} when closed")
    if args.figure:
        draw(found, args.labels or args.models, args.figure)


def draw(found: list, labels: list, path: str) -> None:
    """Layer 0's kept edges a problem (summed over its heads) at each (query, key) position, one panel a model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = ["a", "b", "+", "c", "d", "=", "s1", "s2", "s3", "s4"]  # the input positions of ``ab+cd=s1..s5``
    fig, axes = plt.subplots(1, len(found), figsize=(3.6 * len(found), 3.6), squeeze=False)
    vmax = max(float(e["layer0_map"].max()) for e in found)
    for ax, e, label in zip(axes[0], found, labels):
        im = ax.imshow(e["layer0_map"], cmap="viridis", vmin=0, vmax=vmax)
        total = sum(e["per_layer"])
        ax.set_title(f"{label}\n{total / e['causal']:.2%} of edges; layer 0: {e['per_layer'][0]:.1f} a problem",
                     fontsize=8)
        names = ["BOS"] * (len(e["layer0_map"]) - len(ticks)) + ticks  # a model trained with data.bos=true
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("key", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="kept edges a problem (sum over heads)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
