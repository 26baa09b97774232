"""sparse_attention against the float64 numpy oracle, and chunked against reference."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import sparsejax as sj
from sparsejax.gates import expected_gate, gate_sample, gate_value_and_slope, hash_uniform

import oracle

FAMILIES = ["bernoulli", "hard_concrete"]


def _qkv(b=2, t=9, h=4, kvh=2, d=8, s=None, seed=0, dtype=jnp.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    s = t if s is None else s
    q = rng.normal(size=(b, t, h, d)) * scale
    k = rng.normal(size=(b, s, kvh, d)) * scale
    v = rng.normal(size=(b, s, kvh, d))
    return [jnp.asarray(x, dtype) for x in (q, k, v)]


# ----------------------------------------------------------------------------------------------- noise
def test_hash_matches_independent_numpy():
    coords = np.ix_(np.arange(3), np.arange(5), np.arange(17), np.arange(19))
    for seed in (0, 1, 2**32 - 1, 123456789):
        u, one_minus_u = (np.asarray(x) for x in hash_uniform(np.uint32(seed), *coords))
        want = oracle.uniform(seed, *coords)
        np.testing.assert_array_equal(u, want)  # exact: 23 bits + 0.5 fit a float32
        np.testing.assert_array_equal(one_minus_u, 1.0 - want)


def test_hash_is_uniform_and_decorrelated():
    u = np.asarray(hash_uniform(np.uint32(7), 0, 0, np.arange(512)[:, None], np.arange(512)[None, :])[0]).ravel()
    assert 0 < u.min() and u.max() < 1
    hist, _ = np.histogram(u, bins=16, range=(0, 1))
    expected = u.size / 16
    chi2 = ((hist - expected) ** 2 / expected).sum()
    assert chi2 < 40, chi2  # 15 dof: p ~ 5e-4
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
    other = np.asarray(hash_uniform(np.uint32(8), 0, 0, np.arange(512)[:, None], np.arange(512)[None, :])[0]).ravel()
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.01


# ---------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("impl", ["reference", "chunked"])
@pytest.mark.parametrize("causal", [True, False])
def test_forward_matches_oracle(family, mode, impl, causal):
    q, k, v = _qkv(t=11, scale=1.5)
    bias = np.array([0.3, -0.5, 1.0, 0.0], np.float32)
    seed = 42
    out, st = sj.sparse_attention(q, k, v, sj.Gate(jnp.asarray(bias), family), mode=mode, seed=seed,
                                  causal=causal, implementation=impl, return_adjacency=True,
                                  **({"block_q": 4, "block_k": 3} if impl == "chunked" else {}))
    noise = oracle.logistic(seed, (2, 4, 11, 11))
    o_out, o_dens, o_adj, _ = oracle.attention(q, k, v, bias, family=family, train=mode == "train", noise=noise,
                                               causal=causal)
    chex.assert_shape(out, q.shape)
    chex.assert_shape(st.expected_density, (2, 4))
    np.testing.assert_allclose(out, o_out, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(st.expected_density, o_dens, atol=1e-6, rtol=1e-5)
    np.testing.assert_array_equal(st.adjacency, o_adj)
    assert 0.05 < o_adj.mean() < 0.95  # the test exercises both open and closed gates


def test_dense_equals_jax_dot_product_attention():
    q, k, v = _qkv(t=13)
    want = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    for impl in ("reference", "chunked"):
        out, st = sj.sparse_attention(q, k, v, None, implementation=impl, block_q=5, block_k=4) \
            if impl == "chunked" else sj.sparse_attention(q, k, v, None, implementation=impl)
        np.testing.assert_allclose(out, want, atol=1e-5)
        np.testing.assert_array_equal(st.expected_density, 1.0)


# --------------------------------------------------------------------------------------------- gradients
def _finite_diff(f, x, eps=1e-6):
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        grad[idx] = (f(xp) - f(xm)) / (2 * eps)
    return grad


def _scaled(gate, sigma):
    """``gate`` with its training noise scaled by ``sigma`` (None: the method's full noise)."""
    import dataclasses

    return gate if sigma is None else dataclasses.replace(gate, noise=jnp.float32(sigma))


def _check_gradients_against_oracle(family, mode, impl, *, t, window=None, block=4, sigma=None):
    """d/d(q, k, v, bias) of sum(out * w) + sum(density * c) against the float64 oracle's finite differences,
    straight-through for the Bernoulli gate (its hard sample frozen at the point); ``sigma``: a scaled training
    noise (``Gate.noise``; the oracle given sigma * l)."""
    b, h, kvh, d = 1, 2, 1, 3
    q, k, v = _qkv(b=b, t=t, h=h, kvh=kvh, d=d, seed=1, scale=1.5)
    bias = np.array([0.4, -0.3])
    rng = np.random.default_rng(5)
    w, c = rng.normal(size=(b, t, h, d)), rng.normal(size=(b, h))
    noise = oracle.logistic(9, (b, h, t, t)) * (1.0 if sigma is None else sigma)
    base = dict(family=family, train=mode == "train", noise=noise, **({"window": window} if window else {}))
    frozen = oracle.attention(q, k, v, bias, **base)[3] if family == "bernoulli" else None

    def objective(qq, kk, vv, bb):
        out, dens, _, _ = oracle.attention(qq, kk, vv, bb, frozen_hard=frozen, **base)
        return (out * w).sum() + (dens * c).sum()

    args = [np.asarray(q, np.float64), np.asarray(k, np.float64), np.asarray(v, np.float64), bias]
    want = [_finite_diff(lambda x, i=i: objective(*args[:i], x, *args[i + 1:]), args[i]) for i in range(4)]

    def loss(qq, kk, vv, bb):
        out, st = sj.sparse_attention(qq, kk, vv, _scaled(sj.Gate(bb, family), sigma), mode=mode, seed=9,
                                      implementation=impl, **({"window": window} if window else {}),
                                      **({"block_q": block, "block_k": block} if impl == "chunked" else {}))
        return jnp.sum(out * w) + jnp.sum(st.expected_density * c)

    got = jax.grad(loss, argnums=(0, 1, 2, 3))(q, k, v, jnp.asarray(bias, jnp.float32))
    for name, g_, w_ in zip("qkvb", got, want):
        np.testing.assert_allclose(g_, w_, atol=2e-4, rtol=2e-3, err_msg=f"{impl} d/d{name}")
    assert np.abs(want[3]).max() > 1e-3  # the gate path carries gradient


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_gradients_match_oracle_finite_differences(family, mode, impl):
    _check_gradients_against_oracle(family, mode, impl, t=6)


def test_straight_through_slope_matches_autodiff():
    g = jnp.linspace(-6, 6, 101)
    noise = hash_uniform(np.uint32(1), 0, 0, 0, jnp.arange(101))
    for family in FAMILIES:
        gate = sj.Gate(jnp.zeros(()), family)
        for train in (False, True):
            val, slope = gate_value_and_slope(gate, g, noise, train)
            auto = jax.vmap(jax.grad(lambda x, n: gate_sample(gate, x, n, train)))(g, noise)
            if train:  # and the value is the family's formula on logistic noise, written independently
                l = np.log(np.float64(noise[0])) - np.log(np.float64(noise[1]))
                if family == "bernoulli":
                    np.testing.assert_array_equal(val, (np.asarray(g) + l > 0))
                else:
                    pre = oracle.sig((np.asarray(g) + l) / gate.temperature) * 1.2 - 0.1
                    np.testing.assert_allclose(val, np.clip(pre, 0, 1), atol=1e-6)
            np.testing.assert_allclose(val, gate_sample(gate, g, noise, train), atol=0)
            np.testing.assert_allclose(slope, auto, atol=1e-6)


# ------------------------------------------------------------------------------------- chunked vs reference
class ChunkedEqualsReference(chex.TestCase):
    """Forward values and gradients (q, k, v, bias) of chunked vs reference, with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(
        family=FAMILIES, mode=["eval", "train"],
        # (batch, T, heads, kv_heads, head_dim, block_q, block_k, causal): odd T, blocks not dividing T, GQA 1-8
        shape=[(1, 17, 4, 4, 8, 5, 7, True), (2, 33, 6, 2, 16, 8, 8, True), (1, 64, 8, 1, 8, 64, 32, True),
               (2, 23, 4, 2, 8, 32, 6, True), (1, 19, 4, 2, 8, 8, 5, False)])
    def test_equal(self, family, mode, shape):
        b, t, h, kvh, d, bq, bk, causal = shape
        q, k, v = _qkv(b=b, t=t, h=h, kvh=kvh, d=d, seed=t)
        gate = sj.make_gate(0.5, family, shape=(h,))
        ct = jnp.asarray(np.random.default_rng(2).normal(size=(b, t, h, d)), jnp.float32)

        def run(impl):
            def loss(qq, kk, vv, bias):
                out, st = sj.sparse_attention(qq, kk, vv, sj.Gate(bias, family), mode=mode, seed=11, causal=causal,
                                              implementation=impl,
                                              **({"block_q": bq, "block_k": bk} if impl == "chunked" else {}))
                return jnp.sum(out * ct) + jnp.sum(st.expected_density ** 2), (out, st.expected_density)
            return self.variant(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, gate.bias)

        (_, ref_aux), ref_grads = run("reference")
        (_, chk_aux), chk_grads = run("chunked")
        chex.assert_trees_all_close(chk_aux, ref_aux, atol=2e-5, rtol=1e-5)
        chex.assert_trees_all_close(chk_grads, ref_grads, atol=5e-5, rtol=1e-4)


def test_chunked_bf16_matches_reference():
    q, k, v = _qkv(b=1, t=40, h=4, kvh=2, d=16, dtype=jnp.bfloat16)
    ct = jnp.ones((1, 40, 4, 16), jnp.bfloat16)

    def run(impl, **kw):
        f = lambda qq, kk, vv: jnp.sum((sj.sparse_attention(qq, kk, vv, 1.0, seed=3, implementation=impl, **kw)[0]
                                        * ct).astype(jnp.float32))
        return sj.sparse_attention(q, k, v, 1.0, seed=3, implementation=impl, **kw)[0], jax.grad(f, (0, 1, 2))(q, k, v)

    out_r, g_r = run("reference")
    out_c, g_c = run("chunked", block_q=16, block_k=24)
    assert out_c.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in g_c)
    np.testing.assert_allclose(np.float32(out_c), np.float32(out_r), atol=1e-2, rtol=1e-2)
    for a, b in zip(g_c, g_r):
        np.testing.assert_allclose(np.float32(a), np.float32(b), atol=3e-2, rtol=3e-2)


# --------------------------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_all_gates_closed_gives_zero_without_nan(impl):
    q, k, v = _qkv(t=10)
    f = lambda qq: sj.sparse_attention(qq, k, v, -1e4, mode="train", seed=0, implementation=impl)
    out, st = f(q)
    np.testing.assert_array_equal(out, 0.0)
    grad = jax.grad(lambda qq: jnp.sum(f(qq)[0]) + jnp.sum(f(qq)[1].expected_density))(q)
    assert np.isfinite(np.asarray(grad)).all()


def test_same_seed_same_gates_other_seed_other_gates():
    q, k, v = _qkv(t=32)
    adj = lambda seed, impl: sj.sparse_attention(q, k, v, 0.0, seed=seed, implementation=impl,
                                                 return_adjacency=True)[1].adjacency
    np.testing.assert_array_equal(adj(5, "reference"), adj(5, "chunked"))
    np.testing.assert_array_equal(adj(5, "chunked"), jax.jit(lambda: adj(5, "chunked"))())
    assert (adj(5, "chunked") != adj(6, "chunked")).mean() > 0.1
    traced = jax.jit(lambda s: sj.sparse_attention(q, k, v, 0.0, seed=s, return_adjacency=True)[1].adjacency)
    np.testing.assert_array_equal(traced(jnp.int32(5)), adj(5, "reference"))


def test_hard_concrete_expected_l0_matches_monte_carlo():
    gate = sj.Gate(jnp.zeros(()), "hard_concrete")
    g = jnp.array([-3.0, -1.0, 0.0, 1.0, 3.0])[:, None]
    noise = hash_uniform(np.uint32(17), 0, 0, jnp.arange(5)[:, None], jnp.arange(200_000)[None, :])
    value, _ = gate_value_and_slope(gate, g, noise, True)
    freq = np.asarray((value > 0).mean(1))
    want = np.asarray(expected_gate(gate, g[:, 0]))
    assert np.all(np.abs(freq - want) < 4 * np.sqrt(want * (1 - want) / 200_000) + 1e-4), (freq, want)
    gamma, zeta = gate.stretch  # and the formula itself, independently
    np.testing.assert_allclose(want, 1 / (1 + np.exp(-(np.asarray(g[:, 0]) - gate.temperature * np.log(-gamma / zeta)))),
                               rtol=1e-6)


# ------------------------------------------------------------------------------------- noise annealing
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("impl", ["reference", "chunked"])
@pytest.mark.parametrize("sigma", [0.5, 0.0, 1.0])
def test_scaled_noise_matches_oracle(family, impl, sigma):
    """Gate.noise = sigma: the training noise is sigma times the logistic noise (the oracle given sigma * l)."""
    q, k, v = _qkv(t=11, scale=1.5)
    bias = np.array([0.3, -0.5, 1.0, 0.0], np.float32)
    out, _ = sj.sparse_attention(q, k, v, _scaled(sj.Gate(jnp.asarray(bias), family), sigma), mode="train", seed=42,
                                 implementation=impl, **({"block_q": 4, "block_k": 3} if impl == "chunked" else {}))
    noise = sigma * oracle.logistic(42, (2, 4, 11, 11))
    want = oracle.attention(q, k, v, bias, family=family, train=True, noise=noise)[0]
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_noise_scale_ends_at_the_deterministic_gates(impl):
    """Bernoulli: at scale 0 the sampled gates are the eval-mode gates exactly; at scale 1 (traced) they are the
    method's (noise None) exactly; the straight-through slope at scale 0 is sigmoid'(g)."""
    q, k, v = _qkv(t=13, scale=1.5)
    gate = sj.Gate(jnp.asarray([0.3, -0.5, 1.0, 0.0]))
    kw = {"block_q": 4, "block_k": 5} if impl == "chunked" else {}
    run = lambda g, mode: sj.sparse_attention(q, k, v, g, mode=mode, seed=7, implementation=impl, **kw)[0]
    np.testing.assert_array_equal(run(_scaled(gate, 0.0), "train"), run(gate, "eval"))
    np.testing.assert_array_equal(run(_scaled(gate, 1.0), "train"), run(gate, "train"))
    g = jnp.linspace(-4, 4, 33)
    u = hash_uniform(np.uint32(1), 0, 0, 0, jnp.arange(33))
    value, slope = gate_value_and_slope(_scaled(gate, 0.0), g, u, True)
    np.testing.assert_array_equal(value, (g > 0).astype(jnp.float32))
    e = 1 / (1 + np.exp(-np.asarray(g, np.float64)))
    np.testing.assert_allclose(slope, e * (1 - e), rtol=1e-5, atol=1e-7)


def test_scaled_bernoulli_frequency_is_sigmoid_of_g_over_sigma():
    g = jnp.array([-1.0, 0.0, 0.6])[:, None]
    noise = hash_uniform(np.uint32(3), 1, 2, jnp.arange(3)[:, None], jnp.arange(200_000)[None, :])
    for sigma in (0.5, 0.25):
        value, _ = gate_value_and_slope(_scaled(sj.Gate(jnp.zeros(())), sigma), g, noise, True)
        np.testing.assert_allclose(np.asarray(value.mean(1)), 1 / (1 + np.exp(-np.asarray(g[:, 0]) / sigma)),
                                   atol=5e-3)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_scaled_noise_gradients_match_oracle_finite_differences(impl):
    """The straight-through gradient under a scaled noise (sigma 0.4), against the oracle's finite differences."""
    _check_gradients_against_oracle("bernoulli", "train", impl, t=6, sigma=0.4)


def test_pallas_refuses_a_scaled_noise():
    q, k, v = _qkv(t=8)
    with pytest.raises(ValueError, match="runs in implementation='chunked'"):
        sj.sparse_attention(q, k, v, _scaled(sj.Gate(jnp.zeros(())), 0.5), mode="train", seed=1,
                            implementation="pallas")


def test_bernoulli_train_frequency_matches_sigmoid():
    g = jnp.array([-2.0, 0.0, 1.5])[:, None]
    noise = hash_uniform(np.uint32(3), 1, 2, jnp.arange(3)[:, None], jnp.arange(200_000)[None, :])
    value, _ = gate_value_and_slope(sj.Gate(jnp.zeros(())), g, noise, True)
    np.testing.assert_allclose(np.asarray(value.mean(1)), 1 / (1 + np.exp(-np.asarray(g[:, 0]))), atol=5e-3)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, message", [
    (dict(q=(2, 8, 4, 8), k=(2, 8, 3, 8)), "multiple of k/v heads"),
    (dict(q=(2, 8, 4, 8), k=(2, 8, 2, 4)), "head_dim differs"),
    (dict(q=(2, 8, 4), k=(2, 8, 2, 8)), r"\[batch, seq, heads, head_dim\]"),
    (dict(q=(3, 8, 4, 8), k=(2, 8, 2, 8)), "batch sizes differ"),
])
def test_shape_errors(kwargs, message):
    q = jnp.zeros(kwargs["q"])
    k = jnp.zeros(kwargs["k"])
    with pytest.raises(ValueError, match=message):
        sj.sparse_attention(q, k, k, 1.0, mode="eval")


