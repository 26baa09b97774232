"""The TPU (Mosaic) kernels on their grid (``attention/pallas_tpu.py``), run on this CPU in Pallas' TPU interpret
mode (``pltpu.force_tpu_interpret_mode``: the grid, VMEM scratch and the pipeline simulated, uninitialised memory
NaN) against the reference: outputs, densities, counted edges and gradients, train-mode sampled gates included;
and their Mosaic lowering, whose blocks no longer span the sequence."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

import sparsejax as sj
from sparsejax.attention import pallas as kernel
from sparsejax.attention.pallas import pallas_attention


def _qkv(b=1, t=21, h=4, kvh=2, d=8, seed=3, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=s) * 1.5, dtype) for s in ((b, t, h, d), (b, t, kvh, d), (b, t, kvh, d))]


def _grid_kernel(q, k, gate, *, train, causal=True, window=None, bq=8, bk=4, bq_bwd=4, bk_bwd=8):
    """The TPU kernels with small tiles (the public path floors TPU tiles at 128 rows): many tiles, padded rows
    and keys, every tile class."""
    st = kernel._Static(backend="tpu", causal=causal, train=train,
                        gate=None if gate is None else dataclasses.replace(gate, bias=None), t=q.shape[1],
                        s=k.shape[1], block_q=bq, block_k=bk, block_q_bwd=bq_bwd, block_k_bwd=bk_bwd, window=window)

    def f(qq, kk, vv, bias, seed):
        return kernel._fused(st, qq, kk, vv, bias, seed, jnp.zeros((2,), jnp.int32))
    return f


CASES = [  # family, mode, causal, window, (bq, bk, bq_bwd, bk_bwd)
    ("bernoulli", "train", True, None, (8, 4, 4, 8)),
    ("hard_concrete", "train", True, 5, (8, 4, 4, 8)),
    ("bernoulli", "eval", True, 9, (4, 8, 8, 4)),
    ("bernoulli", "train", False, None, (8, 8, 8, 8)),
    (None, "train", True, 6, (8, 4, 4, 8)),
]


@pytest.mark.parametrize("family, mode, causal, window, blocks", CASES)
def test_grid_kernels_match_reference(family, mode, causal, window, blocks):
    b, t = 2, 21
    q, k, v = _qkv(b=b, t=t)
    bias = jnp.asarray([0.4, -0.3, 0.9, 0.0], jnp.float32)
    w = jnp.asarray(np.random.default_rng(5).normal(size=q.shape), jnp.float32)
    train = mode == "train" and family is not None
    seed = jnp.uint32(9)

    def ref_loss(qq, kk, vv, bb):
        out, st = sj.sparse_attention(qq, kk, vv, None if family is None else sj.Gate(bb, family), mode=mode,
                                      seed=9, causal=causal, window=window, implementation="reference")
        return jnp.sum(out * w) + jnp.sum(st.expected_density ** 2), (out, st.expected_density, st.edge_density)

    gate = None if family is None else sj.Gate(bias, family)
    f = _grid_kernel(q, k, gate, train=train, causal=causal, window=window, **dict(zip(("bq", "bk", "bq_bwd",
                                                                                     "bk_bwd"), blocks)))

    def tpu_loss(qq, kk, vv, bb):
        out, dens, edges = f(qq, kk, vv, bb, seed)
        return jnp.sum(out * w) + jnp.sum(dens ** 2), (out, dens, edges)

    (_, want), g_want = jax.jit(jax.value_and_grad(ref_loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, bias)
    with pltpu.force_tpu_interpret_mode():
        (_, got), g_got = jax.jit(jax.value_and_grad(tpu_loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, bias)
    chex.assert_trees_all_close(got, want, atol=2e-5, rtol=1e-5)
    chex.assert_trees_all_close(g_got[:3], g_want[:3], atol=5e-5, rtol=1e-4)
    if family is not None:
        chex.assert_trees_all_close(g_got[3], g_want[3], atol=5e-5, rtol=1e-4)
        assert 0.05 < float(np.mean(got[2])) < 0.95  # gates both open and closed


def test_grid_forward_draws_the_gates_of_the_loop_kernel():
    """The sampled gates gate by gate: the effective attention read through one-hot values (``v = e_j``) equals
    the interpret-mode loop kernel's with the same tiles, in train mode."""
    t, d = 14, 16
    q, k, _ = _qkv(t=t, d=d, seed=1)
    onehot = jnp.broadcast_to(jnp.eye(t, d, dtype=q.dtype)[None, :, None, :], (1, t, 2, d))
    gate = sj.Gate(jnp.asarray([0.3, -0.5, 1.0, 0.0], jnp.float32))
    blocks = dict(block_q=4, block_k=4, block_q_bwd=4, block_k_bwd=4)
    want, _ = sj.sparse_attention(q, k, onehot, gate, mode="train", seed=42, implementation="pallas", window=7,
                                  **blocks)
    f = _grid_kernel(q, k, gate, train=True, window=7, bq=4, bk=4, bq_bwd=4, bk_bwd=4)
    with pltpu.force_tpu_interpret_mode():
        got, _, _ = jax.jit(f)(q, k, onehot, gate.bias, jnp.uint32(42))
    eff_want, eff_got = np.asarray(want[..., :t]) > 0, np.asarray(got[..., :t]) > 0
    np.testing.assert_array_equal(eff_got, eff_want)
    assert 0.1 < eff_got.mean() < 0.5
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


