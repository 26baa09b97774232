"""Tokens/s of one SmolLM2-135M post-training step (T=64, batch 8, float32): sparsejax's own train step (full
fine-tuning, LoRA, LoRA + distillation to the dense teacher; and the dense step) against the same model in PyTorch
``transformers`` (dense SDPA, and the sparse method's train-mode formula registered as its attention function).

    .venv/bin/sparsejax data smollm2          # once
    python benchmarks/smollm2_step.py         # ~10 min on 2 cores
    python benchmarks/smollm2_step.py --repeats 2 --only jax-lora torch-sdpa
    python benchmarks/smollm2_step.py --only jax-full jax-lora-merged jax-lora jax-lora-mlp-merged jax-lora-mlp

Each variant runs in its own process (no shared thread pools or caches), after one warm-up step (compilation);
the table gives the median of ``--repeats`` steps and ratios against the sparsejax full fine-tuning step. LoRA
trains as a low-rank branch beside the frozen kernel (``lora.attach``); the ``-merged`` variants time the form used
before 2026-12-02 (``W + AB`` formed in the step, so the backward also forms each adapted kernel's full gradient). The
sparsejax steps are the library's (``Trainer.step_fn``: gated forward with sampled gates, CE + multiplier-weighted
density, AdamW update); the torch steps are forward + backward + AdamW. Torch "sparse": the materialised formula
of the method (softmax over causal keys, logistic-noise Bernoulli gate on ``s + b``, straight-through sigmoid, no
renormalisation, the density regulariser from ``sigmoid(s + b)``) in every attention layer.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "jax-full": "sparsejax sparse, full fine-tuning",
    "jax-lora": "sparsejax sparse, LoRA r=16 (attention)",
    "jax-lora-merged": "sparsejax sparse, LoRA r=16 (attention), adapters merged into W (before 2026-12-02)",
    "jax-lora-mlp": "sparsejax sparse, LoRA r=16 (attention + MLP)",
    "jax-lora-mlp-merged": "sparsejax sparse, LoRA r=16 (attention + MLP), adapters merged into W",
    "jax-lora-distill": "sparsejax sparse, LoRA r=16 + distillation",
    "jax-dense": "sparsejax dense, full fine-tuning",
    "torch-sdpa": "transformers dense (SDPA), full fine-tuning",
    "torch-sparse": "transformers + the sparse formula, full fine-tuning",
}


def _model_dir():
    from sparsejax.data.real_models import model_dir

    return model_dir("smollm2")


def run_jax(args, variant: str) -> float:
    import jax
    import numpy as np

    from sparsejax.config import load_config
    from sparsejax.data import batch_at
    from sparsejax.train import Trainer
    from sparsejax.seeds import step_noise

    m = _model_dir()
    over = [f"model.checkpoint={m}", f"data.tokenizer={m}/tokenizer.json", f"data.seq_len={args.seq}",
            f"data.batch_size={args.batch}", "data.eval_batches=1", "constraint.sense=density",
            "constraint.density_target=0.01", "gate.bias_lr=0.03"]
    mlp = "train.lora_modules=[attn.q,attn.k,attn.v,attn.o,mlp.gate,mlp.up,mlp.down]"
    if variant.endswith("-merged"):  # the training form before: W + AB formed, so the backward forms dW of W
        from sparsejax import lora
        lora.attach = lora.merge
    over += {"jax-full": [], "jax-lora": ["train.lora_rank=16"], "jax-lora-merged": ["train.lora_rank=16"],
             "jax-lora-mlp": ["train.lora_rank=16", mlp], "jax-lora-mlp-merged": ["train.lora_rank=16", mlp],
             "jax-lora-distill": ["train.lora_rank=16", "train.distill=1.0"],
             "jax-dense": ["gate.enabled=false", "constraint.method=none", "constraint.sense=ce",
                           "constraint.density_target=null"]}[variant]
    with tempfile.TemporaryDirectory() as tmp:
        run = Trainer(load_config("shakespeare_posttrain", over), f"{tmp}/run", progress=False)
        times = []
        with jax.set_mesh(run.mesh):
            for i in range(args.repeats + 1):
                batch = jax.tree.map(jax.numpy.asarray, batch_at(run.train_src, i, args.batch, 0))
                t0 = time.perf_counter()
                run.state, out = run.step_fn(run.state, run.frozen, batch, step_noise(1, i))
                jax.block_until_ready(out)
                times.append(time.perf_counter() - t0)
        assert np.isfinite(float(out["loss"]))
    return args.batch * args.seq / statistics.median(times[1:])


def _torch_sparse_attention(bias: float):
    import torch
    from torch_reference import gated_weights  # benchmarks/torch_reference.py

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        groups = query.shape[1] // key.shape[1]
        k, v = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        s = torch.matmul(query, k.transpose(2, 3)) * (query.shape[-1] ** -0.5)
        weights, module.density = gated_weights(s, bias)  # the density [B, H], for the regulariser
        return torch.matmul(weights, v).transpose(1, 2).contiguous(), None

    return attention


def run_torch(args, variant: str) -> float:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.AutoConfig.from_pretrained(_model_dir())
    impl = "sdpa"
    if variant == "torch-sparse":
        transformers.AttentionInterface.register("sparse_train", _torch_sparse_attention(3.0))
        impl = "sparse_train"
    model = transformers.AutoModelForCausalLM.from_pretrained(_model_dir(), attn_implementation=impl,
                                                              dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, config.vocab_size, (args.batch, args.seq + 1))
    attn = [m for m in model.modules() if m.__class__.__name__.endswith("Attention")]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(tokens[:, :-1], labels=tokens[:, :-1]).loss  # transformers shifts the labels
        if variant == "torch-sparse":
            loss = loss + 0.01 * torch.stack([m.density.mean() for m in attn]).mean()
        loss.backward()
        opt.step()

    times = []
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return args.batch * args.seq / statistics.median(times[1:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        tps = (run_torch if args.variant.startswith("torch") else run_jax)(args, args.variant)
        print(json.dumps({"tokens_per_s": tps}))
        return
    _model_dir()  # a clear error before any subprocess when the model is missing
    results = {}
    for variant in args.only:
        cmd = [sys.executable, __file__, "--seq", str(args.seq), "--batch", str(args.batch), "--repeats",
               str(args.repeats), "--variant", variant]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"]
        print(f"# done {variant}: {results[variant]:.1f} tokens/s", flush=True)
    ref = results.get("jax-full")
    print(f"# SmolLM2-135M post-training step: T={args.seq}, batch {args.batch}, float32, CPU, median of "
          f"{args.repeats} steps after one warm-up")
    print("| variant | tokens/s | x sparsejax full fine-tuning |")
    print("|---|---:|---:|")
    for v, tps in results.items():
        print(f"| {VARIANTS[v]} | {tps:.1f} | {tps / ref:.2f} |" if ref else f"| {VARIANTS[v]} | {tps:.1f} | - |")


if __name__ == "__main__":
    main()