def test_input_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="needs seed="):
        sj.sparse_attention(q, k, v, 1.0, mode="train")
    with pytest.raises(ValueError, match="share a dtype"):
        sj.sparse_attention(q, k.astype(jnp.bfloat16), v, 1.0, mode="eval")
    with pytest.raises(ValueError, match="mode must be"):
        sj.sparse_attention(q, k, v, 1.0, mode="test")
    with pytest.raises(ValueError, match="unknown implementation"):
        sj.sparse_attention(q, k, v, 1.0, mode="eval", implementation="flash")
    with pytest.raises(ValueError, match="gate bias"):
        sj.sparse_attention(q, k, v, jnp.zeros(3), mode="eval")
    with pytest.raises(ValueError, match="unknown gate family"):
        sj.Gate(jnp.zeros(()), "gaussian")
    with pytest.raises(ValueError, match="seed must be"):
        sj.sparse_attention(q, k, v, 1.0, seed=-1)
    with pytest.raises(ValueError, match="floating"):
        sj.sparse_attention(q.astype(jnp.int32), k.astype(jnp.int32), v.astype(jnp.int32), 1.0, mode="eval")


# ------------------------------------------------------------------------------------------------ memory
def _temp_bytes(impl, t):
    q = jax.ShapeDtypeStruct((1, t, 4, 32), jnp.float32)

    def loss(q, k, v):
        out, st = sj.sparse_attention(q, k, v, 1.0, seed=0, implementation=impl,
                                      **({"block_q": 128, "block_k": 128} if impl == "chunked" else {}))
        return jnp.sum(out) + jnp.sum(st.expected_density)

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, q, q).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_chunked_linear_reference_quadratic():
    ts = (512, 1024, 2048)
    chunked = [_temp_bytes("chunked", t) for t in ts]
    reference = [_temp_bytes("reference", t) for t in ts]
    for a, b in zip(chunked, chunked[1:]):
        assert b / a < 2.6, chunked  # linear: doubling T at most ~doubles temp memory
    for a, b in zip(reference, reference[1:]):
        assert b / a > 3.3, reference  # quadratic
    assert chunked[-1] * 8 < reference[-1]