def test_public_tpu_path_matches_reference():
    """``pallas_attention(backend="tpu")``, the tiles the TPU gets (128 rows at least), several tiles."""
    q, k, v = _qkv(t=300, h=2, kvh=1, d=64, seed=2)
    gate = sj.Gate(jnp.asarray([0.5, -0.2], jnp.float32))

    def loss(qq, kk, vv, impl, **kw):
        if impl == "tpu":
            out, dens, edges, _ = pallas_attention(qq, kk, vv, gate, causal=True, train=True, seed=jnp.uint32(7),
                                                   return_adjacency=False, backend="tpu", **kw)
        else:
            out, st = sj.sparse_attention(qq, kk, vv, gate, mode="train", seed=7, implementation="reference", **kw)
            dens, edges = st.expected_density, st.edge_density
        return jnp.sum(out ** 2) + jnp.sum(dens), (out, dens, edges)

    for window in (None, 150):
        want = jax.jit(jax.value_and_grad(lambda *a: loss(*a, "reference", window=window), (0, 1, 2),
                                          has_aux=True))(q, k, v)
        with pltpu.force_tpu_interpret_mode():
            got = jax.jit(jax.value_and_grad(lambda *a: loss(*a, "tpu", window=window, block_q=128, block_k=128,
                                                             block_q_bwd=128, block_k_bwd=128), (0, 1, 2),
                                             has_aux=True))(q, k, v)
        chex.assert_trees_all_close(got[0][1], want[0][1], atol=2e-5, rtol=1e-5)
        chex.assert_trees_all_close(got[1], want[1], atol=1e-4, rtol=1e-4)


def _pallas_blocks(jaxpr):
    """(name, grid, block shapes) of every pallas_call in a jaxpr, nested ones included."""
    from jax.extend import core

    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "pallas_call":
            gm = eqn.params["grid_mapping"]
            found.append((str(eqn.params["name"]), gm.grid,
                          [tuple(bm.block_shape) for bm in gm.block_mappings]))
        for sub in core.jaxprs_in_params(eqn.params):
            found += _pallas_blocks(sub)
    return found


def test_tpu_blocks_do_not_span_the_sequence():
    """At T = 65536 every block of the three TPU kernels is a tile (256 rows/keys), none the whole sequence, and
    the sliding window shortens the grid's inner axis to the tiles the window reaches."""
    t = 65536
    q = jax.ShapeDtypeStruct((1, t, 4, 128), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((1, t, 2, 128), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((4,), jnp.float32)

    def grads(window):
        def loss(qq, kk, vv, bb):
            out, dens, _, _ = pallas_attention(qq, kk, vv, sj.Gate(bb), causal=True, train=True, seed=jnp.uint32(3),
                                               return_adjacency=False, backend="tpu", window=window)
            return jnp.sum(out.astype(jnp.float32)) + jnp.sum(dens)
        return jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2, 3)))(q, k, k, bias).jaxpr

    for window, inner in ((None, t // 256), (1024, 5)):
        calls = {name: (grid, shapes) for name, grid, shapes in _pallas_blocks(grads(window))}
        assert set(calls) == {"sparse_attention_fwd", "sparse_attention_dkdv", "sparse_attention_dq"}, calls
        for name, (grid, shapes) in calls.items():
            assert all(t not in s for s in shapes), (name, shapes)
            assert max(max((x for x in s if isinstance(x, int)), default=0) for s in shapes) <= 256, (name, shapes)
            assert grid[2] == t // 256 and grid[3] == inner, (name, grid)


def test_grid_kernels_lower_for_tpu_at_long_sequences():
    """The three grid kernels lower to Mosaic (TPU v5e) at T = 32768, where today's whole-sequence K/V blocks
    (2 x 8 MiB of bf16 per program, double-buffered) would not fit a v5e core's VMEM; with and without a window.
    Lowering checks block shapes, layouts and op support; the final compilation needs the accelerator."""
    try:
        from jax._src.mesh import AbstractDevice
    except ImportError:  # pragma: no cover - private API moved
        pytest.skip("this JAX has no AbstractDevice to stand in for a TPU")
    t = 32768
    q = jax.ShapeDtypeStruct((1, t, 4, 128), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((1, t, 2, 128), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((4,), jnp.float32)
    mesh = jax.sharding.AbstractMesh((1,), ("x",), abstract_device=AbstractDevice(
        device_kind="TPU v5 lite", num_cores=1, platform="tpu"))
    for window in (None, 4096):
        def loss(qq, kk, vv, bb):
            out, dens, _, _ = pallas_attention(qq, kk, vv, sj.Gate(bb), causal=True, train=True, seed=jnp.uint32(3),
                                               return_adjacency=False, backend="tpu", window=window)
            return jnp.sum(out.astype(jnp.float32)) + jnp.sum(dens)
        with jax.sharding.use_abstract_mesh(mesh):
            text = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).trace(q, k, k, bias).lower(
                lowering_platforms=("tpu",)).as_text()
        for name in ("sparse_attention_fwd", "sparse_attention_dkdv", "sparse_attention_dq"):
            assert name in text, name
