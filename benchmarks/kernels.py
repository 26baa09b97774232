"""The fused Pallas kernel: correctness against ``reference`` and speed/memory against dense flash attention.

    python benchmarks/kernels.py                 # on a GPU: check T=1k-8k, then the speed table (<= 8 min on H100)
    python benchmarks/kernels.py --check-seq 128 --seq 256 --heads 2 --batch 1   # on CPU (interpret mode: slow)

1. Correctness (``--check-seq``), fp32 and bf16, sampled (train) and deterministic (eval) gates: max |kernel -
   reference| of the output, dq, dk, dv, d bias (relative to the reference's largest entry), of the expected and
   edge densities, and the **sampled gates themselves**: the kernel's effective attention ``P * A`` is read out
   through one-hot values (``v = e_j`` for a window of keys) and its support compared with the reference's
   adjacency, gate by gate (``gate mismatches`` = differing gates / gates compared).
2. Speed and memory (``--seq``): median fwd+bwd time (train mode, sampled gates) of the kernel, of the XLA
   ``chunked`` implementation, of ``jax.nn.dot_product_attention`` (cuDNN and XLA, dense), and, where torch is
   installed, torch's fused ``scaled_dot_product_attention`` (dense) and the method's formula in plain torch
   (materialised T x T, straight-through Bernoulli gate). Ratios are against cuDNN dense attention measured in the
   same process (XLA dense on backends without cuDNN). Memory: XLA temp bytes of the compiled fwd+bwd (JAX),
   ``torch.cuda.max_memory_allocated`` above the inputs (torch).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sparsejax as sj  # noqa: E402
from sparsejax.attention.reference import reference_attention  # noqa: E402


def _inputs(b, t, h, kvh, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.normal(size=s).astype(np.float32) for s in ((b, t, h, d), (b, t, kvh, d), (b, t, kvh, d)))
    return [jnp.asarray(x, dtype) for x in (q, k, v)]


# ------------------------------------------------------------------------------------------------ correctness
def check(t, dtype, mode, *, b=1, h=4, kvh=2, d=128, bias=0.5, seed=7, windows=4, blocks=None):
    blocks = blocks or {}
    q, k, v = _inputs(b, t, h, kvh, d, dtype, seed=t)
    hb = jnp.asarray(np.linspace(-bias, bias, h), jnp.float32)
    ct = jnp.asarray(np.random.default_rng(1).normal(size=(b, t, h, d)), dtype)

    def grads(impl):
        def loss(qq, kk, vv, bb):
            out, st = sj.sparse_attention(qq, kk, vv, sj.Gate(bb), mode=mode, seed=seed, implementation=impl,
                                          **(blocks if impl == "pallas" else {}))
            return (jnp.sum((out * ct).astype(jnp.float32)) + jnp.sum(st.expected_density * 100.0),
                    (out, st.expected_density, st.edge_density))
        f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))
        (_, aux), g = f(q, k, v, hb)
        return jax.device_get((aux, g))

    (ro, rd, re), rg = grads("reference")
    (po, pd, pe), pg = grads("pallas")
    rel = lambda a, r: float(np.max(np.abs(np.float32(a) - np.float32(r))) / (np.max(np.abs(np.float32(r))) + 1e-30))
    row = {"out": rel(po, ro), "dq": rel(pg[0], rg[0]), "dk": rel(pg[1], rg[1]), "dv": rel(pg[2], rg[2]),
           "dbias": rel(pg[3], rg[3]), "density": float(np.max(np.abs(pd - rd))),
           "edge_density": float(np.max(np.abs(pe - re)))}
    # the gates themselves: P*A through one-hot values, a window of d keys at a time
    train = mode == "train"
    gate = sj.Gate(hb)
    _, _, _, adj = reference_attention(q, k, k, gate, causal=True, train=train,
                                       seed=jnp.uint32(seed) if train else None, return_adjacency=True)
    adj = np.asarray(adj)
    eff = jax.jit(lambda vv: sj.sparse_attention(q, k, vv, gate, mode=mode, seed=seed, implementation="pallas",
                                                 **blocks)[0])
    starts = sorted({int(x) for x in np.linspace(0, max(t - d, 0), windows)})
    wrong = total = 0
    for j0 in starts:
        width = min(d, t - j0)
        onehot = np.zeros((b, t, kvh, d), np.float32)
        onehot[:, j0 + np.arange(width), :, np.arange(width)] = 1.0
        pa = np.float32(eff(jnp.asarray(onehot, dtype)))  # [b, t, h, d]: P*A[i, j0 + c]
        got = np.transpose(pa[..., :width], (0, 2, 1, 3)) > 0
        want = adj[:, :, :, j0:j0 + width]
        causal = np.arange(j0, j0 + width)[None, :] <= np.arange(t)[:, None]
        wrong += int(np.sum((got != want) & causal))
        total += int(np.sum(np.broadcast_to(causal, want.shape)))
    row["gate_mismatch"] = f"{wrong}/{total}"
    row["open"] = float(adj[..., np.tril(np.ones((t, t), bool))].mean())
    return row


# ------------------------------------------------------------------------------------------------ speed
def median_ms(fn, args, block=jax.block_until_ready, repeats=10):
    """Median wall time (ms) of ``fn(*args)`` after two warm-up calls (the first compiles); ``block`` waits for
    the result (``jax.block_until_ready``, or a device synchronise for torch)."""
    block(fn(*args))
    block(fn(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def jax_step(impl, bias, blocks=None):
    def loss(q, k, v):
        if impl in ("cudnn", "xla"):
            return jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
                           .astype(jnp.float32))
        out, st = sj.sparse_attention(q, k, v, bias, mode="train", seed=0, implementation=impl,
                                      **((blocks or {}) if impl == "pallas" else {}))
        return jnp.sum(out.astype(jnp.float32)) + jnp.sum(st.expected_density)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def torch_steps(bias):
    try:
        import torch
        from torch_reference import gated_weights  # benchmarks/torch_reference.py
    except ImportError:
        return None, {}
    if not torch.cuda.is_available():
        return None, {}

    def plain(q, k, v):  # the method as a PyTorch user would write it (materialised T x T, float32 logits)
        s = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) / q.shape[-1] ** 0.5
        weights, density = gated_weights(s, bias)
        return torch.einsum("bhts,bshd->bthd", weights, v.float()).sum() + density.sum()

    def sdpa(q, k, v):
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                               v.transpose(1, 2), is_causal=True)
        return out.float().sum()

    def wrap(f):
        def step(q, k, v):
            for x in (q, k, v):
                x.grad = None
            f(q, k, v).backward()
            return q.grad
        return step

    return torch, {"torch fused SDPA (dense)": wrap(sdpa), "torch plain formula (sparse)": wrap(plain)}


def speed(seqs, b, h, d, dtype, bias, repeats, max_plain_seq, blocks=None):
    backend = jax.default_backend()
    dense = "cudnn" if backend == "gpu" else "xla"
    impls = {"sparsejax pallas (sparse, fused)": "pallas", "sparsejax chunked (sparse, XLA)": "chunked",
             "jax dot_product_attention cudnn (dense)": "cudnn", "jax dot_product_attention xla (dense)": "xla"}
    if backend != "gpu":
        impls.pop("jax dot_product_attention cudnn (dense)")
    torch, tsteps = torch_steps(bias)
    rows = []
    for t in seqs:
        q, k, v = _inputs(b, t, h, h, d, dtype, seed=t)
        res = {}
        for name, impl in impls.items():
            try:
                fn = jax_step(impl, bias, blocks)
                mem = fn.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes / 2**20
                res[name] = (median_ms(fn, (q, k, v), jax.block_until_ready, repeats), mem)
            except Exception as e:  # noqa: BLE001 - a row that fails is reported, the table goes on
                res[name] = (float("nan"), float("nan"))
                print(f"# {name} T={t}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        for name, step in tsteps.items():
            if "plain" in name and t > max_plain_seq:
                continue
            try:
                tdt = {jnp.bfloat16: torch.bfloat16, jnp.float32: torch.float32}[dtype]
                g = torch.Generator(device="cuda").manual_seed(0)
                args = [torch.randn(b, t, h, d, generator=g, device="cuda", dtype=tdt, requires_grad=True)
                        for _ in range(3)]
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                ms = median_ms(step, args, lambda x: torch.cuda.synchronize(), repeats)
                res[name] = (ms, (torch.cuda.max_memory_allocated() - base) / 2**20)
                del args
                torch.cuda.empty_cache()
            except Exception as e:  # noqa: BLE001
                res[name] = (float("nan"), float("nan"))
                print(f"# {name} T={t}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        ref_name = next(n for n in res if dense in n and "jax" in n)
        base_ms = res[ref_name][0]
        for name, (ms, mem) in res.items():
            rows.append((t, name, ms, ms / base_ms, mem))
        print(f"# done T={t}", flush=True)
    return rows, ref_name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_gpu = jax.default_backend() == "gpu"
    p.add_argument("--check-seq", type=int, nargs="*", default=[1024, 4096] if on_gpu else [128])
    p.add_argument("--seq", type=int, nargs="*", default=[1024, 2048, 4096, 8192] if on_gpu else [256])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--bias", type=float, default=2.0, help="gate bias of the speed runs (most gates open)")
    p.add_argument("--repeats", type=int, default=10 if on_gpu else 2)
    p.add_argument("--max-plain-seq", type=int, default=4096)
    p.add_argument("--blocks", default=None,
                   help="kernel options for every pallas run: a JSON object or a JSON file (kernel_tuning.py "
                        "--write-best); default attention.blocks.BLOCK_SIZES")
    args = p.parse_args(argv)
    blocks = None
    if args.blocks:
        text = open(args.blocks).read() if os.path.exists(args.blocks) else args.blocks
        blocks = json.loads(text)
    dev = jax.devices()[0]
    print(f"# device: {getattr(dev, 'device_kind', dev.platform)} ({jax.default_backend()}), jax {jax.__version__}, "
          f"host {platform.machine()} cpus={os.cpu_count()}; pallas options: {blocks or 'defaults'}", flush=True)

    if args.check_seq:
        jax.config.update("jax_default_matmul_precision", "highest")  # the reference in true float32
        print("\n| T | dtype | gates | out | dq | dk | dv | d bias | density | edge density | gate mismatches | "
              "open share |")
        print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in args.check_seq:
            for dtype in (jnp.float32, jnp.bfloat16):
                for mode in ("train", "eval"):
                    try:
                        r = check(t, dtype, mode, d=args.dim, blocks=blocks)
                        print(f"| {t} | {jnp.dtype(dtype).name} | {'sampled' if mode == 'train' else 'eval'} | "
                              + " | ".join(f"{r[c]:.1e}" for c in ("out", "dq", "dk", "dv", "dbias", "density",
                                                                   "edge_density"))
                              + f" | {r['gate_mismatch']} | {r['open']:.2f} |", flush=True)
                    except Exception:  # noqa: BLE001
                        traceback.print_exc()
        print("\n(out, dq, dk, dv, d bias: max abs error / max abs reference value; densities: max abs error)")
        jax.config.update("jax_default_matmul_precision", None)

    if args.seq:
        rows, ref_name = speed(args.seq, args.batch, args.heads, args.dim, jnp.bfloat16, args.bias, args.repeats,
                               args.max_plain_seq, blocks)
        fmt = lambda x, spec: "—" if x != x else format(x, spec)
        print(f"\n# fwd+bwd, train mode (sampled gates), causal, bf16, batch {args.batch}, {args.heads} heads x "
              f"{args.dim}; ratio = time / {ref_name}")
        print("| T | implementation | fwd+bwd ms | x dense ref | memory MiB |")
        print("|---:|---|---:|---:|---:|")
        for t, name, ms, r, mem in rows:
            print(f"| {t} | {name} | {fmt(ms, '.2f')} | {fmt(r, '.2f')} | {fmt(mem, '.0f')} |")


if __name__ == "__main__":
    main()
