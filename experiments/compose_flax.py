"""Compose sparsejax's attention into your own Flax NNX model, and train it with the density regulariser.

    python experiments/compose_flax.py --steps 60

A two-block model learns to copy the first half of each sequence into the second half; the loss is
cross-entropy + beta * expected density. It prints the loss and the expected edge density as it goes.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sparsejax.flax import DecoderBlock


class TinyLM(nnx.Module):
    """A user-defined model: embeddings, two sparse decoder blocks, an output head."""

    def __init__(self, vocab: int, d: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, d, rngs=rngs)
        self.blocks = nnx.List([DecoderBlock(d, 4, 2 * d, gate_bias=2.0, learnable_bias=True, rngs=rngs)
                                for _ in range(2)])
        self.head = nnx.Linear(d, vocab, rngs=rngs)

    def __call__(self, tokens, *, mode="eval", seed=None):
        x = self.embed(tokens)
        densities = []
        for i, block in enumerate(self.blocks):
            x, stats = block(x, mode=mode, seed=None if seed is None else seed * 2 + i)
            densities.append(stats.expected_density.mean())
        return self.head(x), jnp.stack(densities).mean()


def batch(key, size=16, half=16, vocab=32):
    first = jax.random.randint(key, (size, half), 1, vocab)
    return jnp.concatenate([first, first], axis=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--beta", type=float, default=0.5, help="weight of the expected-density regulariser")
    args = p.parse_args(argv)
    model = TinyLM(32, 64, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, tokens, seed):
        def loss_fn(model):
            logits, density = model(tokens[:, :-1], mode="train", seed=seed)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, 15:], tokens[:, 16:]).mean()
            return ce + args.beta * density, (ce, density)
        (_, (ce, density)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return ce, density

    key = jax.random.PRNGKey(0)
    for i in range(args.steps):
        key, sub = jax.random.split(key)
        ce, density = step(model, optimizer, batch(sub), jnp.uint32(i))
        if i % 10 == 0 or i == args.steps - 1:
            print(f"step {i:4d}  copy CE {float(ce):.3f}  expected density {float(density):.3f}")
    _, density = model(batch(jax.random.PRNGKey(99))[:, :-1])  # held-out batch, deterministic gates
    print(f"final: eval-mode expected density {float(density):.3f}")


if __name__ == "__main__":
    main()
