"""Block-size / launch-parameter sweep of the fused kernel on one accelerator, T=4096 bf16 (fwd and fwd+bwd),
with the kernel's dense (no gate) and eval-gate variants to separate the gate's cost from the kernel's.

    PYTHONPATH=. python benchmarks/kernel_tuning.py [--seq 4096]
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sparsejax as sj  # noqa: E402


def timed(fn, args, repeats=10):
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    shape = (a.batch, a.seq, a.heads, a.dim)
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.bfloat16) for _ in range(3))
    print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}, B={a.batch} T={a.seq} H={a.heads} D={a.dim} bf16")

    def fns(attend):
        fwd = jax.jit(lambda q, k, v: attend(q, k, v)[0])
        def loss(q, k, v):
            out, dens = attend(q, k, v)
            return jnp.sum(out.astype(jnp.float32)) + jnp.sum(dens)
        bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return fwd, bwd

    rows = []

    def run(name, attend):
        try:
            fwd, bwd = fns(attend)
            rows.append((name, timed(fwd, (q, k, v)), timed(bwd, (q, k, v))))
        except Exception as e:  # noqa: BLE001
            rows.append((name, float("nan"), float("nan")))
            print(f"# {name}: {type(e).__name__}: {str(e)[:400]}", flush=True)
        print(f"| {rows[-1][0]} | {rows[-1][1]:.2f} | {rows[-1][2]:.2f} |", flush=True)

    print("| variant | fwd ms | fwd+bwd ms |\n|---|---:|---:|")
    run("cudnn dense", lambda q, k, v: (jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn"),
                                        jnp.zeros(())))
    for gate, mode in ((None, "eval"), (2.0, "eval"), (2.0, "train")):
        label = "dense" if gate is None else mode
        run(f"pallas {label} default blocks",
            lambda q, k, v, g=gate, m=mode: (lambda o, s: (o, s.expected_density))(
                *sj.sparse_attention(q, k, v, g, mode=m, seed=0, implementation="pallas")))
    grid = [dict(block_q=bq, block_k=bk, block_q_bwd=bqb, block_k_bwd=bkb, num_warps=w, num_stages=s)
            for bq, bk, bqb, bkb, w, s in [(128, 64, 64, 64, 4, 2), (128, 64, 64, 64, 8, 3), (128, 128, 64, 64, 8, 2),
                                           (64, 64, 32, 64, 4, 2), (128, 32, 64, 32, 4, 3), (64, 128, 128, 64, 8, 2),
                                           (128, 64, 128, 32, 8, 2), (128, 64, 32, 128, 8, 2)]]
    for cfg in grid:
        run("pallas train " + " ".join(f"{k_}={v_}" for k_, v_ in cfg.items()),
            lambda q, k, v, c=cfg: (lambda o, s: (o, s.expected_density))(
                *sj.sparse_attention(q, k, v, 2.0, mode="train", seed=0, implementation="pallas", **c)))


if __name__ == "__main__":
    main()
