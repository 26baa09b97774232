"""Edge attribution (EAP, EAP-IG) over every edge of a GPT-2-small-shaped graph, against one forward+backward of
the same model (issue E's budget: EAP <= 3x a fwd+bwd; its floor is two forwards and one backward).

    python benchmarks/circuits.py                   # 12 layers x 12 heads (32,491 edges), T=64, batch 16
    python benchmarks/circuits.py --layers 2        # quicker

Random-init weights (timing does not depend on them), a sparse model in eval mode (gate bias 2) and the dense one.
The reference is ``jax.jit(jax.grad(mean CE))`` of the same model on the same tokens. Median of ``--repeats``
calls after a compiling call; the table gives seconds and the ratio to the reference, in the same process.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ig-steps", type=int, default=5)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    import sparsejax as sj
    from sparsejax import circuits
    from sparsejax.plan import SHAPES

    config = sj.ModelConfig(**{**SHAPES["gpt2"], "n_layers": args.layers})
    params = sj.init_params(config, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    clean = jnp.asarray(rng.integers(0, config.vocab_size, (args.batch, args.seq)))
    corrupt = clean.at[:, args.seq // 2].set((clean[:, args.seq // 2] + 1) % config.vocab_size)
    metric = circuits.logit_diff(rng.integers(0, config.vocab_size, args.batch),
                                 rng.integers(0, config.vocab_size, args.batch))

    def timed(f):
        jax.block_until_ready(f())  # compile
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    n_edges = len(circuits.edges(config))
    print(f"# {jax.devices()[0].device_kind}, GPT-2-small shape with {args.layers} layers: "
          f"{len(circuits.writers(config))} writers x {len(circuits.readers(config))} readers = {n_edges} edges, "
          f"batch {args.batch}, T={args.seq}, float32")
    print("| model | fwd+bwd (s) | EAP (s) | EAP / fwd+bwd | EAP-IG, %d steps (s) | EAP-IG / fwd+bwd |" % args.ig_steps)
    print("|---|---|---|---|---|---|")
    for name, gate in (("dense", None), ("sparse (eval gates)", sj.make_gate(2.0))):
        def loss(prm, toks):
            logits, _ = sj.forward(config, prm, toks, gate, mode="eval")
            return -jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), toks[:, 1:, None], -1).mean()

        grad = jax.jit(jax.grad(loss))
        ref = timed(lambda: grad(params, clean))
        eap = timed(lambda: circuits._edge_scores_jit(config, params, gate, clean, corrupt, metric, "eap", 1,
                                                      "recompute"))
        ig = timed(lambda: circuits._edge_scores_jit(config, params, gate, clean, corrupt, metric, "eap-ig",
                                                     args.ig_steps, "recompute"))
        print(f"| {name} | {ref:.3f} | {eap:.3f} | {eap / ref:.2f}x | {ig:.3f} | {ig / ref:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
