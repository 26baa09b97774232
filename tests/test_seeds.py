"""``sparsejax.seeds``: each named derivation gives exactly what its call site computed before it was named (the
old formulas written out here), same numbers and same dtypes, and the call sites use it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import seeds


def _same_array(a, b):
    assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _same_stream(a, b, n=8):
    assert isinstance(a, np.random.Generator) and isinstance(b, np.random.Generator)
    np.testing.assert_array_equal(a.integers(0, 2**62, n), b.integers(0, 2**62, n))
    assert a.random() == b.random()


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 - 1])
def test_parameter_and_adapter_keys(seed):
    _same_array(seeds.params_key(seed), jax.random.PRNGKey(seed))
    _same_array(seeds.lora_key(seed), jax.random.PRNGKey(seed + 1))
    assert seeds.lora_key(seed).dtype == jnp.uint32 and seeds.lora_key(seed).shape == (2,)
    assert seeds.params_key(seed).tolist() == [0, seed] and seeds.lora_key(seed).tolist() == [0, seed + 1]


@pytest.mark.parametrize("seed,step", [(0, 0), (1, 0), (1, 19), (3, 12345), (2**31 - 1, 10**6)])
def test_step_noise(seed, step):
    got = seeds.step_noise(seed, step)
    _same_array(got, jnp.uint32((seed * 1_000_003 + step) % 2**32))
    assert got.dtype == jnp.uint32 and got.shape == ()
    # pinned numbers (computed by hand from the formula)
    assert int(seeds.step_noise(1, 5)) == 1_000_008
    assert int(seeds.step_noise(2**31 - 1, 10**6)) == ((2**31 - 1) * 1_000_003 + 10**6) % 2**32
    from sparsejax.train.loop import step_seed

    _same_array(step_seed(seed, step), got)  # the loop's old name is the same function


def test_layer_seed_is_the_gate_noise_one():
    from sparsejax.gates import layer_seed

    assert seeds.layer_seed is layer_seed
    for seed, layer in [(0, 0), (5, 3)]:
        _same_array(seeds.layer_seed(jnp.uint32(seed), layer), layer_seed(jnp.uint32(seed), layer))


def test_sampled_eval_noise_and_eval_order():
    _same_array(seeds.sampled_eval_noise(), jnp.uint32(0))
    assert seeds.EVAL_ORDER == 0 and type(seeds.EVAL_ORDER) is int


@pytest.mark.parametrize("seed,epoch", [(0, 0), (3, 1), (12, 40)])
def test_data_order(seed, epoch):
    _same_stream(seeds.data_order(seed, epoch), np.random.default_rng([seed, epoch]))
    np.testing.assert_array_equal(seeds.data_order(seed, epoch).permutation(30),
                                  np.random.default_rng([seed, epoch]).permutation(30))


@pytest.mark.parametrize("seed,row", [(0, 0), (3, 17), (4, np.int64(39))])
def test_repeated_passages(seed, row):
    _same_stream(seeds.passage_rng(seed, row), np.random.default_rng([seed, 0x5EED, int(row)]))
    assert seeds.repeated_passages(seed) == (seed, seed + 1)


def test_addition_split():
    np.testing.assert_array_equal(seeds.addition_split().permutation(10_000),
                                  np.random.default_rng(1234).permutation(10_000))


def test_call_sites_give_the_old_values():
    """The data order and the passages through their public call sites, against the old formulas inline."""
    from sparsejax.data import ArraySource, RepeatedPassages, addition, batch_indices

    n, bs = 30, 7
    for seed, step in [(3, 0), (3, 5), (9, 13)]:
        epoch, within = divmod(step, n // bs)
        old = np.sort(np.random.default_rng([seed, epoch]).permutation(n)[within * bs:(within + 1) * bs])
        np.testing.assert_array_equal(batch_indices(n, step, bs, seed), old)
    rows = np.arange(40 * 24, dtype=np.int32).reshape(40, 24) % 50
    got = RepeatedPassages(ArraySource(rows), 0.5, seed=3, vocab=7).rows(np.arange(40))["tokens"]
    old = rows.copy()
    for i in range(40):  # RepeatedPassages.rows as it was, with the stream written out
        rng = np.random.default_rng([3, 0x5EED, i])
        if rng.random() >= 0.5:
            continue
        length = int(rng.integers(8, 24 // 2 + 1))
        a = int(rng.integers(0, 24 - 2 * length + 1))
        b = int(rng.integers(a + length, 24 - length + 1))
        old[i, a:a + length] = rng.integers(0, 7, length)
        old[i, b:b + length] = old[i, a:a + length]
    np.testing.assert_array_equal(got, old)
    perm = np.random.default_rng(1234).permutation(10_000)
    np.testing.assert_array_equal(addition.split("validation"), addition.all_problems()[np.sort(perm[9000:])])
