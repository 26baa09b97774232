"""gate.penalty_knee (issue J, nineteenth round in docs/controllers.md): the density penalty's gradient in a gate
logit above the knee is its slope at the knee; gate.penalty_floor (twenty-eighth round): below the floor it is 0.
The value (the expected density, logged and used by the density target) is unchanged; the gradient is checked
against a float64 numpy statement of ``sigmoid'(min(g, k))`` (0 under the floor) in the gate maps and in every
attention implementation (the Pallas kernel in interpret mode)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.gates import expected_gate, expected_gate_slope

from oracle import sig


def _slope(g, knee, floor=None):
    e = sig(np.minimum(g, knee) if knee is not None else g)
    return np.where(g > floor, e * (1.0 - e), 0.0) if floor is not None else e * (1.0 - e)


@pytest.mark.parametrize("knee,floor", [(None, None), (0.0, None), (2.5, None), (None, -2.0), (2.5, -3.5)])
def test_the_gate_maps_keep_the_value_and_take_the_slope_at_the_knee_and_none_under_the_floor(knee, floor):
    g = np.array([-30.0, -4.0, -3.0, -1.0, 0.0, 1.9, 2.6, 7.0, 25.0])
    gate = sj.Gate(jnp.zeros(()), penalty_knee=knee, penalty_floor=floor)
    value, grad = jax.vmap(jax.value_and_grad(lambda x: expected_gate(gate, x)))(jnp.asarray(g, jnp.float32))
    np.testing.assert_array_equal(value, jax.nn.sigmoid(jnp.asarray(g, jnp.float32)))  # bit for bit: the value
    np.testing.assert_allclose(grad, _slope(g, knee, floor), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(expected_gate_slope(gate, jnp.asarray(g, jnp.float32)), _slope(g, knee, floor),
                               rtol=1e-5, atol=1e-7)
    if knee is not None:  # an open edge at logit 25 keeps the knee's price; the sigmoid's is ~1e-11
        assert grad[-1] == pytest.approx(_slope(np.array(knee), None), rel=1e-5)
    if floor is not None:  # a closed edge at -4 (and -3 under a floor of -2) is no longer pushed down
        assert grad[1] == 0.0 and (grad[2] == 0.0) == (floor > -3.0)


@pytest.mark.parametrize("impl", ["reference", "chunked", "pallas"])
@pytest.mark.parametrize("mode,floor", [("eval", None), ("train", None), ("train", -2.0)])
def test_every_implementation_prices_open_edges_by_the_knee(impl, mode, floor):
    """d/d(bias) of sum(expected_density * c) is sum over causal pairs of c sigmoid'(min(g, k)) / pairs (0 at
    g <= floor), with logits from 8 to -8 (q and k scaled up); the expected density and the output are those
    without the knee and the floor."""
    b, t, h, d, knee = 2, 11, 2, 8, 1.0
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(b, t, h, d)) * 1.8, rng.normal(size=(b, t, h, d)) * 1.8, rng.normal(size=(b, t, h, d)))
    bias = np.array([2.0, -0.5])
    c = rng.normal(size=(b, h))
    g = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(d) + bias[None, :, None, None]
    causal = np.tril(np.ones((t, t), bool))
    assert (g[:, :, causal] > 5).any() and (g[:, :, causal] < -5).any()
    want = (c[:, :, None, None] * np.where(causal, _slope(g, knee, floor), 0.0)).sum((0, 2, 3)) / causal.sum()
    kw = dict(block_q=8, block_k=4, block_q_bwd=4, block_k_bwd=8) if impl == "pallas" else {}
    if impl == "chunked":
        kw = dict(block_q=4, block_k=4)

    def run(knee_, floor_=None):
        def loss(bb):
            out, st = sj.sparse_attention(*(jnp.asarray(x, jnp.float32) for x in (q, k, v)),
                                          sj.Gate(bb, penalty_knee=knee_, penalty_floor=floor_), mode=mode, seed=4,
                                          implementation=impl, **kw)
            return jnp.sum(st.expected_density * jnp.asarray(c, jnp.float32)), (out, st.expected_density)
        return jax.grad(loss, has_aux=True)(jnp.asarray(bias, jnp.float32))

    got, (out, dens) = run(knee, floor)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    _, (out0, dens0) = run(None)
    np.testing.assert_array_equal(dens, dens0)
    np.testing.assert_array_equal(out, out0)


def test_the_run_config_carries_the_knee_to_the_step_and_not_to_the_exported_gate(tmp_path):
    from sparsejax.config import load_config
    from sparsejax.gates import gate_to_json
    from sparsejax.train import Trainer

    over = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "data.batch_size=4",
            "train.steps=1", "train.eval_every=1", "train.log_every=1"]
    with pytest.raises(ValueError, match="gate.penalty_knee=nan must be a gate logit"):
        load_config("toy_addition_posttrain", [*over, "gate.penalty_knee=nan"])
    with pytest.raises(ValueError, match="gate.penalty_floor=1.0 must be below gate.penalty_knee=0.5"):
        load_config("toy_addition_posttrain", [*over, "gate.penalty_knee=0.5", "gate.penalty_floor=1.0"])
    cfg = load_config("toy_addition_posttrain", [*over, "gate.penalty_knee=0.5", "gate.penalty_floor=-3"])
    run = Trainer(cfg, tmp_path / "run", progress=False)
    assert run.spec.gate.penalty_knee == 0.5 and run.spec.gate.penalty_floor == -3.0
    exported = gate_to_json(dataclasses.replace(run.spec.gate, bias=jnp.zeros(())))
    assert "penalty_knee" not in exported and "penalty_floor" not in exported
