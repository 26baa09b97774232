"""Sparse attention speed and memory: fwd+bwd, train mode, against dense attention, in one process.

    python benchmarks/attention.py            # T = 256 .. 8192, 12 heads of 64
    python benchmarks/attention.py --small    # T = 256, 512, 1024 (the README's main job until the toy run lands)

Columns: median fwd+bwd wall time (ms; repeats interleaved across implementations) and XLA temp memory of the compiled fwd+bwd (MiB) per implementation;
ratios are against jax's dense ``jax.nn.dot_product_attention`` at the same T. Where torch is installed (the
``reference`` extra) it also times the paper's formula written in plain PyTorch and torch's fused dense
``scaled_dot_product_attention`` (torch memory is not measured on CPU: no allocator statistics).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import sparsejax as sj


def _time_round_robin(cases: dict, repeats: int) -> dict:
    """Median wall time (ms) of each ``name -> (fn, args, block)``, repeats interleaved across the cases so that
    machine drift (frequency, other load) hits every implementation alike."""
    for fn, args, block in cases.values():
        block(fn(*args))  # compile / warm up
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (fn, args, block) in cases.items():
            t0 = time.perf_counter()
            block(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def jax_case(impl: str, t: int, heads: int, dim: int, bias: float):
    def loss(q, k, v):
        if impl == "dense":
            return jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=True))
        out, st = sj.sparse_attention(q, k, v, bias, mode="train", seed=0, implementation=impl)
        return jnp.sum(out) + jnp.sum(st.expected_density)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def temp_mib(fn, *args) -> float:
    return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes / 2**20


def torch_cases(heads: int, dim: int, bias: float):
    try:
        import torch
        from torch_reference import gated_weights  # benchmarks/torch_reference.py
    except ImportError:
        return {}
    torch.set_num_threads(max(1, len(__import__("os").sched_getaffinity(0))))

    def plain(q, k, v):  # the paper's formula as a PyTorch user would write it (materialised T x T)
        weights, density = gated_weights(torch.einsum("bthd,bshd->bhts", q, k) / dim**0.5, bias)
        return torch.einsum("bhts,bshd->bthd", weights, v).sum() + density.sum()

    def sdpa(q, k, v):
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                               v.transpose(1, 2), is_causal=True)
        return out.sum()

    def wrap(f):
        def step(q, k, v):
            for x in (q, k, v):
                x.grad = None
            f(q, k, v).backward()
            return q.grad
        return step

    def make_inputs(t):
        g = torch.Generator().manual_seed(0)
        return [torch.randn(1, t, heads, dim, generator=g, requires_grad=True) for _ in range(3)]

    return {"torch plain formula": (wrap(plain), make_inputs), "torch fused SDPA (dense)": (wrap(sdpa), make_inputs)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="T in 256, 512, 1024 only")
    parser.add_argument("--seq", type=int, nargs="*", help="sequence lengths (default 256..8192)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--bias", type=float, default=2.0, help="gate bias (all gates start mostly open)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-reference-seq", type=int, default=4096,
                        help="longest T to run the materialised implementations (memory is still reported)")
    args = parser.parse_args(argv)
    seqs = args.seq or ([256, 512, 1024] if args.small else [256, 512, 1024, 2048, 4096, 8192])
    print(f"# sparse attention fwd+bwd, train mode, batch 1, {args.heads} heads x {args.dim}, causal, f32")
    print(f"# machine: {platform.machine()} {platform.processor() or ''} cpus={len(__import__('os').sched_getaffinity(0))}"
          f" jax {jax.__version__} backend={jax.default_backend()}")
    torch_impls = torch_cases(args.heads, args.dim, args.bias)
    rows = []
    for t in seqs:
        key = jax.random.PRNGKey(t)
        q, k, v = (jax.random.normal(kk, (1, t, args.heads, args.dim)) for kk in jax.random.split(key, 3))
        names = {"dense": "jax dense dot_product_attention", "chunked": "sparsejax chunked (default)",
                 "reference": "sparsejax reference"}
        cases, results = {}, {}
        for impl, name in names.items():
            fn = jax_case(impl, t, args.heads, args.dim, args.bias)
            results[name] = [float("nan"), temp_mib(fn, q, k, v)]
            if not (impl in ("reference", "dense") and t > args.max_reference_seq):
                cases[name] = (fn, (q, k, v), jax.block_until_ready)
        for name, (step, make_inputs) in torch_impls.items():
            results[name] = [float("nan"), float("nan")]
            if not ("plain" in name and t > args.max_reference_seq):
                cases[name] = (step, make_inputs(t), lambda x: x)
        for name, ms in _time_round_robin(cases, args.repeats).items():
            results[name][0] = ms
        base_ms, base_mem = results["jax dense dot_product_attention"]
        for name, (ms, mem) in results.items():
            rows.append((t, name, ms, ms / base_ms if base_ms == base_ms else float("nan"), mem,
                         mem / base_mem if mem == mem else float("nan")))
        print(f"# done T={t}", flush=True)

    fmt = lambda x, spec: "—" if x != x else format(x, spec)
    print()
    print("| T | implementation | fwd+bwd ms | x jax dense | temp MiB | x jax dense mem |")
    print("|---:|---|---:|---:|---:|---:|")
    for t, name, ms, r, mem, rm in rows:
        print(f"| {t} | {name} | {fmt(ms, '.1f')} | {fmt(r, '.2f')} | {fmt(mem, '.1f')} | {fmt(rm, '.2f')} |")
    # the issue's goal ratios at the largest T <= 1024 and at the largest T
    by = {(t, n): (ms, mem) for t, n, ms, _, mem, _ in rows}
    t0 = max(t for t in seqs if t <= 1024)
    c = by[(t0, "sparsejax chunked (default)")][0]
    print()
    print(f"goals at T={t0}: chunked / jax dense = {c / by[(t0, 'jax dense dot_product_attention')][0]:.2f} (<= 1)")
    if torch_impls:
        print(f"  torch plain formula / chunked = {by[(t0, 'torch plain formula')][0] / c:.2f} (>= 4)")
        print(f"  chunked / torch fused SDPA = {c / by[(t0, 'torch fused SDPA (dense)')][0]:.2f} (<= 2)")
    t1 = max(seqs)
    print(f"memory at T={t1}: chunked / reference temp = "
          f"{by[(t1, 'sparsejax chunked (default)')][1] / by[(t1, 'sparsejax reference')][1]:.4f} (<= 0.125)")


if __name__ == "__main__":
    main()
