"""Exact block-skipping inference on an accelerator: time against the fused kernel and cuDNN, per share of empty
tiles (issue F: what skipping the value product on tiles with no open edge saves on real hardware).

    PYTHONPATH=. python benchmarks/block_skipping.py [--seq 4096]       # on a GPU (Triton); ~1 min
    PYTHONPATH=. python benchmarks/block_skipping.py --seq 256 --heads 2 --batch 1 --windows 64   # CPU smoke run

Synthetic heads with a known edge layout: query ``i`` keeps exactly the keys of its own window (``i // W == j //
W``) and the first 64 keys (a "sink"), through one-hot bucket features in q and k and a gate bias that opens an
edge only where a feature matches (eval gates). Each row: the measured share of visited causal tiles with no open
edge (from the kernel's own tile map), the forward time of the two-pass skipping kernel and of the fused kernel
(eval mode, no skipping), with ratios against cuDNN's dense flash attention measured in the same process, and the
largest difference between the two sparse outputs (same method, so float rounding only).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/kernels.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
import sparsejax as sj  # noqa: E402
from block_skipping_kernel import block_skipping_attention, causal_tiles  # noqa: E402  (experiments/)
from kernels import median_ms  # noqa: E402  (benchmarks/kernels.py)


def windowed_inputs(b, t, h, d, window, sink=64, margin=8.0, seed=0):
    """q, k, v ``[b, t, h, d]`` and the gate bias: s_ij = ``margin`` where i, j share a window or j < sink, ~0
    elsewhere; bias = -margin / 2."""
    n_buckets = -(-t // window)
    if n_buckets > d - 1:
        raise ValueError(f"window {window} too small for T={t}, head_dim {d} (needs T / window <= head_dim - 1)")
    alpha = math.sqrt(margin * math.sqrt(d))
    pos = np.arange(t)
    feat = np.zeros((t, d), np.float32)
    feat[pos, pos // window] = alpha
    qf, kf = feat.copy(), feat.copy()
    qf[:, d - 1] = alpha
    kf[:sink, d - 1] = alpha
    rng = np.random.default_rng(seed)
    noise = lambda: rng.normal(scale=0.05, size=(b, t, h, d)).astype(np.float32)
    q = jnp.asarray(qf[None, :, None, :] + noise(), jnp.bfloat16)
    k = jnp.asarray(kf[None, :, None, :] + noise(), jnp.bfloat16)
    v = jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.bfloat16)
    return q, k, v, -margin / 2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_gpu = jax.default_backend() == "gpu"
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--windows", type=int, nargs="*", default=[64, 256, 1024])
    p.add_argument("--blocks", type=int, nargs="*", default=[64, 128])
    p.add_argument("--repeats", type=int, default=10 if on_gpu else 1)
    a = p.parse_args(argv)
    dev = jax.devices()[0]
    print(f"# {getattr(dev, 'device_kind', dev.platform)}, jax {jax.__version__}, B={a.batch} T={a.seq} H={a.heads} "
          f"D={a.dim} bf16, causal, eval gates; forward only")
    ref_name = "cuDNN dense" if on_gpu else "XLA dense"
    print(f"| window W | tile | empty tiles | skipping ms | x {ref_name} | fused kernel (no skipping) ms | "
          f"x {ref_name} | skipping / fused | max abs diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    dense = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                                 implementation="cudnn" if on_gpu else "xla"))
    for window in a.windows:
        q, k, v, bias = windowed_inputs(a.batch, a.seq, a.heads, a.dim, window)
        gate = sj.Gate(jnp.full((a.heads,), bias, jnp.float32))
        fused = jax.jit(lambda q, k, v: sj.sparse_attention(q, k, v, gate, mode="eval", implementation="pallas")[0])
        dense_ms = median_ms(dense, (q, k, v), repeats=a.repeats)
        fused_ms = median_ms(fused, (q, k, v), repeats=a.repeats)
        want = np.float32(fused(q, k, v))
        for block in a.blocks:
            skip = jax.jit(lambda q, k, v, blk=block: block_skipping_attention(q, k, v, gate, block=blk))
            out, open_tiles = skip(q, k, v)
            visited = causal_tiles(a.seq, a.seq, block)
            empty = 1.0 - float(np.asarray(open_tiles).sum()) / (visited.sum() * a.batch * a.heads)
            ms = median_ms(skip, (q, k, v), repeats=a.repeats)
            diff = float(np.max(np.abs(np.float32(out) - want)))
            print(f"| {window} | {block} | {empty:.3f} | {ms:.3f} | {ms / dense_ms:.2f} | {fused_ms:.3f} | "
                  f"{fused_ms / dense_ms:.2f} | {ms / fused_ms:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
