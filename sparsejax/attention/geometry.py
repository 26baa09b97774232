"""Tile geometry of blocked attention: which (query block, key block) tiles a causal mask and a sliding window
leave non-empty, and which of those are *interior* (every pair valid: no mask arithmetic needed).

One statement shared by the blocked implementations (``chunked.py``, ``pallas.py`` and its TPU grid), tested
against a brute-force enumeration from the dense mask (``tests/test_geometry.py``). A pair ``(i, j)`` (query row
``i``, key ``j``) is *valid* when ``i < t``, ``j < s``, ``j <= i`` (causal) and ``i - j < window`` (sliding
window, causal only). Tiles are ``block_q x block_k``; tile ``(qi, kj)`` holds rows ``[qi bq, (qi + 1) bq)`` and keys
``[kj bk, (kj + 1) bk)``. A grid may have more blocks than the data (``n_q``, ``n_k``: kernels pad the sequence to
a multiple of two block sizes); rows and keys past ``t`` / ``s`` are padding.

Two views, as the kernels loop:

* :meth:`Tiles.k_ranges` (forward, and the backward's dq pass): for query block ``qi``, the key blocks ``[lo, hi)``
  holding a valid pair, and inside them ``[full_lo, full_hi)``, the interior ones: every pair of the tile obeys
  the causal mask and the window and every key is ``< s`` (rows past ``t`` need no mask: kernels make padded rows
  inert instead). ``[lo, full_lo)`` and ``[full_hi, hi)`` are the masked edge tiles (the window's edge, the
  diagonal, the sequence's end). Exact for every query block holding a real row (``qi bq < t``); a block of
  padding rows only is given a sound range (its interior tiles are safe) but not a tight one.
* :meth:`Tiles.q_ranges` (the backward's dk/dv pass): for key block ``kj``, the query blocks ``[lo, hi)`` of the
  grid whose tile holds a pair obeying the causal mask and the window — padded rows and keys are *not* cut here
  (they are inert in the backward) — and the interior ones ``[full_lo, full_hi)`` (as above).

Every function takes Python ints, NumPy integers or traced int32 scalars (a kernel's ``program_id``) and answers
in kind: NumPy for NumPy, ``jnp`` for traced values, so the same statement gives a kernel its loop bounds, an index
map its block, and the host its static step counts (:meth:`Tiles.max_k_steps`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def _xp(*xs):
    return jnp if any(isinstance(x, jax.Array) for x in xs) else np


def pairs(t: int, s: int, causal: bool, window: int | None = None) -> int:
    """Number of valid (query, key) pairs: the denominator of the densities (docs/method.md §1)."""
    if not causal:
        return t * s
    i = np.arange(t)
    first = 0 if window is None else np.maximum(i - window + 1, 0)  # row i sees keys [first, min(i + 1, s))
    return int(np.maximum(np.minimum(i + 1, s) - first, 0).sum())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclasses.dataclass(frozen=True)
class Tiles:
    """The tiles of a ``t x s`` attention in ``block_q x block_k`` blocks (static: hashable, a kernel's config).

    ``n_q`` / ``n_k``: the grid's query / key blocks (default: just enough for ``t`` / ``s``)."""

    t: int
    s: int
    block_q: int
    block_k: int
    causal: bool = True
    window: int | None = None
    n_q: int | None = None
    n_k: int | None = None

    def __post_init__(self):
        if self.window is not None and not self.causal:
            raise ValueError("a sliding window is causal attention over the last `window` keys: causal=True")
        for name in ("block_q", "block_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_q is None:
            object.__setattr__(self, "n_q", cdiv(self.t, self.block_q))
        if self.n_k is None:
            object.__setattr__(self, "n_k", cdiv(self.s, self.block_k))
        if self.n_q * self.block_q < self.t or self.n_k * self.block_k < self.s:
            raise ValueError(f"a grid of {self.n_q} x {self.n_k} blocks of {self.block_q} x {self.block_k} does not "
                             f"cover t={self.t}, s={self.s}")

    # ------------------------------------------------------------------------------------ per query block
    def k_hi(self, qi):
        """One past the last key block that query block ``qi`` reaches (causal: its last real row's)."""
        bq, bk = self.block_q, self.block_k
        n = cdiv(self.s, bk)
        if not self.causal:
            return n
        xp = _xp(qi)
        last_row = xp.minimum((qi + 1) * bq, self.t) - 1
        return xp.minimum(last_row // bk + 1, n)

    def k_lo(self, qi):
        """The first key block query block ``qi`` reaches (the window's start at its first row; 0 without one)."""
        if self.window is None:
            return 0
        return _xp(qi).maximum(qi * self.block_q - self.window + 1, 0) // self.block_k

    def k_range(self, qi):
        """``(lo, hi)``: the key blocks holding a valid pair of query block ``qi``."""
        hi = self.k_hi(qi)
        return self.k_lo(qi), hi

    def k_full_hi(self, qi):
        """One past the last interior key block without a window: every key <= the block's first row (causal) and
        ``< s``."""
        inside = self.s // self.block_k
        if not self.causal:
            return inside
        return _xp(qi).minimum((qi * self.block_q + 1) // self.block_k, inside)

    def k_ranges(self, qi):
        """``(lo, full_lo, full_hi, hi)``: ``[lo, hi)`` as :meth:`k_range`, ``[full_lo, full_hi)`` the interior
        key blocks among them (module docstring)."""
        hi, full_hi = self.k_hi(qi), self.k_full_hi(qi)
        if self.window is None:
            return 0, 0, full_hi, hi
        xp = _xp(qi)
        bq, bk = self.block_q, self.block_k
        lo = self.k_lo(qi)
        full_lo = xp.clip((xp.maximum(qi * bq + bq - self.window, 0) + bk - 1) // bk, lo, hi)  # last row sees all
        return lo, full_lo, xp.clip(full_hi, full_lo, hi), hi

    def max_k_steps(self) -> int:
        """The most key blocks any query block of the grid visits (static): the length of a grid's key axis."""
        lo, hi = self._over_q(self.k_range)
        return max(int(np.max(hi - lo)), 1)

    # -------------------------------------------------------------------------------------- per key block
    def q_lo(self, kj):
        """The first query block that key block ``kj`` is visible to (its diagonal; 0 when not causal)."""
        return (kj * self.block_k) // self.block_q if self.causal else 0

    def q_full_lo(self, kj):
        """The first query block whose tile with key block ``kj`` is interior: its first row >= the block's last
        key (causal); none (``n_q``) when the key block holds keys past ``s`` (masked throughout)."""
        bq, bk = self.block_q, self.block_k
        xp = _xp(kj)
        first = xp.minimum(((kj + 1) * bk - 1 + bq - 1) // bq, self.n_q) if self.causal else 0
        return xp.where((kj + 1) * bk > self.s, self.n_q, first)

    def q_ranges(self, kj):
        """``(lo, full_lo, full_hi, hi)`` of key block ``kj`` over the grid's query blocks (module docstring)."""
        lo, full_lo, hi = self.q_lo(kj), self.q_full_lo(kj), self.n_q
        if self.window is None:
            return lo, full_lo, hi, hi
        xp = _xp(kj)
        bq, bk = self.block_q, self.block_k
        hi = xp.minimum(((kj + 1) * bk - 1 + self.window - 1) // bq + 1, hi)  # the last query the last key reaches
        full_lo = xp.clip(full_lo, lo, hi)
        return lo, full_lo, xp.clip((kj * bk + self.window) // bq, full_lo, hi), hi

    def max_q_steps(self) -> int:
        """The most query blocks any key block of the grid visits (static): a dk/dv grid's query axis."""
        kj = np.arange(self.n_k)
        lo, _, _, hi = np.broadcast_arrays(kj, *self.q_ranges(kj))[1:]
        return max(int(np.max(hi - lo)), 1)

    def q_range(self, kj):
        """``(lo, hi)``: the grid's query blocks that key block ``kj`` is visible to."""
        lo, _, _, hi = self.q_ranges(kj)
        return lo, hi

    # ------------------------------------------------------------------------------------ whole-grid maps
    def _over_q(self, f):
        """``f``'s answers for every query block of the grid, each an ``[n_q]`` array."""
        qi = np.arange(self.n_q)
        return np.broadcast_arrays(qi, *f(qi))[1:]

    def visited(self) -> np.ndarray:
        """``[n_q, n_k]`` bool: the tiles :meth:`k_range` visits (a query-block loop's work)."""
        lo, hi = (x[:, None] for x in self._over_q(self.k_range))
        kj = np.arange(self.n_k)[None, :]
        return (kj >= lo) & (kj < hi)

    def interior(self) -> np.ndarray:
        """``[n_q, n_k]`` bool: the tiles :meth:`k_ranges` runs without a mask (``[full_lo, full_hi)``)."""
        _, full_lo, full_hi, _ = (x[:, None] for x in self._over_q(self.k_ranges))
        kj = np.arange(self.n_k)[None, :]
        return (kj >= full_lo) & (kj < full_hi)
