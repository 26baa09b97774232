"""The bare copy task: can this code base's 2-layer model learn induction at all, and when?

Each sequence: ``half`` uniform random tokens, a gap of 0 .. ``--max-gap`` random tokens, the same ``half`` tokens
again; the loss is taken on the copy only (its first token excepted). With a gap, the copy can only be predicted
by content (an induction head: find the earlier occurrence of the current token, copy its successor), and the loss
drops at the induction phase change; with ``--max-gap 0`` a fixed positional offset suffices, a shortcut.
Prints the copy loss every 100 steps.

    python experiments/copy_task.py --max-gap 16 --steps 1000
    python experiments/copy_task.py --max-gap 0 --steps 400
"""
from __future__ import annotations

import argparse
import time


def main(argv=None):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from sparsejax.models import forward, init_params
    from sparsejax.models.config import ModelConfig
    from sparsejax.objective import cross_entropy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-gap", type=int, default=16)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--half", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    n = 2 * args.half + args.max_gap + 1
    cfg = ModelConfig(family="llama", vocab_size=args.vocab, d_model=128, n_layers=2, n_heads=4, d_ff=512,
                      max_position=n)
    params = init_params(cfg, jax.random.PRNGKey(0))
    opt = optax.adamw(args.lr, weight_decay=0.01)
    state = opt.init(params)

    def loss(p, x, m):
        return cross_entropy(forward(cfg, p, x[:, :-1], None, mode="eval")[0], x[:, 1:], m)

    @jax.jit
    def step(p, s, x, m):
        value, grads = jax.value_and_grad(loss)(p, x, m)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    rng, start = np.random.default_rng(0), time.time()
    for i in range(args.steps + 1):
        x = rng.integers(0, args.vocab, (args.batch, n))
        m = np.zeros((args.batch, n - 1), np.float32)
        for j in range(args.batch):
            gap = rng.integers(0, args.max_gap + 1)
            x[j, args.half + gap:2 * args.half + gap] = x[j, :args.half]
            m[j, args.half + gap:2 * args.half + gap - 1] = 1  # targets: the copy's tokens 2 .. half
        params, state, value = step(params, state, jnp.asarray(x, jnp.int32), jnp.asarray(m))
        if i % 100 == 0:
            print(f"step {i}: copy loss {float(value):.3f} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
