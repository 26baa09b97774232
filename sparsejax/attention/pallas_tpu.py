"""The fused kernels on TPU (Mosaic): the key/value (or, for dk/dv, the query) tiles on the grid's innermost,
sequential axis, so no block spans the sequence and its length is not capped by VMEM.

The mathematics and the tile math are ``pallas.py``'s (``_fwd_step``, ``_bwd_tile``: the same per-tile statements,
the same tile order); only the iteration moves from a loop inside the program to the grid, as in JAX's own TPU
flash attention (``jax/experimental/pallas/ops/tpu/flash_attention.py``):

* forward and dq: grid ``(batch, heads, query blocks, key steps)``, dimension semantics ``parallel`` x 3 and
  ``arbitrary``. Step ``j`` of query block ``qi`` is key block ``lo(qi) + j`` (``geometry.Tiles.k_ranges``); the
  axis is as long as the longest range (:meth:`~sparsejax.attention.geometry.Tiles.max_k_steps`: every key block
  with a causal mask, about ``(block_q + W) / block_k`` with a sliding window W, so the work stays O(T W)). The
  running max ``m``, the denominator ``l``, the accumulator and the row statistics live in VMEM scratch,
  initialised on the first step (``pl.when(j == 0)``) and written out on the last; steps past the range do
  nothing, and their K/V index map repeats the last block of the range, so Mosaic's pipeline fetches nothing new.
  Interior tiles run without mask arithmetic, edge tiles with it (``pl.when`` on the two classes).
* dk/dv: grid ``(batch, heads, key blocks, query steps)``, the same with the roles swapped
  (``geometry.Tiles.q_ranges``): the query-side tiles (``q``, ``dO``, the row statistics) stream past a key block's
  ``dk`` / ``dv`` accumulators.

VMEM per program: a ``block_q x D`` query tile, ``block_k x D`` key and value tiles (double-buffered) and the
float32 accumulators, independent of the sequence length.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from . import pallas as _p

_SEMANTICS = ("parallel", "parallel", "parallel", "arbitrary")


def _clamped(lo, hi, step):
    """Block ``lo + step`` of a range ``[lo, hi)``, held at its last block past the end (no new DMA)."""
    return jnp.maximum(jnp.minimum(lo + step, hi - 1), 0)


def _load(refs):
    return tuple(r[...] for r in refs)


def _save(refs, values):
    for r, x in zip(refs, values):
        r[...] = x


def _steps(kernel_step, step, lo, full_lo, full_hi, hi):
    """Run ``kernel_step(index, masked)`` for grid step ``step`` of the range: block ``lo + step``, without the mask
    inside ``[full_lo, full_hi)``, with it elsewhere, nothing past ``hi``."""
    index = lo + step
    active = index < hi
    inside = (index >= full_lo) & (index < full_hi)
    pl.when(active & inside)(lambda: kernel_step(index, False))
    pl.when(active & jnp.logical_not(inside))(lambda: kernel_step(index, True))


# --------------------------------------------------------------------------------------------------- forward
def _fwd_kernel(q_ref, k_ref, v_ref, row_ref, bias_ref, o_ref, lse_ref, rho_ref, edge_ref, *scratch, st):
    bq, bk = st.block_q, st.block_k
    qi, step = pl.program_id(2), pl.program_id(3)

    @pl.when(step == 0)
    def _init():
        _save(scratch, _p._fwd_init(bq, v_ref.shape[-1]))

    def tile(kj, masked):
        carry = _p._fwd_step(st, q_ref[...], k_ref[...], v_ref[...], row_ref[...], bias_ref[...], qi, kj,
                             _load(scratch), masked)
        _save(scratch, carry)

    _steps(tile, step, *st.k_ranges(qi, bq, bk))

    @pl.when(step == pl.num_programs(3) - 1)
    def _store():
        _p._fwd_store(st, qi, _load(scratch), o_ref, lse_ref, rho_ref, edge_ref)


def forward(st, qh, kh, vh, rows, bias_rows):
    """As ``pallas._forward``: qh [B, H, Tp, D], kh/vh [B, K, Sp, D], rows/bias_rows [B, H, Tp, 1] -> out, lse,
    rho, edges."""
    bsz, h, tp, d = qh.shape
    grp = h // kh.shape[1]
    dv = vh.shape[-1]
    bq, bk = st.block_q, st.block_k
    tiles = st.tiles(bq, bk)

    def kv_index(b, hh, i, j):
        lo, hi = tiles.k_range(i)
        return b, hh // grp, _clamped(lo, hi, j), 0

    q_tile = lambda width: pl.BlockSpec((None, None, bq, width), lambda b, hh, i, j: (b, hh, i, 0))
    kv_tile = lambda width: pl.BlockSpec((None, None, bk, width), kv_index)
    out_shape = (jax.ShapeDtypeStruct((bsz, h, tp, dv), qh.dtype),
                 *(jax.ShapeDtypeStruct((bsz, h, tp, 1), dt) for dt in (jnp.float32, jnp.float32, jnp.int32)))
    scratch = [pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, dv), jnp.float32),
               pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, 1), jnp.int32)]
    return _p._call(st, _fwd_kernel, (bsz, h, tp // bq, tiles.max_k_steps()),
                    [q_tile(d), kv_tile(d), kv_tile(dv), q_tile(1), q_tile(1)],
                    [q_tile(dv), q_tile(1), q_tile(1), q_tile(1)], out_shape, "sparse_attention_fwd",
                    semantics=_SEMANTICS, scratch_shapes=scratch)(qh, kh, vh, rows, bias_rows)


# -------------------------------------------------------------------------------------------------- backward
def _dkdv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, row_ref, bias_ref, dd_ref, dk_ref, dv_ref,
                 dk_sc, dv_sc, *, st):
    bq, bk = st.block_q_bwd, st.block_k_bwd
    kj, step = pl.program_id(2), pl.program_id(3)
    scale = np.float32(1.0 / math.sqrt(k_ref.shape[-1]))

    @pl.when(step == 0)
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    def tile(qi, masked):
        q, do = q_ref[...], do_ref[...]
        pa, ds, _ = _p._bwd_tile(st, q, k_ref[...], v_ref[...], do, lse_ref[...], delta_ref[...], row_ref[...],
                                 bias_ref[...], dd_ref[...], qi, kj, bq, bk, masked)
        dv_sc[...] = dv_sc[...] + _p._dot_tn(pa.astype(do.dtype), do)
        dk_sc[...] = dk_sc[...] + _p._dot_tn(ds.astype(q.dtype), q) * scale

    _steps(tile, step, *st.q_ranges(kj, bq, bk))

    @pl.when(step == pl.num_programs(3) - 1)
    def _store():
        dk_ref[...] = dk_sc[...]
        dv_ref[...] = dv_sc[...]


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, row_ref, bias_ref, dd_ref, dq_ref, db_ref,
               dq_sc, db_sc, *, st):
    bq, bk = st.block_q_bwd, st.block_k_bwd
    qi, step = pl.program_id(2), pl.program_id(3)
    scale = np.float32(1.0 / math.sqrt(q_ref.shape[-1]))

    @pl.when(step == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)
        db_sc[...] = jnp.zeros(db_sc.shape, jnp.float32)

    def tile(kj, masked):
        k = k_ref[...]
        _, ds, dg = _p._bwd_tile(st, q_ref[...], k, v_ref[...], do_ref[...], lse_ref[...], delta_ref[...],
                                 row_ref[...], bias_ref[...], dd_ref[...], qi, kj, bq, bk, masked)
        dq_sc[...] = dq_sc[...] + _p._dot_nn(ds.astype(k.dtype), k) * scale
        if dg is not None:
            db_sc[...] = db_sc[...] + jnp.sum(dg, axis=1, keepdims=True)

    _steps(tile, step, *st.k_ranges(qi, bq, bk))

    @pl.when(step == pl.num_programs(3) - 1)
    def _store():
        dq_ref[...] = dq_sc[...]
        db_ref[...] = db_sc[...]


def backward(st, qh, kh, vh, doh, lse, delta, rows, bias_rows, dd_rows):
    """As ``pallas._backward`` (``backward="split"``; Mosaic TPU has no atomic adds): dq, dk, dv, db."""
    bsz, h, tp, d = qh.shape
    kvh = kh.shape[1]
    grp = h // kvh
    dv_dim = vh.shape[-1]
    bq, bk = st.block_q_bwd, st.block_k_bwd
    tiles = st.tiles(bq, bk)
    ins = (qh, kh, vh, doh, lse, delta, rows, bias_rows, dd_rows)

    # dk / dv: one program per (batch, head, key block), the query side streaming on the last axis
    def q_index(b, hh, j, i):
        lo, hi = tiles.q_range(j)
        return b, hh, _clamped(lo, hi, i), 0

    q_side = lambda width: pl.BlockSpec((None, None, bq, width), q_index)
    k_own = lambda width: pl.BlockSpec((None, None, bk, width), lambda b, hh, j, i: (b, hh // grp, j, 0))
    k_out = lambda width: pl.BlockSpec((None, None, bk, width), lambda b, hh, j, i: (b, hh, j, 0))
    dk, dv = _p._call(
        st, _dkdv_kernel, (bsz, h, st.sp // bk, tiles.max_q_steps()),
        [q_side(d), k_own(d), k_own(dv_dim), q_side(d), *[q_side(1)] * 5], [k_out(d), k_out(dv_dim)],
        (jax.ShapeDtypeStruct((bsz, h, st.sp, d), jnp.float32), jax.ShapeDtypeStruct((bsz, h, st.sp, dv_dim), jnp.float32)),
        "sparse_attention_dkdv", semantics=_SEMANTICS,
        scratch_shapes=[pltpu.VMEM((bk, d), jnp.float32), pltpu.VMEM((bk, dv_dim), jnp.float32)])(*ins)

    # dq and the bias gradient: one program per (batch, head, query block), the key side streaming
    def kv_index(b, hh, i, j):
        lo, hi = tiles.k_range(i)
        return b, hh // grp, _clamped(lo, hi, j), 0

    q_own = lambda width: pl.BlockSpec((None, None, bq, width), lambda b, hh, i, j: (b, hh, i, 0))
    k_side = lambda width: pl.BlockSpec((None, None, bk, width), kv_index)
    dq, db = _p._call(
        st, _dq_kernel, (bsz, h, tp // bq, tiles.max_k_steps()),
        [q_own(d), k_side(d), k_side(dv_dim), q_own(d), *[q_own(1)] * 5], [q_own(d), q_own(1)],
        (jax.ShapeDtypeStruct((bsz, h, tp, d), jnp.float32), jax.ShapeDtypeStruct((bsz, h, tp, 1), jnp.float32)),
        "sparse_attention_dq", semantics=_SEMANTICS,
        scratch_shapes=[pltpu.VMEM((bq, d), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32)])(*ins)
    return dq, _p._sum_groups(dk, kvh), _p._sum_groups(dv, kvh), db
