"""Induction circuits, dense vs sparse: how many attention heads explain 90% of the effect?

Task (works with any tokenizer): a random token sequence ``s`` of length n, then its repeat up to the last token:
``clean = s + s[:-1]``, answer ``s[-1]``; the corrupted prompt replaces the first half by another random sequence
``r`` (``r + s[:-1]``), whose induction answer would be ``r[-1]``. Metric: ``logit[s[-1]] - logit[r[-1]]`` at the
last position. Heads are ranked by exact activation patching (and scored by EAP, whose agreement is reported);
the curve keeps the embedding, every MLP and the top-k heads and patches the other heads with their corrupted
outputs. Eval gates on the sparse model, recomputed on patched runs.

    python experiments/circuits.py --dense runs/shakespeare/dense/model --sparse runs/long_d01/d0.01/model \
        --out runs/circuits
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def analyse(model, clean, corrupt, metric) -> dict:
    from sparsejax import circuits

    c, p, g = model.config, model.params, model.gate
    exact = circuits.patching_effects(c, p, g, clean, corrupt, metric)
    eap = circuits.eap_scores(c, p, g, clean, corrupt, metric)
    heads = [n for n in circuits.nodes(c) if n[0] == "head"]
    others = [n for n in circuits.nodes(c) if n[0] != "head"]
    ranked = sorted(heads, key=lambda n: exact[n])   # patching a helpful head lowers the metric: most negative first
    curve = [circuits.explained_effect(c, p, g, clean, corrupt, metric, others + ranked[:k])
             for k in range(len(heads) + 1)]
    need = next((k for k, e in enumerate(curve) if e >= 0.9), None)
    import jax.numpy as jnp
    from sparsejax.models import forward

    m_clean = float(jnp.mean(metric(forward(c, p, clean, g, mode="eval")[0])))
    m_corrupt = float(jnp.mean(metric(forward(c, p, corrupt, g, mode="eval")[0])))
    return {"m_clean": m_clean, "m_corrupt": m_corrupt, "curve": curve, "heads_for_0.9": need,
            "ranked_heads": [list(n) for n in ranked], "eap_vs_exact_corr": circuits.correlation(eap, exact),
            "top3_agreement": circuits.rank_agreement(eap, exact, 3),
            "exact": {str(k): v for k, v in exact.items()}, "eap": {str(k): v for k, v in eap.items()}}


def main(argv=None):
    import jax.numpy as jnp
    import numpy as np

    import sparsejax as sj
    from sparsejax import circuits
    from sparsejax.train.checkpointing import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dense", default="runs/shakespeare/dense/model")
    p.add_argument("--sparse", default="runs/long_d01/d0.01/model")
    p.add_argument("--out", default="runs/circuits")
    p.add_argument("--examples", type=int, default=16)
    p.add_argument("--half", type=int, default=20, help="length n of the repeated sequence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text", help="a run's config.yaml: draw the sequences from its held-out text instead of random "
                   "tokens")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = {"dense": sj.from_pretrained(args.dense), "sparse": sj.from_pretrained(args.sparse)}
    vocab = models["dense"].config.vocab_size
    rng = np.random.default_rng(args.seed)
    if args.text:  # passages of held-out text (s) and other passages (r)
        import tempfile

        from sparsejax.config import load_config
        from sparsejax.data import batch_at
        from sparsejax.train.state import build_data

        cfg = load_config(args.text)
        with tempfile.TemporaryDirectory() as tmp:
            _, val, _ = build_data(cfg, Path(tmp))
            rows = np.asarray(batch_at(val, 0, 2 * args.examples, seed=args.seed)["tokens"])
        s, r = rows[:args.examples, :args.half], rows[args.examples:, :args.half]
    else:
        s = rng.integers(vocab // 8, vocab, size=(args.examples, args.half))  # skip the lowest ids (bytes/specials)
        r = rng.integers(vocab // 8, vocab, size=(args.examples, args.half))
    clean = jnp.asarray(np.concatenate([s, s[:, :-1]], 1), jnp.int32)
    corrupt = jnp.asarray(np.concatenate([r, s[:, :-1]], 1), jnp.int32)
    metric = circuits.logit_diff(s[:, -1], r[:, -1])
    results = {}
    for name, model in models.items():
        results[name] = analyse(model, clean, corrupt, metric)
        res = results[name]
        print(f"{name}: metric clean {res['m_clean']:.3f} corrupt {res['m_corrupt']:.3f}; heads for 0.9: "
              f"{res['heads_for_0.9']} of {len(res['ranked_heads'])}; EAP~exact corr {res['eap_vs_exact_corr']:.3f}",
              flush=True)
    results["setup"] = vars(args)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in models:
        curve = results[name]["curve"]
        ax.plot(range(len(curve)), curve, "o-", label=f"{name} (0.9 at {results[name]['heads_for_0.9']} heads)")
    ax.axhline(0.9, color="gray", ls="--", lw=1)
    ax.set_xlabel("attention heads kept (ranked by exact patching; embedding and MLPs kept)")
    ax.set_ylabel("explained effect")
    what = "held-out text" if args.text else "random tokens"
    ax.set_title(f"induction (repeat of {args.half} tokens of {what}), {args.examples} prompts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "induction_heads.png", dpi=120)
    print(f"wrote {out / 'results.json'} and {out / 'induction_heads.png'}")


if __name__ == "__main__":
    main()
