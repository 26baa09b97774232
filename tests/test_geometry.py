"""The tile geometry (``attention/geometry.py``) against a brute-force enumeration from the dense mask: which tiles
a causal / sliding-window mask reaches, which are interior (no mask needed), on grids with padding blocks, for
several lengths (multiples of the blocks and not), block shapes and windows; and the same answers for traced
block indices (what the kernels see) as for NumPy ones."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.attention import geometry
from sparsejax.attention.geometry import Tiles

CASES = [  # t, s, block_q, block_k, causal, window, extra query blocks, extra key blocks (padding of the grid)
    *[(t, t, bq, bk, True, w, 0, 0) for t in (1, 7, 16, 21, 33) for bq, bk in ((4, 4), (8, 4), (4, 8), (16, 16))
      for w in (None, 1, 3, 5, 9, 40)],
    *[(t, t, bq, bk, False, None, 0, 0) for t in (5, 16, 21) for bq, bk in ((4, 4), (8, 4), (4, 8))],
    (13, 13, 8, 4, True, None, 0, 1), (9, 9, 4, 8, True, None, 1, 0), (9, 9, 4, 4, True, 3, 2, 1),
    (21, 21, 4, 8, True, 6, 1, 1), (10, 17, 4, 4, True, None, 0, 0), (17, 10, 4, 4, True, 5, 0, 0),
    (10, 17, 8, 4, False, None, 1, 1),
]


def _dense(t, s, rows, cols, causal, window):
    """Two masks over the padded grid: the valid pairs (i < t, j < s, causal, window) and the mask's own pairs
    (causal and window only: what the interior test and the backward's query side see)."""
    i, j = np.arange(rows)[:, None], np.arange(cols)[None, :]
    own = np.ones((rows, cols), bool)
    if causal:
        own &= j <= i
    if window is not None:
        own &= i - j < window
    return own & (i < t) & (j < s), own


def _per_tile(mask, bq, bk, reduce):
    rows, cols = mask.shape
    return reduce(mask.reshape(rows // bq, bq, cols // bk, bk), axis=(1, 3))


def _span(lo, hi, n):
    idx = np.arange(n)
    return (idx >= int(lo)) & (idx < int(hi))


@pytest.mark.parametrize("t, s, bq, bk, causal, window, xq, xk", CASES)
def test_tiles_match_the_dense_mask(t, s, bq, bk, causal, window, xq, xk):
    n_q, n_k = -(-t // bq) + xq, -(-s // bk) + xk
    tiles = Tiles(t, s, bq, bk, causal, window, n_q=n_q, n_k=n_k)
    valid, own = _dense(t, s, n_q * bq, n_k * bk, causal, window)
    keys_inside = (np.arange(n_k) + 1) * bk <= s  # key blocks with no padded key
    reached = _per_tile(valid, bq, bk, np.any)
    own_any = _per_tile(own, bq, bk, np.any)
    interior = _per_tile(own, bq, bk, np.all) & keys_inside[None, :]

    for qi in range(n_q):
        lo, full_lo, full_hi, hi = (int(x) for x in tiles.k_ranges(qi))
        assert tiles.k_range(qi) == (lo, hi) or tuple(int(x) for x in tiles.k_range(qi)) == (lo, hi)
        full = _span(full_lo, full_hi, n_k)
        assert not (full & ~interior[qi]).any(), f"query block {qi}: a tile run without mask needs one"
        if qi * bq < t:  # a block with a real row: exact
            assert lo <= full_lo <= full_hi <= hi or lo >= hi
            np.testing.assert_array_equal(_span(lo, hi, n_k), reached[qi], err_msg=f"query block {qi}")
            np.testing.assert_array_equal(full, interior[qi] & reached[qi], err_msg=f"query block {qi}")
        else:  # padding rows only: nothing to reach
            assert not reached[qi].any()

    for kj in range(n_k):
        lo, full_lo, full_hi, hi = (int(x) for x in tiles.q_ranges(kj))
        visited = _span(lo, hi, n_q)
        np.testing.assert_array_equal(visited, own_any[:, kj], err_msg=f"key block {kj}")
        assert not (reached[:, kj] & ~visited).any()  # covers every valid pair
        full = _span(full_lo, full_hi, n_q)
        np.testing.assert_array_equal(full, interior[:, kj] & visited, err_msg=f"key block {kj}")
        assert lo >= hi or lo <= full_lo <= full_hi <= hi
        assert tuple(int(x) for x in tiles.q_range(kj)) == (lo, hi)

    real = np.arange(n_q) * bq < t
    np.testing.assert_array_equal(tiles.visited()[real], reached[real])
    np.testing.assert_array_equal(tiles.interior()[real], (interior & reached)[real])
    assert tiles.max_k_steps() == max(1, int((np.asarray(tiles.k_range(np.arange(n_q))[1])
                                              - np.asarray(tiles.k_range(np.arange(n_q))[0])).max()))
    assert tiles.max_k_steps() >= reached.sum(1).max()
    q_lo, q_hi = np.broadcast_arrays(*tiles.q_range(np.arange(n_k)))
    assert tiles.max_q_steps() == max(1, int((q_hi - q_lo).max())) >= own_any.sum(0).max()
    assert geometry.pairs(t, s, causal, window) == int(valid.sum())


@pytest.mark.parametrize("t, bq, bk, window", [(21, 8, 4, None), (21, 4, 8, 6), (33, 16, 16, 9), (9, 4, 4, 3)])
def test_traced_indices_give_the_numpy_answers(t, bq, bk, window):
    """The kernels call the geometry on traced block indices (program ids, loop counters): jnp in, jnp out, the
    same numbers."""
    tiles = Tiles(t, t, bq, bk, True, window, n_q=-(-t // bq) + 1)
    qs, ks = np.arange(tiles.n_q), np.arange(tiles.n_k)
    got_k = jax.jit(jax.vmap(lambda qi: jnp.stack([jnp.asarray(x, jnp.int32) for x in tiles.k_ranges(qi)])))(
        jnp.asarray(qs, jnp.int32))
    got_q = jax.jit(jax.vmap(lambda kj: jnp.stack([jnp.asarray(x, jnp.int32) for x in tiles.q_ranges(kj)])))(
        jnp.asarray(ks, jnp.int32))
    want_k = np.stack(np.broadcast_arrays(*tiles.k_ranges(qs)), 1)
    want_q = np.stack(np.broadcast_arrays(*tiles.q_ranges(ks)), 1)
    np.testing.assert_array_equal(got_k, want_k)
    np.testing.assert_array_equal(got_q, want_q)
    assert isinstance(tiles.k_hi(np.int64(2)), np.integer) and isinstance(tiles.k_hi(2), (int, np.integer))


def test_errors():
    with pytest.raises(ValueError, match="causal=True"):
        Tiles(8, 8, 4, 4, causal=False, window=3)
    with pytest.raises(ValueError, match="does not cover"):
        Tiles(9, 9, 4, 4, n_q=2)
    with pytest.raises(ValueError, match="block_k must be >= 1"):
        Tiles(9, 9, 4, 0)


def test_pairs():
    for t, s, w in itertools.product((1, 5, 12), (1, 5, 12), (None, 1, 4)):
        i, j = np.arange(t)[:, None], np.arange(s)[None, :]
        mask = (j <= i) if w is None else (j <= i) & (i - j < w)
        assert geometry.pairs(t, s, True, w) == int(mask.sum())
        if w is None:
            assert geometry.pairs(t, s, False) == t * s


def test_density_denominator_when_queries_outrun_the_keys():
    """seq_q > seq_k with a window: late queries see no key at all; the blocked implementations' denominator counts
    only the visible pairs, as the reference's (it used to count min(i + 1, s, window) per row)."""
    import sparsejax as sj

    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(1, 17, 2, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 10, 2, 8)), jnp.float32)
    want = sj.sparse_attention(q, k, k, 0.5, mode="eval", window=5, implementation="reference")[1]
    got = sj.sparse_attention(q, k, k, 0.5, mode="eval", window=5, implementation="chunked", block_q=4, block_k=4)[1]
    np.testing.assert_allclose(got.expected_density, want.expected_density, rtol=1e-6)
    np.testing.assert_allclose(got.edge_density, want.edge_density, rtol=1e-6)
