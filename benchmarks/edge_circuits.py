"""One edge circuit's explained effect: the one-pass evaluation (the writers' corrupted-minus-circuit outputs
carried through the layer scan) against the fixed point of whole-model passes it replaced, and against one plain
forward of the same model, in the same process.

    python benchmarks/edge_circuits.py                      # SmolLM2-135M (sparsejax data smollm2), IOI, 16 prompts
    python benchmarks/edge_circuits.py --model gpt2-shape   # random weights of GPT-2 small's shape, random tokens

Circuits: the top 1%, 10% and 50% of the edges by a random score (the cost does not depend on which edges). Each
row: seconds per evaluation (median of ``--repeats`` after a compiling call), the fixed point's number of passes,
the ratio to one forward, and the two explained effects (they must agree).
"""
from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("smollm2", "gpt2-shape"), default="smollm2")
    p.add_argument("--examples", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--shares", type=float, nargs="+", default=[0.01, 0.1, 0.5])
    p.add_argument("--fixed-point", type=float, nargs="*", default=[0.01], help="the shares whose fixed point is "
                   "also timed (up to 2 L + 1 forwards each: slow); none: --fixed-point with no value")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    import sparsejax as sj
    from sparsejax import circuits, tasks

    if args.model == "smollm2":
        from sparsejax.data.real_models import model_dir
        from tokenizers import Tokenizer

        path = model_dir("smollm2")
        model = sj.from_pretrained(path)
        config, params = model.config, model.params
        task = tasks.ioi(Tokenizer.from_file(str(path / "tokenizer.json")), args.examples, seed=0)
        clean, corrupt, metric, pad = task.clean, task.corrupt, task.metric, dict(attention_mask=task.attention_mask)
        what = f"SmolLM2-135M, IOI, {args.examples} prompts x {clean.shape[1]} tokens"
    else:
        from sparsejax.plan import SHAPES

        config = sj.ModelConfig(**SHAPES["gpt2"])
        params = sj.init_params(config, jax.random.PRNGKey(0))
        rng = np.random.default_rng(0)
        clean = jnp.asarray(rng.integers(0, config.vocab_size, (args.examples, 16)))
        corrupt = clean.at[:, 8].set((clean[:, 8] + 1) % config.vocab_size)
        metric = circuits.logit_diff(rng.integers(0, config.vocab_size, args.examples),
                                     rng.integers(0, config.vocab_size, args.examples))
        pad, what = {}, f"GPT-2-small shape (random weights), {args.examples} x 16 random tokens"

    def timed(f):
        value = f()  # compiles
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            value = f()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), value

    ev = circuits.EdgeCircuitEvaluator(config, params, None, clean, corrupt, metric, **pad)
    fwd = jax.jit(lambda t: sj.forward(config, params, t, **{k: v for k, v in circuits.padding(
        pad.get("attention_mask")).items()})[0])
    t_fwd, _ = timed(lambda: jax.block_until_ready(fwd(clean)))
    ok = circuits.allowed(config)
    rng = np.random.default_rng(1)
    scores = np.where(ok, rng.random(ok.shape), 0.0)
    passes = {}
    original = ev.run

    def counted(*a):
        passes["n"] = passes.get("n", 0) + 1
        return original(*a)

    print(f"{what}; {int(ok.sum()):,} edges; {config.n_layers} layers; this machine: {_cpu()}")
    print(f"one forward: {t_fwd:.3f} s")
    print("| circuit | one pass (s) | x forward | fixed point (s) | passes | x forward | speed-up | explained "
          "(one pass / fixed point) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for share in args.shares:
        keep = circuits.top_edges(config, scores, max(1, int(share * ok.sum())))
        t_one, e_one = timed(lambda: ev.explained(keep))
        if share not in args.fixed_point:
            print(f"| top {share:.0%} ({int(keep.sum()):,} edges) | {t_one:.3f} | {t_one / t_fwd:.1f} | | | | | "
                  f"{e_one:.5f} / |", flush=True)
            continue
        ev.run = counted
        passes.clear()
        t0 = time.perf_counter()
        e_fix = ev.explained_fixed_point(keep)
        t_fix, n = time.perf_counter() - t0, passes["n"]
        ev.run = original
        print(f"| top {share:.0%} ({int(keep.sum()):,} edges) | {t_one:.3f} | {t_one / t_fwd:.1f} | {t_fix:.2f} | "
              f"{n} | {t_fix / t_fwd:.1f} | {t_fix / t_one:.1f}x | {e_one:.5f} / {e_fix:.5f} |", flush=True)


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                import os

                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
