"""gate.shared_noise (issue J, twenty-fifth round in docs/controllers.md): one training-noise draw per (batch row,
query, key), shared by every head of the layer, instead of one per head. Checked against the float64 oracle given
the hash with head index 0 (forward, sampled gates and the straight-through gradient, in every implementation; the
Pallas kernel in interpret mode), and by its purpose: two heads that keep the same read are sampled open or closed
together, where independent draws split them."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj

import oracle

B, T, H, D = 2, 11, 4, 8
BIAS = np.array([0.3, -0.5, 1.0, 0.0], np.float32)


def _qkv(kvh=H, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, T, H, D)) * 1.5
    k, v = rng.normal(size=(B, T, kvh, D)) * 1.5, rng.normal(size=(B, T, kvh, D))
    return (jnp.asarray(x, jnp.float32) for x in (q, k, v))


def _kw(impl):
    return {"chunked": dict(block_q=4, block_k=3),
            "pallas": dict(block_q=8, block_k=4, block_q_bwd=4, block_k_bwd=8)}.get(impl, {})


@pytest.mark.parametrize("impl", ["reference", "chunked", "pallas"])
@pytest.mark.parametrize("kvh", [H, 2])
def test_every_implementation_draws_the_shared_noise(impl, kvh):
    q, k, v = _qkv(kvh)
    gate = sj.Gate(jnp.asarray(BIAS), shared_noise=True)
    out, st = sj.sparse_attention(q, k, v, gate, mode="train", seed=42, implementation=impl, **_kw(impl))
    shared = oracle.logistic(42, (B, H, T, T), shared_heads=True)
    o_out, o_dens, o_adj, _ = oracle.attention(q, k, v, BIAS, train=True, noise=shared)
    np.testing.assert_allclose(out, o_out, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(st.expected_density, o_dens, atol=1e-6, rtol=1e-5)
    own = oracle.attention(q, k, v, BIAS, train=True, noise=oracle.logistic(42, (B, H, T, T)))[2]
    assert (own != o_adj).mean() > 0.05  # the shared draw samples other gates than the per-head one
    if impl != "pallas":  # the materialising implementations return the sampled gates themselves
        _, st = sj.sparse_attention(q, k, v, gate, mode="train", seed=42, implementation=impl, return_adjacency=True,
                                    **_kw(impl))
        np.testing.assert_array_equal(st.adjacency, o_adj)
    # eval mode has no noise: the deterministic gates, whatever the draw
    e_out, _ = sj.sparse_attention(q, k, v, gate, mode="eval", implementation=impl, **_kw(impl))
    np.testing.assert_allclose(e_out, oracle.attention(q, k, v, BIAS)[0], atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("impl", ["reference", "chunked", "pallas"])
def test_the_straight_through_gradient_under_the_shared_noise(impl):
    """d/d(bias) of sum(out * w) against the oracle's finite differences with its hard sample frozen."""
    q, k, v = _qkv(seed=1)
    w = np.random.default_rng(5).normal(size=(B, T, H, D))
    noise = oracle.logistic(9, (B, H, T, T), shared_heads=True)
    frozen = oracle.attention(q, k, v, BIAS, train=True, noise=noise)[3]
    objective = lambda bb: (oracle.attention(q, k, v, bb, train=True, noise=noise, frozen_hard=frozen)[0] * w).sum()
    eps, want = 1e-6, np.zeros(H)
    for h in range(H):
        step = np.eye(H)[h] * eps
        want[h] = (objective(BIAS + step) - objective(BIAS - step)) / (2 * eps)

    def loss(bb):
        out, _ = sj.sparse_attention(q, k, v, sj.Gate(bb, shared_noise=True), mode="train", seed=9,
                                     implementation=impl, **_kw(impl))
        return jnp.sum(out * jnp.asarray(w, jnp.float32))

    np.testing.assert_allclose(jax.grad(loss)(jnp.asarray(BIAS)), want, atol=2e-4, rtol=2e-3)
    assert np.abs(want).max() > 1e-3


def test_copies_of_a_read_are_sampled_together():
    """Two heads with the same queries, keys and bias: under the shared draw their sampled gates are identical
    pair by pair (a copy is closed whenever the original is), under per-head draws they disagree on many pairs."""
    q, k, v = _qkv(seed=2)
    q, k = q.at[:, :, 1].set(q[:, :, 0]), k.at[:, :, 1].set(k[:, :, 0])
    bias = jnp.asarray([0.5, 0.5, 0.5, 0.5])
    adj = {}
    for shared in (False, True):
        _, st = sj.sparse_attention(q, k, v, sj.Gate(bias, shared_noise=shared), mode="train", seed=3,
                                    implementation="reference", return_adjacency=True)
        adj[shared] = np.asarray(st.adjacency)
    causal = np.tril(np.ones((T, T), bool))
    assert (adj[True][:, 0] == adj[True][:, 1])[:, causal].all()
    assert (adj[False][:, 0] != adj[False][:, 1])[:, causal].mean() > 0.2


def test_the_run_config_carries_it_to_the_step_and_not_to_the_exported_gate(tmp_path):
    from sparsejax.config import load_config
    from sparsejax.gates import gate_to_json
    from sparsejax.train import Trainer

    over = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "data.batch_size=4",
            "train.steps=1", "train.eval_every=1", "train.log_every=1"]
    assert Trainer(load_config("toy_addition_posttrain", over), tmp_path / "a", progress=False).spec.gate.shared_noise \
        is False
    run = Trainer(load_config("toy_addition_posttrain", [*over, "gate.shared_noise=true"]), tmp_path / "b",
                  progress=False)
    assert run.spec.gate.shared_noise is True
    assert "shared_noise" not in gate_to_json(dataclasses.replace(run.spec.gate, bias=jnp.zeros(())))


def test_the_presets_declare_their_noise():
    """The Shakespeare presets draw the noise once for all heads (density: twenty-fifth round; CE target:
    twenty-sixth); the toy preset and the real models' CE-target presets keep the method's draw per head."""
    from sparsejax.config import load_config

    for name in ("shakespeare_posttrain_density", "shakespeare_posttrain"):
        assert load_config(name).gate.shared_noise is True
    for name in ("toy_addition_posttrain", "gpt2_small"):
        assert load_config(name).gate.shared_noise is False
