"""Block-size / launch-parameter / backward-variant sweep of the fused kernel on one accelerator, T=4096 bf16 (fwd
and fwd+bwd, train mode), with the kernel's dense (no gate) and eval-gate variants to separate the gate's cost from
the kernel's, and, as reference points, cuDNN's dense flash attention and (forward only, where this JAX ships it)
JAX's Hopper-native Mosaic-GPU FlashAttention-3 example kernel (dense).

    PYTHONPATH=. python benchmarks/kernel_tuning.py [--seq 4096] [--write-best best.json]

``--write-best`` writes the fastest train-mode configuration (fwd+bwd) as JSON, for ``kernels.py --blocks``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/kernels.py
import sparsejax as sj  # noqa: E402
from kernels import median_ms  # noqa: E402  (benchmarks/kernels.py)
from sparsejax.attention.blocks import BLOCK_SIZES  # noqa: E402

# (block_q, block_k, block_q_bwd, block_k_bwd, num_warps, num_stages, backward)
GRID = [(128, 32, 64, 32, 4, 3, "split"), (128, 64, 64, 64, 4, 2, "split"), (64, 64, 32, 64, 4, 2, "split"),
        (128, 32, 64, 64, 4, 3, "split"), (64, 32, 64, 32, 4, 3, "split"),
        (128, 32, 64, 32, 4, 3, "atomic"), (128, 32, 64, 64, 4, 2, "atomic"), (128, 32, 32, 64, 4, 2, "atomic"),
        (128, 32, 64, 128, 8, 2, "atomic"), (128, 32, 32, 128, 8, 2, "atomic"), (128, 32, 128, 64, 8, 3, "atomic"),
        (64, 32, 32, 32, 4, 3, "split"), (64, 32, 64, 32, 4, 2, "split"), (64, 64, 64, 32, 4, 3, "split"),
        (64, 32, 64, 32, 8, 3, "split"), (32, 32, 64, 32, 4, 3, "split")]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--write-best", default=None, help="write the fastest train configuration here (JSON)")
    p.add_argument("--grid", choices=("full", "split", "none"), default="full",
                   help="split: only the two-kernel backward's configurations (a shorter sweep); none: only the "
                        "reference rows and the default blocks")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    shape = (a.batch, a.seq, a.heads, a.dim)
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.bfloat16) for _ in range(3))
    print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}, B={a.batch} T={a.seq} H={a.heads} D={a.dim} "
          "bf16; fwd+bwd = one forward and its backward; bwd = the difference")

    def fns(attend):
        fwd = jax.jit(lambda q, k, v: attend(q, k, v)[0])

        def loss(q, k, v):
            out, dens = attend(q, k, v)
            return jnp.sum(out.astype(jnp.float32)) + jnp.sum(dens)
        return fwd, jax.jit(jax.grad(loss, argnums=(0, 1, 2)))

    rows = []

    def run(name, attend, cfg=None, fwd_only=False):
        try:
            fwd, bwd = fns(attend)
            f_ms = median_ms(fwd, (q, k, v))
            b_ms = float("nan") if fwd_only else median_ms(bwd, (q, k, v))
        except Exception as e:  # noqa: BLE001 - a variant that fails is reported, the sweep goes on
            f_ms = b_ms = float("nan")
            print(f"# {name}: {type(e).__name__}: {str(e)[:400]}", flush=True)
        rows.append((name, f_ms, b_ms, cfg))
        ratio = b_ms / rows[0][2] if rows and rows[0][2] == rows[0][2] else float("nan")
        print(f"| {name} | {f_ms:.2f} | {b_ms:.2f} | {b_ms - f_ms:.2f} | {ratio:.2f} |", flush=True)

    print("| variant | fwd ms | fwd+bwd ms | bwd ms | fwd+bwd x cuDNN |\n|---|---:|---:|---:|---:|")
    run("cudnn dense", lambda q, k, v: (jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn"),
                                        jnp.zeros(())))
    try:  # JAX's Mosaic-GPU FlashAttention-3 example (forward; its backward has no causal mask)
        from jax.experimental.pallas.ops.gpu import attention_mgpu as fa3

        cfg3 = fa3.TuningConfig(block_q=64, block_kv=128, max_concurrent_steps=2, causal=True)
        f16 = lambda x: x.astype(jnp.float16)  # the example takes float16 only (the cast is timed with it)
        run("mosaic-gpu FA3 example dense, float16 (fwd only)",
            lambda q, k, v: (fa3.attention(f16(q), f16(k), f16(v), cfg3), jnp.zeros(())), fwd_only=True)
    except Exception as e:  # noqa: BLE001
        print(f"# mosaic-gpu FA3 example: {type(e).__name__}: {str(e)[:300]}", flush=True)
    for gate, mode in ((None, "eval"), (2.0, "eval"), (2.0, "train")):
        label = "dense" if gate is None else mode
        run(f"pallas {label} default blocks",
            lambda q, k, v, g=gate, m=mode: (lambda o, s: (o, s.expected_density))(
                *sj.sparse_attention(q, k, v, g, mode=m, seed=0, implementation="pallas")))
    chosen = [g for g in GRID if a.grid == "full" or (a.grid == "split" and g[-1] == "split")]
    for bq, bk, bqb, bkb, w, s, back in chosen:
        cfg = dict(block_q=bq, block_k=bk, block_q_bwd=bqb, block_k_bwd=bkb, num_warps=w, num_stages=s,
                   backward=back)
        run("pallas train " + " ".join(f"{k_}={v_}" for k_, v_ in cfg.items()),
            lambda q, k, v, c=cfg: (lambda o, s: (o, s.expected_density))(
                *sj.sparse_attention(q, k, v, 2.0, mode="train", seed=0, implementation="pallas", **c)), cfg)
    done = [r for r in rows if r[3] is not None and r[2] == r[2]]
    if done:
        best = min(done, key=lambda r: r[2])
        print(f"# best train configuration: {json.dumps(best[3])} ({best[2]:.2f} ms fwd+bwd; defaults "
              f"{json.dumps(BLOCK_SIZES['gpu'].as_dict())})", flush=True)
        if a.write_best:
            with open(a.write_best, "w") as f:
                json.dump(best[3], f)


if __name__ == "__main__":
    main()
