"""The scaling plan as a table: ``sparsejax plan`` for the README's setups (context 2048 unless the model's is
shorter; global batch = one sequence per data-parallel device unless stated), each compiled for its simulated mesh.

    python experiments/plan_table.py --out runs/plan        # writes results.json and table.md, prints the table

Budgets: a TPU v5e-16 slice (16 devices x 16 GiB), one 8-GPU box (8 x 80 GiB), one 80 GiB GPU.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

GIB = 2**30
# (label, shape, mesh, budget GiB, overrides)
FULL = ["model.dtype=bfloat16", "model.remat=full", "train.distill=1.0"]
SETUPS = [
    ("OLMo-7B full post-training + distillation", "olmo-7b", {"fsdp": 16}, 16, FULL + ["data.batch_size=16"]),
    ("Llama-2-7B full post-training + distillation", "llama-2-7b", {"fsdp": 16}, 16, FULL + ["data.batch_size=16"]),
    ("OLMo-7B full post-training + distillation", "olmo-7b", {"fsdp": 8}, 80, FULL + ["data.batch_size=8"]),
    ("Llama-2-7B full post-training + distillation", "llama-2-7b", {"fsdp": 8}, 80, FULL + ["data.batch_size=8"]),
    ("OLMo-7B LoRA r=16 + distillation", "olmo-7b", {"data": 1}, 80,
     FULL + ["train.lora_rank=16", "data.batch_size=1"]),
    ("GPT-2 small full post-training", "gpt2", {"data": 1}, 80, ["data.batch_size=8", "data.seq_len=1024"]),
    ("GPT-2 small full post-training", "gpt2", {"data": 8}, 80, ["data.batch_size=64", "data.seq_len=1024"]),
    ("Llama-3.2-1B full post-training", "llama-3.2-1b", {"data": 1}, 80,
     ["model.dtype=bfloat16", "model.remat=full", "data.batch_size=4"]),
    ("Llama-3.2-1B full post-training", "llama-3.2-1b", {"fsdp": 8}, 80,
     ["model.dtype=bfloat16", "model.remat=full", "data.batch_size=32"]),
    # the 16 x 16 GiB slice with tensor parallelism (for setups that do not fit with FSDP alone)
    ("OLMo-7B full post-training + distillation", "olmo-7b", {"fsdp": 8, "tensor": 2}, 16,
     FULL + ["data.batch_size=16"]),
    ("OLMo-7B full post-training + distillation", "olmo-7b", {"fsdp": 4, "tensor": 4}, 16,
     FULL + ["data.batch_size=16"]),
]


def main(argv=None):
    from sparsejax.plan import parse_mesh, plan_overrides, run_plan
    from sparsejax.files import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/plan")
    p.add_argument("--only", type=int, nargs="*", help="indices of SETUPS to run")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for i, (label, shape, mesh, budget, extra) in enumerate(SETUPS):
        if args.only is not None and i not in args.only:
            continue
        key = f"{i}"
        if key in done:
            continue
        m = parse_mesh([f"{k}={v}" for k, v in mesh.items()])
        seq = ["data.seq_len=2048"] if not any(x.startswith("data.seq_len") for x in extra) else []
        overrides = ["data.kind=text", "data.path=unused", "data.tokenizer=unused", *seq, *extra,
                     *plan_overrides(shape, m)]
        try:
            res = run_plan("gpt2_small", overrides, m["data"] * m["fsdp"] * m["tensor"])
        except RuntimeError as e:
            res = {"error": str(e)}
        res.update(label=label, shape=shape, budget_gib=budget, overrides=overrides)
        done[key] = res
        atomic_write_text(out / "results.json", json.dumps(done, indent=1))
        print(label, shape, mesh, res.get("bytes_per_device", 0) / GIB, res.get("error", ""), flush=True)
    lines = ["| setup | shape | mesh (devices) | global batch x context | params (B) | trainable (B) | per device GiB "
             "(args + out + temp - alias) | budget GiB | fits | model TFLOP/step |", "|---|---|---|---|---:|---:|---|---:|---|---:|"]
    for key in sorted(done, key=int):
        r = done[key]
        if "error" in r:
            lines.append(f"| {r['label']} | {r['shape']} | — | — | — | — | failed: {r['error'][:80]} | "
                         f"{r['budget_gib']} | — | — |")
            continue
        mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1) or "1"
        per = r["bytes_per_device"] / GIB
        lines.append(
            f"| {r['label']} | {r['shape']} | {mesh} ({r['devices']}) | {r['global_batch']} x {r['seq_len']} | "
            f"{r['params'] / 1e9:.2f} | {r['trainable_params'] / 1e9:.3f} | {per:.1f} = {r['argument_bytes'] / GIB:.1f} + "
            f"{r['output_bytes'] / GIB:.1f} + {r['temp_bytes'] / GIB:.1f} - {r['alias_bytes'] / GIB:.1f} | "
            f"{r['budget_gib']} | {'yes' if per <= r['budget_gib'] else '**no**'} | {r['flops_per_step'] / 1e12:.0f} |")
    table = "\n".join(lines)
    atomic_write_text(out / "table.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
