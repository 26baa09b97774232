"""Circuits, dense vs sparse: how many attention heads, and how many edges, explain 90% of the effect?

Tasks (generators in ``sparsejax/tasks.py``). ``--task ioi | greater_than | docstring``: templated tasks for a
model with a real tokenizer (``--tokenizer``, default the dense model directory's ``tokenizer.json``; e.g. GPT-2).
``--task addition`` (the toy models): ``ab+cd=`` and the first four answer digits, predicting the units
digit; the corrupted prompt changes ``d`` (the units digit of the second operand) to another digit, so the units
answer changes. Metric: ``logit[clean units digit] - logit[corrupted units digit]``.
``--task induction`` (any tokenizer): a random token sequence ``s`` of length n, then its repeat up to the last token:
``clean = s + s[:-1]``, answer ``s[-1]``; the corrupted prompt replaces the first half by another random sequence
``r`` (``r + s[:-1]``), whose induction answer would be ``r[-1]``. Metric: ``logit[s[-1]] - logit[r[-1]]`` at the
last position. Heads are ranked by exact activation patching (and scored by EAP, whose agreement is reported);
the curve keeps the embedding, every MLP and the top-k heads and patches the other heads with their corrupted
outputs. Edges (embedding / heads / MLPs -> q, k, v inputs of each head, MLP inputs, logits) are scored by EAP-IG
(5 steps) and the edge curve keeps the top-k edges (every other reader input gets the corrupted writer output);
``edges for 0.9`` is the smallest k reaching 0.9 (:func:`sparsejax.circuits.smallest_edge_circuit`). Eval gates
on the sparse model, recomputed on patched runs.

    python experiments/circuits.py --task addition --dense runs/ctl_explore/dense/model \
        --sparse runs/controllers_toy/pi_lrdecay/seed2/model --out runs/circuits_toy
    python experiments/circuits.py --dense runs/shakespeare/dense/model --sparse runs/long_d01/d0.01/model \
        --out runs/circuits
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


import numpy as np


def analyse(model, clean, corrupt, metric, target, attention_mask=None, rank: str = "exact",
            exact_subset: int = 20, seed: int = 0, with_edges: bool = True) -> dict:
    """``rank="exact"``: heads ranked by exact patching of every node and the head curve at every k (small models);
    ``rank="eap"``: heads ranked by node EAP, the head curve on a doubling grid, the smallest head circuit by
    bisection, and exact patching of ``exact_subset`` top-|EAP| heads plus as many random others to check the EAP
    scores (large models: one forward per evaluated point instead of one per head and per k). ``with_edges=False``:
    no edge-level analysis (EAP-IG edge scores and the edge-circuit search, one forward per evaluated circuit)."""
    from sparsejax import circuits

    c, p, g = model.config, model.params, model.gate
    pad = dict(attention_mask=attention_mask)   # a left-padded batch (templated tasks of several lengths) or None
    eap = circuits.eap_scores(c, p, g, clean, corrupt, metric, **pad)
    heads = [n for n in circuits.nodes(c) if n[0] == "head"]
    others = [n for n in circuits.nodes(c) if n[0] != "head"]
    if rank == "exact":
        exact = circuits.patching_effects(c, p, g, clean, corrupt, metric, **pad)
        ranked = sorted(heads, key=lambda n: exact[n])   # patching a helpful head lowers the metric: most negative first
        grid = list(range(len(heads) + 1))
        curve = circuits.explained_effects(c, p, g, clean, corrupt, metric, [others + ranked[:k] for k in grid], **pad)
        need = next((k for k, e in enumerate(curve) if e >= 0.9), None)
    else:
        ranked = sorted(heads, key=lambda n: eap[n])
        by_size = sorted(heads, key=lambda n: -abs(eap[n]))
        rest = np.random.default_rng(seed).permutation(len(heads) - exact_subset)[:exact_subset]
        checked = by_size[:exact_subset] + [by_size[exact_subset + i] for i in rest]
        exact = circuits.patching_effects(c, p, g, clean, corrupt, metric, only=checked, **pad)
        need, _ = circuits.smallest_head_circuit(c, p, g, clean, corrupt, metric, ranked, 0.9, **pad)
        grid = sorted({0, *(min(2 ** i, len(heads)) for i in range(len(heads).bit_length() + 1))})
        curve = circuits.explained_effects(c, p, g, clean, corrupt, metric, [others + ranked[:k] for k in grid], **pad)
    eap_checked = {n: eap[n] for n in exact}
    total = len(circuits.edges(c))
    egrid = sorted({min(2 ** i, total) for i in range(total.bit_length() + 1)})  # the same ks for every prompt set
    n_edges, edge_curve, grid_curve, kept, edge_check = None, {}, None, None, None
    if with_edges:
        edge_scores = circuits.edge_score_matrix(c, p, g, clean, corrupt, metric, method="eap-ig", steps=5, **pad)
        edge_eap = circuits.edge_score_matrix(c, p, g, clean, corrupt, metric, method="eap", **pad)
        # exact edge patching (one forward per edge) of the exact_subset top-|EAP-IG| edges and as many random others
        ws, rs, ok = circuits.writers(c), circuits.readers(c), circuits.allowed(c)
        flat = np.flatnonzero(ok.ravel())
        order = flat[np.argsort(-np.abs(edge_scores.ravel()[flat]), kind="stable")]
        pick = np.concatenate([order[:exact_subset], np.random.default_rng(seed).choice(
            order[exact_subset:], min(exact_subset, len(order) - exact_subset), replace=False)])
        chosen = [(ws[i // len(rs)], rs[i % len(rs)]) for i in pick]
        exact_e = circuits.edge_patching_effects(c, p, g, clean, corrupt, metric, only=chosen, **pad)
        at = lambda mat: {e: float(mat[ws.index(e[0]), rs.index(e[1])]) for e in exact_e}
        edge_check = {"edges_patched_exactly": len(exact_e),
                      "eap_ig_vs_exact_corr": circuits.correlation(at(edge_scores), exact_e),
                      "eap_vs_exact_corr": circuits.correlation(at(edge_eap), exact_e),
                      "eap_ig_top10_agreement": circuits.rank_agreement(at(edge_scores), exact_e, 10),
                      "exact": [[list(w), list(r), v] for (w, r), v in exact_e.items()]}
        n_edges, edge_curve = circuits.smallest_edge_circuit(c, p, g, clean, corrupt, metric, edge_scores, 0.9, **pad)
        todo = [k for k in egrid if k not in edge_curve]   # the search has evaluated the grid up to its crossing
        more = dict(zip(todo, circuits.edge_effect_curve(c, p, g, clean, corrupt, metric, edge_scores, todo, **pad)))
        grid_curve = [edge_curve.get(k, more.get(k)) for k in egrid]
        kept = circuits.top_edges(c, edge_scores, n_edges) if n_edges else None
    att = circuits.attention_attribution(c, p, g, clean, target, **pad)
    heads80, ranking = circuits.heads_for_share(att["per_head"], 0.8)
    mags = np.array([abs(v) for _, _, v in ranking])
    runs = circuits.EdgeCircuitEvaluator(c, p, g, clean, corrupt, metric, **pad)  # compiled already: no new program
    return {"m_clean": runs.m_clean, "m_corrupt": runs.m_corrupt, "curve": curve, "head_grid": grid,
            "heads_for_0.9": need, "head_ranking": rank, "heads_patched_exactly": len(exact),
            "ranked_heads": [list(n) for n in ranked], "eap_vs_exact_corr": circuits.correlation(eap_checked, exact),
            "top3_agreement": circuits.rank_agreement(eap_checked, exact, 3),
            "attribution_heads_for_0.8": heads80, "attribution_ranking": ranking,
            "attribution_cumulative_share": (np.cumsum(mags) / mags.sum()).tolist(),
            "edges_total": total, "edges_for_0.9": n_edges, "edge_score_check": edge_check,
            "edge_curve": {str(k): v for k, v in edge_curve.items()}, "edge_grid": egrid, "edge_grid_curve": grid_curve,
            "heads_in_edge_circuit": None if kept is None else len(circuits.circuit_heads(c, kept)),
            "edge_circuit": None if kept is None else [[list(w), list(r)] for w, r in circuits.edges(c)
                                                        if kept[circuits.writers(c).index(w),
                                                                circuits.readers(c).index(r)]],
            "edge_circuit_scores": None if kept is None else np.asarray(edge_scores)[np.asarray(kept)].tolist(),
            "exact": {str(k): v for k, v in exact.items()}, "eap": {str(k): v for k, v in eap.items()}}


MAX_DRAWN = 300  # a circuit graph draws at most this many of its edges (the strongest by |EAP-IG|)


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main(argv=None):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sparsejax as sj
    from sparsejax import circuits
    from sparsejax.files import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("induction", "addition", "ioi", "greater_than", "docstring"),
                   default="induction")
    p.add_argument("--tokenizer", help="tokenizer.json for ioi / greater_than / docstring (default: the dense "
                   "model directory's)")
    p.add_argument("--dense", default="runs/shakespeare/dense/model")
    p.add_argument("--sparse", default="runs/long_d01/d0.01/model")
    p.add_argument("--out", default="runs/circuits")
    p.add_argument("--examples", type=int, default=16)
    p.add_argument("--half", type=int, default=20, help="length n of the repeated sequence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sets", type=int, default=1, help="prompt sets (seeds seed .. seed + sets - 1): mean and spread "
                   "of the counts over them")
    p.add_argument("--text", help="a run's config.yaml: draw the sequences from its held-out text instead of random "
                   "tokens")
    p.add_argument("--rank-heads", choices=("exact", "eap"), default="exact", help="exact: patch every node and "
                   "evaluate the head curve at every k (small models); eap: rank heads by node EAP, the curve on a "
                   "doubling grid, exact patching on a subset to check it (models with hundreds of heads)")
    p.add_argument("--replot", action="store_true", help="only redraw the figures from OUT/results.json")
    p.add_argument("--no-edges", action="store_true", help="node-level analysis only (no EAP-IG edge scores or edge "
                   "circuits)")
    p.add_argument("--dense-from", metavar="RESULTS_JSON", help="take the dense model's analysis from an earlier "
                   "results.json of the same task settings (task, prompts, sets, seeds, ranking, dense model) instead "
                   "of recomputing it: only the sparse model runs")
    p.add_argument("--exact-subset", type=int, default=20, help="with --rank-heads eap: exact patching of this many "
                   "top-|EAP| heads and as many random others")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = json.loads((out / "results.json").read_text())
        from sparsejax.models import config_from_hf

        setup = argparse.Namespace(**{**results["setup"], "replot": True})
        figures(results, setup, out, {name: config_from_hf(json.loads((Path(getattr(setup, name)) /
                                                                        "config.json").read_text()))
                                      for name in ("dense", "sparse")})
        return
    from sparsejax import tasks

    def make_task(seed, vocab):
        if args.text:  # induction on passages of held-out text (s) and other passages (r)
            import tempfile

            from sparsejax.config import load_config
            from sparsejax.data import batch_at
            from sparsejax.train.data import build_data

            cfg = load_config(args.text)
            cfg.data.repeat = 0.0  # plain held-out text (a run trained on repeated passages draws them itself)
            with tempfile.TemporaryDirectory() as tmp:
                _, val, _ = build_data(cfg, Path(tmp))
                rows = np.asarray(batch_at(val, 0, 2 * args.examples, seed=seed)["tokens"])
            s, r = rows[:args.examples, :args.half], rows[args.examples:, :args.half]
            task = tasks.Task(np.concatenate([s, s[:, :-1]], 1).astype(np.int32),
                              np.concatenate([r, s[:, :-1]], 1).astype(np.int32),
                              circuits.logit_diff(s[:, -1], r[:, -1]), s[:, -1], r[:, -1], [])
        elif args.task == "addition":
            task = tasks.addition(args.examples, seed)
        elif args.task in ("ioi", "greater_than", "docstring"):  # templated tasks (sparsejax/tasks.py)
            from sparsejax.data.text import load_tokenizer

            task = getattr(tasks, args.task)(load_tokenizer(args.tokenizer or args.dense), args.examples, seed)
        else:
            task = tasks.induction(vocab, args.examples, args.half, seed)
        return task

    results, over_sets, curves, configs, prompt_sets = {}, {}, {}, {}, None
    models = [("dense", args.dense), ("sparse", args.sparse)]
    if args.dense_from:  # the dense half of an earlier run with the same settings
        from sparsejax.models import config_from_hf

        earlier = json.loads(Path(args.dense_from).read_text())
        same = ("task", "examples", "half", "seed", "sets", "text", "rank_heads", "no_edges", "exact_subset")
        differ = {k: (earlier["setup"].get(k), getattr(args, k)) for k in same if earlier["setup"].get(k) != getattr(args, k)}
        if Path(earlier["setup"]["dense"]).expanduser().resolve() != Path(args.dense).expanduser().resolve():
            differ["dense"] = (earlier["setup"]["dense"], args.dense)
        if differ:
            raise SystemExit(f"--dense-from {args.dense_from} was run with other settings (earlier, now): {differ}")
        results["dense"] = earlier["dense"]
        over_sets["dense"], curves["dense"] = earlier["dense"]["over_sets"], earlier["dense"]["curves_over_sets"]
        configs["dense"] = config_from_hf(json.loads((Path(args.dense).expanduser() / "config.json").read_text()))
        models = models[1:]
        print(f"dense: from {args.dense_from} (sets {over_sets['dense']})", flush=True)
    for name, path in models:  # one model in memory at a time
        model = sj.from_pretrained(path)
        configs[name] = model.config
        if prompt_sets is None:  # seeds seed, seed + 1, ... (the dense vocabulary); the first set's analysis is kept
            vocab = (configs.get("dense") or model.config).vocab_size
            prompt_sets = [make_task(args.seed + k, vocab) for k in range(args.sets)]
        over_sets[name], curves[name] = [], []
        for k, task in enumerate(prompt_sets):
            start = time.perf_counter()
            res = analyse(model, jnp.asarray(task.clean), jnp.asarray(task.corrupt), task.metric, task.good,
                          task.attention_mask, args.rank_heads, args.exact_subset, args.seed + k, not args.no_edges)
            keys = ("heads_for_0.9", "edges_for_0.9", "heads_in_edge_circuit", "attribution_heads_for_0.8")
            over_sets[name].append({key: res[key] for key in keys})
            curves[name].append({"curve": res["curve"], "edge_grid_curve": res["edge_grid_curve"]})
            if k == 0:
                results[name] = res
            print(f"set {k}: {name}: {over_sets[name][-1]} ({time.perf_counter() - start:.0f} s, peak RSS "
                  f"{peak_rss_gb():.1f} GB)", flush=True)
        del model
        jax.clear_caches()  # this model's compiled programs: of no use to the next one
    for name in configs:
        res = results[name]
        if name == "dense" and args.dense_from:
            continue  # as it was computed
        res["over_sets"] = over_sets[name]
        res["curves_over_sets"] = curves[name]
        values = lambda key: [o[key] for o in over_sets[name] if o[key] is not None]
        res["mean_sd_over_sets"] = {key: [float(np.mean(values(key))), float(np.std(values(key)))] if values(key)
                                    else [None, None] for key in over_sets[name][0]}
        print(f"{name}: metric clean {res['m_clean']:.3f} corrupt {res['m_corrupt']:.3f}; heads for 0.9: "
              f"{res['heads_for_0.9']} of {len(res['ranked_heads'])}; edges for 0.9: {res['edges_for_0.9']} of "
              f"{res['edges_total']} ({res['heads_in_edge_circuit']} heads touched); attention attribution: "
              f"{res['attribution_heads_for_0.8']} heads for 80%; EAP~exact corr (heads) "
              f"{res['eap_vs_exact_corr']:.3f}" + ("" if not res["edge_score_check"] else
              f"; edges, corr with exact patching of {res['edge_score_check']['edges_patched_exactly']}: EAP-IG "
              f"{res['edge_score_check']['eap_ig_vs_exact_corr']:.3f}, EAP {res['edge_score_check']['eap_vs_exact_corr']:.3f}"),
              flush=True)
    results["setup"] = vars(args)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))

    figures(results, args, out, configs)


def figures(results: dict, args, out: Path, configs: dict) -> None:
    """The explained-effect curves (heads kept, edges kept), the attention-attribution shares and the circuit
    graphs, from ``results`` (what ``results.json`` holds)."""
    import numpy as np

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = any(results[name]["edge_grid_curve"] is not None for name in configs)
    fig, axes = plt.subplots(1, 3 if edges else 2, figsize=(16 if edges else 11, 4))
    ax, bx, cx = (axes[0], axes[1], axes[2]) if edges else (axes[0], None, axes[1])
    mean_sd = lambda name, key: results[name]["mean_sd_over_sets"][key]
    count = lambda name, key: (f"{mean_sd(name, key)[0]:.1f} ± {mean_sd(name, key)[1]:.1f}" if args.sets > 1
                               else f"{results[name][key]}")
    for name in configs:  # mean over the prompt sets, shaded: +- one standard deviation
        res = results[name]
        for a, xs, key in ((ax, np.asarray(res["head_grid"]), "curve"), (bx, np.asarray(res["edge_grid"]),
                                                                            "edge_grid_curve")):
            if a is None:  # --no-edges
                continue
            ys = np.array([c[key] for c in res["curves_over_sets"]])
            label = (f"{name} (0.9 at {count(name, 'heads_for_0.9')} heads)" if key == "curve" else
                     f"{name} (0.9 at {count(name, 'edges_for_0.9')} of {res['edges_total']} edges)")
            line, = a.plot(xs, ys.mean(0), "o-", ms=3, label=label)
            if len(ys) > 1:
                a.fill_between(xs, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), color=line.get_color(), alpha=0.2)
        share = res["attribution_cumulative_share"]
        cx.plot(range(1, len(share) + 1), share, "o-", label=f"{name} (80% at {res['attribution_heads_for_0.8']} heads)")
    for a in (ax, bx) if edges else (ax,):
        a.axhline(0.9, color="gray", ls="--", lw=1)
        a.set_ylabel("explained effect")
        a.legend()
    cx.axhline(0.8, color="gray", ls="--", lw=1)
    cx.set_xlabel("heads, ranked by |direct attribution| to the answer logit")
    cx.set_ylabel("share of total |attribution|")
    cx.legend()
    ax.set_xlabel(f"attention heads kept (ranked by {'exact patching' if args.rank_heads == 'exact' else 'EAP'}; "
                  "embedding and MLPs kept)")
    if args.rank_heads == "eap":
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
    if edges:
        bx.set_xscale("log")
        bx.set_xlabel("edges kept (top-k by EAP-IG; log scale)")
    ratio = lambda key: (f"{mean_sd('dense', key)[0] / mean_sd('sparse', key)[0]:.1f}x"
                         if mean_sd("dense", key)[0] and mean_sd("sparse", key)[0] else "n/a")
    what = {"addition": "addition, units digit (corrupt: 2nd operand's units digit)",
            "induction": f"induction (repeat of {args.half} tokens of "
                         f"{'held-out text' if args.text else 'random tokens'})"}.get(args.task, args.task)
    sets = f" x {args.sets} sets (mean, ± sd shaded)" if args.sets > 1 else ""
    fig.suptitle(f"{what}, {args.examples} prompts{sets}; at 0.9 explained effect, dense/sparse: heads "
                 f"{ratio('heads_for_0.9')}, edges {ratio('edges_for_0.9')}")
    fig.tight_layout()
    name = {"addition": "addition_circuits.png", "induction": "induction_heads.png"}.get(args.task,
                                                                                          f"{args.task}_circuits.png")
    fig.savefig(out / name, dpi=120)
    print(f"wrote {out / 'results.json'} and {out / name}")
    from sparsejax import circuits, report

    for name, config in configs.items():  # the smallest edge circuit with 0.9 explained effect, as a graph
        res = results[name]
        if res.get("edge_circuit"):  # (a results.json published without its edge lists has none)
            path = out / f"{args.task}_{name}_circuit.png"
            ws, rs = circuits.writers(config), circuits.readers(config)
            keep = np.zeros((len(ws), len(rs)), bool)
            scores = np.zeros(keep.shape)
            for (w, r), v in zip(res["edge_circuit"], res.get("edge_circuit_scores") or [1.0] * len(res["edge_circuit"])):
                keep[ws.index(tuple(w)), rs.index(tuple(r))] = True
                scores[ws.index(tuple(w)), rs.index(tuple(r))] = v
            strongest = MAX_DRAWN if res.get("edge_circuit_scores") else None  # (older results: every edge)
            report.draw_circuit(config, keep, path, scores=scores, max_edges=strongest,
                                title=f"{name}: {res['edges_for_0.9']} edges for 0.9 explained effect "
                                f"({res['heads_in_edge_circuit']} heads)")
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
