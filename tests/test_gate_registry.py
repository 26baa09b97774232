"""A gate family is one file: a family registered from outside the library (here, in this test) works in every
attention implementation, against an independent numpy statement, and the run config accepts its name."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.config import load_config
from sparsejax.gates import GateFamily, register


@register
class SoftGate(GateFamily):
    """A deterministic soft gate: A = sigmoid(g) in training and evaluation (no noise); an edge when g > 0."""
    name = "test_soft"

    def sample(self, gate, g, uniform, train):
        return jax.nn.sigmoid(g)

    def value_and_slope(self, gate, g, uniform, train):
        a = jax.nn.sigmoid(g)
        return a, a * (1 - a)

    def is_edge(self, gate, g):
        return g > 0

    def expected(self, gate, g):
        return jax.nn.sigmoid(g)

    def expected_slope(self, gate, g):
        a = jax.nn.sigmoid(g)
        return a * (1 - a)

    def torch_eval(self, torch, g, temperature, stretch):
        return torch.sigmoid(g)


def _numpy(q, k, v, bias):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    t, d = q.shape[1], q.shape[-1]
    s = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(d)
    causal = np.tril(np.ones((t, t), bool))
    p = np.exp(np.where(causal, s, -np.inf) - np.where(causal, s, -np.inf).max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    a = 1 / (1 + np.exp(-(s + bias))) * causal
    density = (a.sum((-1, -2)) / causal.sum())
    return np.einsum("bhij,bjhd->bihd", p * a, v), density


@pytest.mark.parametrize("implementation", ["reference", "chunked"])
def test_a_family_registered_outside_runs_everywhere(implementation):
    q, k, v = (jax.random.normal(key, (2, 37, 3, 8)) for key in jax.random.split(jax.random.PRNGKey(0), 3))
    gate = sj.Gate(jnp.float32(0.3), kind="test_soft")
    want, density = _numpy(q, k, v, 0.3)
    for mode in ("train", "eval"):
        out, stats = sj.sparse_attention(q, k, v, gate, mode=mode, seed=1, implementation=implementation)
        np.testing.assert_allclose(np.asarray(out), want, atol=2e-5)
        np.testing.assert_allclose(np.asarray(stats.expected_density), density, atol=1e-5)
    grad = jax.grad(lambda b: sj.sparse_attention(q, k, v, sj.Gate(b, kind="test_soft"), mode="train", seed=1,
                                                  implementation=implementation)[0].sum())(jnp.float32(0.3))
    eps = 1e-3
    numeric = (_numpy(q, k, v, 0.3 + eps)[0].sum() - _numpy(q, k, v, 0.3 - eps)[0].sum()) / (2 * eps)
    np.testing.assert_allclose(float(grad), numeric, rtol=1e-3)


def test_config_knows_registered_families_and_names_stay_unique():
    assert load_config("toy_addition_posttrain", ["gate.kind=test_soft"]).gate.kind == "test_soft"
    with pytest.raises(ValueError, match="gate.kind='nope' must be a registered gate family"):
        load_config("toy_addition_posttrain", ["gate.kind=nope"])
    with pytest.raises(ValueError, match="new, non-empty name"):
        register(type("Again", (GateFamily,), {"name": "bernoulli"}))


def test_an_incomplete_family_is_refused_at_registration():
    with pytest.raises(TypeError, match="abstract"):
        register(type("Half", (GateFamily,), {"name": "test_half", "sample": lambda self, *a: None}))
