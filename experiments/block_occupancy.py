"""Block occupancy of trained sparse models: per layer and tile size, the share of the (query tile, key tile) pairs
a causal kernel visits that hold no open edge (eval gates) on held-out data, and the share of causal (query, key)
pairs inside such tiles (the value-product work that exact block-skipping inference skips; an upper bound on what
an accelerator saves in that pass). Runs of issue H as input.

    python experiments/block_occupancy.py --runs runs/toy/sparse runs/long_d01/d0.01 --out runs/block_occupancy

Writes ``results.json`` and ``table.md`` into ``--out`` and prints the table.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def occupancy(run_dir: Path, blocks, batches: int) -> dict:
    import jax
    import numpy as np

    import sparsejax as sj
    from block_skipping_kernel import tile_occupancy  # experiments/ (this script's own folder)
    from sparsejax.config import load_config
    from sparsejax.data import batch_at
    from sparsejax.train import RunDir, build_data

    cfg = load_config(RunDir(run_dir).config)
    model = sj.from_pretrained(RunDir(run_dir).model)
    if model.gate is None:
        raise SystemExit(f"{run_dir}/model has no gate (a dense model): give a sparse run")
    with tempfile.TemporaryDirectory() as tmp:
        _, val, _ = build_data(cfg, Path(tmp))
        n = min(batches, max(1, len(val) // cfg.data.batch_size))
        fwd = jax.jit(lambda tokens: sj.forward(model.config, model.params, tokens, model.gate, mode="eval",
                                                capture="blocks.*.attn.hook_adjacency")[1]["captures"])
        per_layer = {}
        for i in range(n):
            tokens = batch_at(val, i, cfg.data.batch_size, seed=0)["tokens"][:, :-1]
            caps = jax.device_get(fwd(tokens))
            for name, adj in caps.items():
                layer = int(name.split(".")[1])
                per_layer.setdefault(layer, []).append(np.asarray(adj))
    t = next(iter(per_layer.values()))[0].shape[-1]
    rows = []
    for layer in sorted(per_layer):
        adj = np.concatenate(per_layer[layer])
        for block in blocks:
            if block > t:
                continue
            occ = tile_occupancy(adj, block)
            rows.append({"layer": layer, "edge_density": float(adj[..., np.tril(np.ones((t, t), bool))].mean()),
                         **occ})
    return {"run": str(run_dir), "seq": t, "examples": n * cfg.data.batch_size, "rows": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run directories with model/ and config.yaml")
    p.add_argument("--out", default="runs/block_occupancy")
    p.add_argument("--blocks", type=int, nargs="*", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--batches", type=int, default=4, help="held-out batches per run")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [occupancy(Path(r), args.blocks, args.batches) for r in args.runs]
    lines = ["| run | T | layer | layer edge density | tile | empty tiles | causal pairs in empty tiles |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for r in res["rows"]:
            lines.append(f"| {res['run']} | {res['seq']} | {r['layer']} | {r['edge_density']:.4f} | {r['block']} | "
                         f"{r['empty_tile_share']:.3f} | {r['skipped_pair_share']:.3f} |")
    table = "\n".join(lines)
    from sparsejax.files import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    atomic_write_text(out / "table.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
