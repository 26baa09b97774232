"""Tokens/s of a GPT-2-small-shaped fwd+bwd step: sparsejax dense vs sparse (train mode) vs transformers (torch).

    python benchmarks/model_step.py                 # 12 layers, d=768, 12 heads, vocab 50304, T=256, batch 1
    python benchmarks/model_step.py --layers 2      # quicker

Each variant runs in its own process (no shared thread pools or caches); the table gives ratios.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def run_jax(args, sparse: bool) -> float:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sparsejax as sj

    cfg = sj.ModelConfig(family="gpt2", vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                         n_heads=args.heads, n_kv_heads=args.heads, head_dim=args.d_model // args.heads,
                         d_ff=4 * args.d_model, max_position=1024, norm="layernorm", mlp="gelu",
                         activation="gelu_tanh", position="learned", qkv_bias=True, out_bias=True, mlp_bias=True,
                         tie_embeddings=True)
    params = sj.init_params(cfg, jax.random.PRNGKey(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.seq + 1)))
    gate = sj.make_gate(2.0) if sparse else None

    def loss(p, toks, seed):
        logits, aux = sj.forward(cfg, p, toks[:, :-1], gate=gate, mode="train", seed=seed)
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), toks[:, 1:, None], -1).mean()
        return ce + 0.1 * aux["density"].mean()

    step = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(step(params, tokens, 0))
    times = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, tokens, i + 1))
        times.append(time.perf_counter() - t0)
    return args.batch * args.seq / statistics.median(times)


def run_torch(args) -> float:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=args.vocab, n_embd=args.d_model, n_layer=args.layers, n_head=args.heads,
                                  n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(cfg).train()
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1))

    def step():
        model.zero_grad(set_to_none=True)
        out = model(tokens[:, :-1], labels=tokens[:, :-1])
        out.loss.backward()

    step()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return args.batch * args.seq / statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variant", choices=["jax-dense", "jax-sparse", "torch-dense"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        tps = run_torch(args) if args.variant == "torch-dense" else run_jax(args, args.variant == "jax-sparse")
        print(json.dumps({"tokens_per_s": tps}))
        return
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = {}
    for variant in ("jax-dense", "jax-sparse", "torch-dense"):
        out = subprocess.run([sys.executable, __file__, *forwarded, "--variant", variant], capture_output=True,
                             text=True)
        if out.returncode:
            if variant == "torch-dense" and "No module named" in out.stderr:
                print("# torch/transformers not installed: skipping the torch row")
                continue
            sys.exit(out.stderr)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"]
        print(f"# done {variant}", flush=True)
    print(f"# GPT-2-shaped fwd+bwd: {args.layers} layers, d={args.d_model}, {args.heads} heads, vocab {args.vocab}, "
          f"T={args.seq}, batch {args.batch}, f32, CPU")
    print("| variant | tokens/s | x sparsejax dense |")
    print("|---|---:|---:|")
    names = {"jax-dense": "sparsejax dense", "jax-sparse": "sparsejax sparse (train mode)",
             "torch-dense": "transformers GPT-2 dense (torch)"}
    for v, tps in results.items():
        print(f"| {names[v]} | {tps:.0f} | {tps / results['jax-dense']:.2f} |")
    if "jax-sparse" in results:
        print(f"\nsparse/dense step-time ratio: {results['jax-dense'] / results['jax-sparse']:.2f} (goal <= 1.15)")
    if "torch-dense" in results:
        print(f"sparsejax sparse / torch dense tokens/s: {results['jax-sparse'] / results['torch-dense']:.2f} (goal >= 1.0)")


if __name__ == "__main__":
    main()