def test_padding_mask_equals_the_unpadded_rows():
    """attention_mask (left / right padding): on the real tokens the gated attention, the edges and the densities
    are those of the unpadded sequence (the oracle, which knows no padding); padded queries output 0."""
    q, k, v = _qkv(t=11, scale=1.5)
    bias = np.array([0.3, -0.5, 1.0, 0.0], np.float32)
    mask = np.ones((2, 11), bool)
    mask[0, :4] = False   # left padding
    mask[1, -3:] = False  # right padding
    out, st = sj.sparse_attention(q, k, v, sj.Gate(jnp.asarray(bias)), mode="eval", attention_mask=mask,
                                  return_adjacency=True)
    for row, real in enumerate(mask):
        sl = lambda x: np.asarray(x)[row:row + 1][:, real]
        o_out, o_dens, o_adj, _ = oracle.attention(sl(q), sl(k), sl(v), bias)
        np.testing.assert_allclose(np.asarray(out)[row][real], o_out[0], atol=2e-5, rtol=2e-5)
        np.testing.assert_allclose(np.asarray(out)[row][~real], 0.0)
        np.testing.assert_allclose(st.expected_density[row], o_dens[0], atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(st.edge_density[row], o_adj[0].sum((1, 2)) / (real.sum() * (real.sum() + 1) / 2),
                                   atol=1e-6)
        adj = np.asarray(st.adjacency)[row]
        np.testing.assert_array_equal(adj[:, real][:, :, real], o_adj[0])
        assert not adj[:, ~real].any() and not adj[:, :, ~real].any()
    with pytest.raises(ValueError, match="attention_mask is supported by implementation='reference'"):
        sj.sparse_attention(q, k, v, 1.0, mode="eval", attention_mask=mask, implementation="chunked")
    with pytest.raises(ValueError, match=r"attention_mask must be \[batch, seq\]"):
        sj.sparse_attention(q, k, v, 1.0, mode="eval", attention_mask=mask[:, :5])


# ----------------------------------------------------------------------------------------- sliding window
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("impl, blocks", [("reference", {}), ("chunked", {"block_q": 4, "block_k": 3}),
                                          ("chunked", {"block_q": 8, "block_k": 8})])
@pytest.mark.parametrize("window", [1, 4, 7, 30])
def test_window_forward_matches_oracle(family, mode, impl, blocks, window):
    """Sliding-window attention (j <= i, i - j < W): output, expected and counted densities (over the pairs the
    dense model attends) and the sampled gates equal the oracle's; W = 30 > T is plain causal attention."""
    t = 19
    q, k, v = _qkv(t=t, scale=1.5)
    bias = np.array([0.3, -0.5, 1.0, 0.0], np.float32)
    out, st = sj.sparse_attention(q, k, v, sj.Gate(jnp.asarray(bias), family), mode=mode, seed=42,
                                  implementation=impl, return_adjacency=True, window=window, **blocks)
    noise = oracle.logistic(42, (2, 4, t, t))
    o_out, o_dens, o_adj, _ = oracle.attention(q, k, v, bias, family=family, train=mode == "train", noise=noise,
                                               window=window)
    np.testing.assert_allclose(out, o_out, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(st.expected_density, o_dens, atol=1e-6, rtol=1e-5)
    np.testing.assert_array_equal(st.adjacency, o_adj)
    pairs = sum(min(i + 1, window) for i in range(t))
    _, _, eval_adj, _ = oracle.attention(q, k, v, bias, family=family, noise=noise, window=window)
    np.testing.assert_allclose(st.edge_density, eval_adj.sum((2, 3)) / pairs, atol=1e-7)
    dense, _ = sj.sparse_attention(q, k, v, None, implementation=impl, window=window, **blocks)
    np.testing.assert_allclose(dense, oracle.attention(q, k, v, 0.0, dense=True, window=window)[0], atol=2e-5)
    if window < t:
        assert not np.asarray(o_adj)[..., np.subtract.outer(np.arange(t), np.arange(t)) >= window].any()
        assert np.abs(np.asarray(out) - np.asarray(sj.sparse_attention(
            q, k, v, sj.Gate(jnp.asarray(bias), family), mode=mode, seed=42, implementation=impl)[0])).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_window_gradients_match_oracle_finite_differences(family, impl):
    _check_gradients_against_oracle(family, "train", impl, t=7, window=3, block=2)


@pytest.mark.parametrize("shape", [(2, 33, 6, 2, 16, 8, 8, 5), (1, 40, 4, 1, 8, 5, 7, 12), (1, 64, 4, 2, 8, 16, 16, 16)])
def test_window_chunked_equals_reference_values_and_gradients(shape):
    b, t, h, kvh, d, bq, bk, window = shape
    q, k, v = _qkv(b=b, t=t, h=h, kvh=kvh, d=d, seed=t)
    ct = jnp.asarray(np.random.default_rng(2).normal(size=(b, t, h, d)), jnp.float32)

    def run(impl):
        def loss(qq, kk, vv, bias):
            out, st = sj.sparse_attention(qq, kk, vv, bias, mode="train", seed=11, window=window, implementation=impl,
                                          **({"block_q": bq, "block_k": bk} if impl == "chunked" else {}))
            return jnp.sum(out * ct) + jnp.sum(st.expected_density ** 2), (out, st.expected_density, st.edge_density)
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, jnp.full((h,), 0.5))

    (_, ref_aux), ref_grads = run("reference")
    (_, chk_aux), chk_grads = run("chunked")
    chex.assert_trees_all_close(chk_aux, ref_aux, atol=2e-5, rtol=1e-5)
    chex.assert_trees_all_close(chk_grads, ref_grads, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("t, bq, bk, window", [(64, 8, 8, 8), (61, 8, 4, 5), (50, 4, 16, 13), (32, 8, 8, 100)])
def test_window_block_ranges_are_exactly_the_reachable_blocks(t, bq, bk, window):
    """The chunked loops visit exactly the key blocks (forward) and query blocks (backward) holding a visible pair
    (O(T W) work, nothing outside the window); the kernel's unmasked tiles are wholly visible."""
    from sparsejax.attention.chunked import _Cfg
    from sparsejax.attention.pallas import _Static

    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    visible = (j <= i) & (i - j < window)
    cfg = _Cfg(causal=True, train=False, gate=None, t=t, s=t, block_q=bq, block_k=bk, window=window)
    tile = lambda qi, kj: visible[qi * bq:(qi + 1) * bq, kj * bk:(kj + 1) * bk]
    for qi in range(cfg.nq):
        lo, hi = (int(x) for x in cfg.kblock_range(qi))
        assert [kj for kj in range(cfg.nk) if tile(qi, kj).any()] == list(range(lo, hi))
    for kj in range(cfg.nk):
        lo, hi = (int(x) for x in cfg.qblock_range(kj))
        assert [qi for qi in range(cfg.nq) if tile(qi, kj).any()] == list(range(lo, hi))
    st = _Static(backend="interpret", causal=True, train=False, gate=None, t=t, s=t, block_q=bq, block_k=bk,
                 block_q_bwd=bq, block_k_bwd=bk, window=window)
    pad = np.zeros((st.tp, st.sp), bool)
    pad[:t, :t] = visible
    pad[t:, :] = True  # padded rows are inert: any tile may hold them unmasked
    ptile = lambda qi, kj: pad[qi * bq:(qi + 1) * bq, kj * bk:(kj + 1) * bk]
    for qi in range(st.tp // bq):
        lo, full_lo, full_hi, hi = (int(x) for x in st.k_ranges(qi, bq, bk))
        assert lo <= full_lo <= full_hi <= hi
        if qi < cfg.nq:
            assert all(not tile(qi, kj).any() for kj in range(cfg.nk) if not lo <= kj < hi)
        assert all(ptile(qi, kj).all() for kj in range(full_lo, full_hi))
    for kj in range(st.sp // bk):
        lo, full_lo, full_hi, hi = (int(x) for x in st.q_ranges(kj, bq, bk))
        assert lo <= full_lo <= full_hi <= hi
        assert all(not tile(qi, kj).any() for qi in range(cfg.nq) if not lo <= qi < hi)
        assert all(ptile(qi, kj).all() for qi in range(full_lo, full_hi))
    assert cfg.pairs() == st.pairs() == visible.sum()


def test_window_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="window must be a positive int"):
        sj.sparse_attention(q, k, v, 1.0, mode="eval", window=0)
    with pytest.raises(ValueError, match="pass causal=True"):
        sj.sparse_attention(q, k, v, 1.0, mode="eval", window=4, causal=False)
