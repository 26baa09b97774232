"""Every seed the library derives, named once: which random stream each part of a run draws from.

A run has two seeds of its own, ``train.seed`` (parameters, adapters, gate noise) and ``data.seed`` (data order,
repeated passages); everything else here is derived from them, or fixed. Each function is the exact formula its
call site used before it was named here (same numbers, same dtypes; ``tests/test_seeds.py`` pins the values):
naming them changed no run's numbers.

| derivation | here | formula (as before, bit for bit) | used in |
|---|---|---|---|
| fresh parameters | `params_key(train.seed)` | `jax.random.PRNGKey(seed)` | `train/state.py` (`build_model`) |
| LoRA adapters | `lora_key(train.seed)` | `jax.random.PRNGKey(seed + 1)` | `train/state.py` (`split_params`) |
| gate noise of training step `s` | `step_noise(train.seed, s)` | `jnp.uint32((seed * 1_000_003 + s) % 2**32)` | `train/loop.py` |
| gate noise of layer `l` | `layer_seed(seed, l)` | `mix32(uint32(seed) ^ (uint32(l) + salt0))` | `models/decoder.py` |
| evaluation under sampled gates | `sampled_eval_noise()` | `jnp.uint32(0)` | `train/step.py` (`tau_gates`) |
| training data order, epoch `e` | `data_order(data.seed, e)` | `np.random.default_rng([seed, e])` | `data/__init__.py` |
| held-out data order | `EVAL_ORDER` | `0` | `train/evaluate.py`, `report/page.py` |
| repeated passages (train, val) | `repeated_passages(data.seed)` | `(seed, seed + 1)` | `train/data.py` |
| one row's repeated passage | `passage_rng(seed, row)` | `np.random.default_rng([seed, 0x5EED, row])` | `data/__init__.py` |
| the addition task's split | `addition_split()` | `np.random.default_rng(1234)` | `data/addition.py` |

Keys are ``jax.random.PRNGKey``s (``uint32 [2]``), noise seeds ``jax`` ``uint32`` scalars, streams numpy
``Generator``s, orders plain ``int`` seeds of :func:`sparsejax.data.batch_at`.

``layer_seed`` is the counter-based hash's own (``gates/noise.py``: its salts and mixer) and is re-exported here so
the table is whole. Not derivations, so not here: ``jax.random.PRNGKey(0)`` under ``jax.eval_shape`` (shapes only,
the value is never computed) and the circuit tasks' ``default_rng(seed)`` of their own ``seed`` argument.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .gates.noise import layer_seed

EVAL_ORDER = 0  # the data-order seed of the held-out batches (evaluation, the report's example): always the same rows
SAMPLED_EVAL_NOISE = 0  # the gate-noise seed of an evaluation under sampled gates
PASSAGE_SALT = 0x5EED  # keeps a row's passage stream apart from the data-order streams ([seed, epoch])
ADDITION_SPLIT = 1234  # the permutation of the 10,000 addition problems into train (9,000) and validation (1,000)
STEP_STRIDE = 1_000_003  # a prime; runs of different train.seed (< 4,294) draw disjoint seeds for 1,000,003 steps


def params_key(seed: int) -> jax.Array:
    """The key of a fresh model's parameters (``model.checkpoint`` unset): ``PRNGKey(train.seed)``."""
    return jax.random.PRNGKey(seed)


def lora_key(seed: int) -> jax.Array:
    """The key of the LoRA adapters: ``PRNGKey(train.seed + 1)`` (apart from a fresh model's ``PRNGKey(seed)``)."""
    return jax.random.PRNGKey(seed + 1)


def step_noise(seed: int, step: int) -> jax.Array:
    """The gate-noise seed of training step ``step``: ``uint32((train.seed * 1_000_003 + step) % 2**32)``, a pure
    function of (seed, step), so a resumed run samples the gates an uninterrupted one would."""
    return jnp.uint32((seed * STEP_STRIDE + step) % 2**32)


def sampled_eval_noise() -> jax.Array:
    """The gate-noise seed of an evaluation under sampled gates (``constraint.tau_gates=sampled``): ``uint32(0)``,
    the same noise at every evaluation."""
    return jnp.uint32(SAMPLED_EVAL_NOISE)


def data_order(seed: int, epoch: int) -> np.random.Generator:
    """The stream of epoch ``epoch``'s permutation of the rows: ``default_rng([data.seed, epoch])``."""
    return np.random.default_rng([seed, epoch])


def repeated_passages(seed: int) -> tuple[int, int]:
    """The seeds of the repeated passages of the training and the validation rows: ``(data.seed, data.seed + 1)``
    (the two splits' rows are numbered from 0 each, so the same seed would repeat the same places)."""
    return seed, seed + 1


def passage_rng(seed: int, row) -> np.random.Generator:
    """The stream of one row's repeated passage (whether it has one, its length, both places, random tokens):
    ``default_rng([seed, 0x5EED, row])``, by (seed, row) alone."""
    return np.random.default_rng([seed, PASSAGE_SALT, int(row)])


def addition_split() -> np.random.Generator:
    """The stream that splits the addition problems into train and validation: ``default_rng(1234)``."""
    return np.random.default_rng(ADDITION_SPLIT)


__all__ = ["ADDITION_SPLIT", "EVAL_ORDER", "PASSAGE_SALT", "SAMPLED_EVAL_NOISE", "STEP_STRIDE", "addition_split",
           "data_order", "layer_seed", "lora_key", "params_key", "passage_rng", "repeated_passages",
           "sampled_eval_noise", "step_noise"]
