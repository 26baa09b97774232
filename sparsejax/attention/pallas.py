"""Fused (flash-style) Pallas kernels for gated sparse attention: forward, and a backward in two kernels.

The tile math here is shared by every backend; the iteration differs. On GPU (Triton) and in Pallas' interpret
mode (on CPU: slow, for correctness) each program loops over its tiles (below); on TPU (Mosaic) the tiles are the
grid's innermost sequential axis (``pallas_tpu.py``), so no block spans the sequence. Which tiles a program visits,
and which need no mask, is ``geometry.py``'s statement; the block sizes are a :class:`~.blocks.BlockSizes`
(``blocks.py``). This file knows no mesh: under a multi-device training mesh the dispatch passes a ``partition``
(``sharded.py``: ``shard_map``). The mathematics is that of ``chunked.py`` (docs/method.md §1, §4), tile by tile:

* forward, one program per (batch, head, query block): loop over the key blocks the causal mask does not empty,
  keep the running max ``m``, the softmax denominator ``l`` over **all** causal keys and the gated numerator
  ``acc = sum_j exp(s_ij - m) A_ij v_j``; write ``out = acc / l``, the row log-sum-exp, and per row the sum of
  expected gates and the count of open (eval-mode) edges — never a T x T array.
* backward, ``backward="split"`` (deterministic): ``dk``/``dv``: one program per (batch, head, key block), looping
  over query blocks; ``dq`` and the bias gradient: one program per (batch, head, query block), looping over key
  blocks. Both regenerate the gates. ``backward="atomic"`` (GPU): one kernel, the ``dk``/``dv`` programs also add
  their ``dq`` and bias-gradient contributions to float32 buffers with atomic adds (one recomputation of each tile
  instead of two; the summation order, hence the last bits of ``dq``, varies from run to run).
* causal tiles are split (``geometry.Tiles.k_ranges`` / ``q_ranges``): tiles wholly below the diagonal (and inside
  the sequence and the sliding window, when there is one) run without any mask arithmetic; only the diagonal,
  window-edge and sequence-edge tiles compute the validity mask. With a sliding window W the loops cover only the
  tiles the window reaches (O(T W) work). Padded rows are made inert instead
  (zero ``q``/``dO``/density cotangent, log-sum-exp 0, their statistics zeroed), so no tile needs them masked.

The gate noise is the counter-based hash of ``gates/noise.py``: the row part ``row_hash(seed, b, h, i)`` is computed
once per query row outside the kernel (one uint32 per row), the key part ``key_uniform(row, j)`` inside, so the
sampled gates are those of ``reference``/``chunked`` for the same seed. Logits are float32 whatever the input
dtype; bf16 inputs use bf16 matmul operands with float32 accumulation (as flash attention does).

Layout: kernels see head-major ``[B, H, T, D]`` tiles; grouped-query attention maps query head ``h`` to key/value
head ``h // (H / K)`` in the index maps, and ``dk``/``dv`` are summed over each group after the kernel.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from ..gates import Gate, expected_gate_slope, is_edge, key_uniform, noise_heads, row_hash
from . import geometry
from .blocks import BACKWARDS, BLOCK_SIZES, BlockSizes  # noqa: F401  (BACKWARDS: re-exported)

_NEG = -1e30
_LOG2E = np.float32(math.log2(math.e))

@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything the kernels specialise on (hashable: the custom_vjp's static argument)."""

    backend: str  # "gpu" | "tpu" | "interpret"
    causal: bool
    train: bool
    gate: Gate | None  # static part (bias None); None = dense attention
    t: int
    s: int
    block_q: int
    block_k: int
    block_q_bwd: int
    block_k_bwd: int
    num_warps: int | None = None
    num_stages: int | None = None
    backward: str = "split"  # "split" (two kernels, deterministic) | "atomic" (one kernel, atomic dq; GPU)
    tpu_interpret: bool = False  # TPU-style kernels under pltpu interpret mode (tests)
    window: int | None = None  # sliding window (causal): key j is visible to query i iff i - j < window

    @property
    def tp(self):  # padded query length: a multiple of both query tiles
        m = math.lcm(self.block_q, self.block_q_bwd)
        return -(-self.t // m) * m

    @property
    def sp(self):
        m = math.lcm(self.block_k, self.block_k_bwd)
        return -(-self.s // m) * m

    def pairs(self) -> int:
        return geometry.pairs(self.t, self.s, self.causal, self.window)

    def tiles(self, bq, bk) -> geometry.Tiles:
        """The tile geometry of ``bq x bk`` blocks over the padded grid (``tp / bq`` x ``sp / bk`` blocks)."""
        return geometry.Tiles(self.t, self.s, bq, bk, self.causal, self.window, n_q=self.tp // bq,
                              n_k=self.sp // bk)

    def k_ranges(self, qi, bq, bk):
        """:meth:`geometry.Tiles.k_ranges` of ``bq x bk`` tiles: ``(lo, full_lo, full_hi, hi)``."""
        return self.tiles(bq, bk).k_ranges(qi)

    def q_ranges(self, kj, bq, bk):
        """:meth:`geometry.Tiles.q_ranges` of ``bq x bk`` tiles."""
        return self.tiles(bq, bk).q_ranges(kj)


# ------------------------------------------------------------------------------------------------ tile math
def _dot_nt(a, b):
    """``a @ b.T`` with float32 accumulation (full float32 precision for float32 operands)."""
    prec = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=prec, preferred_element_type=jnp.float32)


def _dot_nn(a, b):
    prec = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    return jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), precision=prec, preferred_element_type=jnp.float32)


def _dot_tn(a, b):
    """``a.T @ b``."""
    prec = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    return jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=prec, preferred_element_type=jnp.float32)


def _exp(x):
    """The softmax's exponential as ``2 ** (x log2 e)``: one hardware ``ex2`` on GPU (``exp`` lowers to libdevice's
    slower accurate ``expf``). Float tolerance only: the gates' own sigmoid keeps ``exp`` (bit-identical gates)."""
    return jnp.exp2(x * _LOG2E)


def _where(valid, x, fill):
    return x if valid is None else jnp.where(valid, x, fill)


def _tile(st: _Static, q, k, qi, kj, bq, bk, row, bias, masked=True):
    """Scores, validity, gate logits, gate values and slopes of one (query tile, key tile).

    q: [bq, D], k: [bk, D] (input dtype); row: [bq, 1] uint32 row hashes; bias: [bq, 1] f32 (the head's bias).
    Per-row vectors are [bq, 1] columns throughout (a layout both Triton and Mosaic take). ``masked=False``: a
    tile with every pair valid (validity ``None``: no mask arithmetic)."""
    s = _dot_nt(q, k) * np.float32(1.0 / math.sqrt(q.shape[-1]))
    j = kj * bk + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    valid = None
    if masked:
        i = qi * bq + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
        valid = (i < st.t) & (j < st.s)
        if st.causal:
            valid = valid & (j <= i)
        if st.window is not None:
            valid = valid & (i - j < st.window)
    if st.gate is None:
        return s, valid, None, None, None, None
    g = s + bias
    noise = key_uniform(row, j) if st.train else None
    a, slope, e = st.gate.family.kernel_terms(st.gate, g, noise, st.train, *_fast_math(st))
    return s, valid, g, a, slope, e


def _fast_math(st: _Static):
    """``(recip, exp)`` for the gate's values (never its sample, see ``gates.bernoulli_terms``): on GPU the
    hardware approximations ``rcp.approx`` and ``ex2.approx`` (relative error ~1e-7) instead of IEEE division and
    libdevice's ``expf``; elsewhere ``(None, exp)`` = the reference's own statement."""
    if st.backend != "gpu":
        return None, jnp.exp
    from jax.experimental.pallas import triton as plgpu

    def approx(op):
        def f(x):
            [y] = plgpu.elementwise_inline_asm(f"{op}.approx.ftz.f32 $0, $1;", args=[x], constraints="=f,f", pack=1,
                                               result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, x.dtype)])
            return y
        return f

    ex2 = approx("ex2")
    return approx("rcp"), lambda x: ex2(x * _LOG2E)


def _fwd_step(st: _Static, q, k, v, row, bias, qi, kj, carry, masked):
    """One key tile of the forward's online softmax: ``carry = (m, l, acc, rho, edges)`` updated (module
    docstring). Shared by the loop kernel (GPU, interpret) and the TPU grid kernel (``pallas_tpu.py``)."""
    bq, bk = st.block_q, st.block_k
    m, l, acc, rho, edges = carry
    s, valid, g, a, _, e = _tile(st, q, k, qi, kj, bq, bk, row, bias, masked)
    m_new = jnp.maximum(m, jnp.max(_where(valid, s, _NEG), axis=1, keepdims=True))
    p = _where(valid, _exp(s - m_new), 0.0)
    alpha = _exp(m - m_new)
    l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
    pa = p if a is None else p * a
    acc = alpha * acc + _dot_nn(pa.astype(v.dtype), v)
    if g is not None:
        rho = rho + jnp.sum(_where(valid, e, 0.0), axis=1, keepdims=True)
        open_ = is_edge(st.gate, g) if valid is None else valid & is_edge(st.gate, g)
        edges = edges + jnp.sum(open_.astype(jnp.int32), axis=1, keepdims=True)
    return m_new, l, acc, rho, edges


def _fwd_init(bq, d_v):
    col = (bq, 1)
    return (jnp.full(col, _NEG, jnp.float32), jnp.zeros(col, jnp.float32), jnp.zeros((bq, d_v), jnp.float32),
            jnp.zeros(col, jnp.float32), jnp.zeros(col, jnp.int32))


def _fwd_store(st: _Static, qi, carry, o_ref, lse_ref, rho_ref, edge_ref):
    """Write a query block's outputs from the final carry (padded rows inert: log-sum-exp and statistics 0)."""
    bq = st.block_q
    m, l, acc, rho, edges = carry
    row_ok = qi * bq + jax.lax.broadcasted_iota(jnp.int32, (bq, 1), 0) < st.t  # padded rows: inert
    l = jnp.where(l > 0, l, 1.0)  # padded rows only
    o_ref[...] = (acc / l).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(row_ok, m + jnp.log(l), 0.0)
    rho_ref[...] = jnp.where(row_ok, rho, 0.0)
    edge_ref[...] = jnp.where(row_ok, edges, 0)


def _fwd_kernel(q_ref, k_ref, v_ref, row_ref, bias_ref, o_ref, lse_ref, rho_ref, edge_ref, *, st: _Static):
    """One program per (batch, head, query block), whole-sequence K/V blocks, a loop over the key tiles."""
    bq, bk = st.block_q, st.block_k
    qi = pl.program_id(2)
    q = q_ref[...]
    row = row_ref[...]
    bias = bias_ref[...]

    def body(kj, carry, masked):
        start = pl.multiple_of(kj * bk, bk)
        k = k_ref[pl.ds(start, bk), :]
        v = v_ref[pl.ds(start, bk), :]
        return _fwd_step(st, q, k, v, row, bias, qi, kj, carry, masked)

    init = _fwd_init(bq, v_ref.shape[-1])
    lo, full_lo, full_hi, hi = st.k_ranges(qi, bq, bk)
    carry = init if st.window is None else jax.lax.fori_loop(lo, full_lo, functools.partial(body, masked=True), init)
    carry = jax.lax.fori_loop(full_lo, full_hi, functools.partial(body, masked=False), carry)
    carry = jax.lax.fori_loop(full_hi, hi, functools.partial(body, masked=True), carry)
    _fwd_store(st, qi, carry, o_ref, lse_ref, rho_ref, edge_ref)


def _bwd_tile(st, q, k, v, do, lse, delta, row, bias, dd, qi, kj, bq, bk, masked=True):
    """``(p * a, ds, dg)`` of one tile for the backward kernels (docs/method.md §4)."""
    s, valid, g, a, slope, e = _tile(st, q, k, qi, kj, bq, bk, row, bias, masked)
    p = _where(valid, _exp(s - lse), 0.0)
    dov = _dot_nt(do, v)
    if a is None:
        return p, p * (dov - delta), None
    pa = p * a
    e_slope = e * (1.0 - e) if st.gate.penalty_knee is None and st.gate.penalty_floor is None else \
        expected_gate_slope(st.gate, g)
    dg = p * dov * slope + _where(valid, dd * e_slope, 0.0)  # + d density / d g
    return pa, pa * dov - p * delta + dg, dg


def _dkdv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, row_ref, bias_ref, dd_ref, *out_refs,
                 st: _Static):
    """``dk``/``dv`` of one key block; with ``backward="atomic"`` also ``dq`` and the bias gradient (``out_refs`` =
    ``(dq_in, db_in, dk, dv, dq, db)``, the first two aliased to the last two)."""
    if len(out_refs) == 2:
        (dk_ref, dv_ref), atomic_refs = out_refs, ()
    else:
        _, _, dk_ref, dv_ref, *atomic_refs = out_refs
    bq, bk = st.block_q_bwd, st.block_k_bwd
    kj = pl.program_id(2)
    k = k_ref[...]
    v = v_ref[...]
    scale = np.float32(1.0 / math.sqrt(k.shape[-1]))

    def body(qi, carry, masked):
        dk, dv = carry
        rows = pl.ds(pl.multiple_of(qi * bq, bq), bq)
        q, do = q_ref[rows, :], do_ref[rows, :]
        pa, ds, dg = _bwd_tile(st, q, k, v, do, lse_ref[rows, :], delta_ref[rows, :], row_ref[rows, :],
                               bias_ref[rows, :], dd_ref[rows, :], qi, kj, bq, bk, masked)
        dv = dv + _dot_tn(pa.astype(do.dtype), do)
        dk = dk + _dot_tn(ds.astype(q.dtype), q) * scale
        if atomic_refs:  # backward="atomic": this tile's dq and bias-gradient contributions, added in place
            from jax.experimental.pallas import triton as plgpu

            dq_ref, db_ref = atomic_refs
            plgpu.atomic_add(dq_ref, (rows, slice(None)), _dot_nn(ds.astype(k.dtype), k) * scale)
            if dg is not None:
                plgpu.atomic_add(db_ref, (rows, slice(None)), jnp.sum(dg, axis=1, keepdims=True))
        return dk, dv

    init = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    lo, full_lo, full_hi, hi = st.q_ranges(kj, bq, bk)
    carry = jax.lax.fori_loop(lo, full_lo, functools.partial(body, masked=True), init)
    carry = jax.lax.fori_loop(full_lo, full_hi, functools.partial(body, masked=False), carry)
    dk, dv = carry if st.window is None else jax.lax.fori_loop(full_hi, hi, functools.partial(body, masked=True),
                                                               carry)
    dk_ref[...] = dk
    dv_ref[...] = dv


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, row_ref, bias_ref, dd_ref, dq_ref, db_ref, *,
               st: _Static):
    bq, bk = st.block_q_bwd, st.block_k_bwd
    qi = pl.program_id(2)
    q, do = q_ref[...], do_ref[...]
    lse, delta, row, bias, dd = lse_ref[...], delta_ref[...], row_ref[...], bias_ref[...], dd_ref[...]
    scale = np.float32(1.0 / math.sqrt(q.shape[-1]))

    def body(kj, carry, masked):
        dq, db = carry
        cols = pl.ds(pl.multiple_of(kj * bk, bk), bk)
        k, v = k_ref[cols, :], v_ref[cols, :]
        _, ds, dg = _bwd_tile(st, q, k, v, do, lse, delta, row, bias, dd, qi, kj, bq, bk, masked)
        dq = dq + _dot_nn(ds.astype(k.dtype), k) * scale
        if dg is not None:
            db = db + jnp.sum(dg, axis=1, keepdims=True)
        return dq, db

    init = (jnp.zeros(q.shape, jnp.float32), jnp.zeros((bq, 1), jnp.float32))
    lo, full_lo, full_hi, hi = st.k_ranges(qi, bq, bk)
    carry = init if st.window is None else jax.lax.fori_loop(lo, full_lo, functools.partial(body, masked=True), init)
    carry = jax.lax.fori_loop(full_lo, full_hi, functools.partial(body, masked=False), carry)
    dq, db = jax.lax.fori_loop(full_hi, hi, functools.partial(body, masked=True), carry)
    dq_ref[...] = dq
    db_ref[...] = db


# ----------------------------------------------------------------------------------------------- pallas_call
def _call(st: _Static, kernel, grid, in_specs, out_specs, out_shape, name, aliases=None, semantics=None,
          scratch_shapes=()):
    """The ``pallas_call`` of ``kernel`` for ``st.backend``. TPU: ``semantics`` = the grid axes' dimension
    semantics (default: all ``"parallel"``), ``scratch_shapes`` = VMEM scratch (``pallas_tpu.py``)."""
    kwargs = {"input_output_aliases": aliases} if aliases else {}
    if scratch_shapes:
        kwargs["scratch_shapes"] = scratch_shapes
    if st.backend == "interpret":
        kwargs["interpret"] = True
    elif st.backend == "gpu":
        from jax.experimental.pallas import triton as plgpu

        kwargs["compiler_params"] = plgpu.CompilerParams(num_warps=st.num_warps, num_stages=st.num_stages)
    else:
        from jax.experimental.pallas import tpu as pltpu

        kwargs["compiler_params"] = pltpu.CompilerParams(dimension_semantics=semantics or ("parallel",) * len(grid))
        if st.tpu_interpret:
            kwargs["interpret"] = pltpu.InterpretParams()
    return pl.pallas_call(functools.partial(kernel, st=st), grid=grid, in_specs=in_specs, out_specs=out_specs,
                          out_shape=out_shape, name=name, **kwargs)


def _row(block, index):
    """Per-row arrays are ``[B, H, Tp, 1]``: a column per (batch, head), tiled along the rows."""
    return pl.BlockSpec((None, None, block, 1), lambda b, hh, x: (*index(b, hh, x), 0))


def _forward(st: _Static, qh, kh, vh, rows, bias_rows):
    """qh [B, H, Tp, D], kh/vh [B, K, Sp, D], rows/bias_rows [B, H, Tp, 1] -> out, lse, rho, edges."""
    if st.backend == "tpu":  # K/V tiles on the grid's innermost axis (no whole-sequence blocks in VMEM)
        from . import pallas_tpu

        return pallas_tpu.forward(st, qh, kh, vh, rows, bias_rows)
    bsz, h, tp, d = qh.shape
    grp = h // kh.shape[1]
    bq = st.block_q
    q_spec = pl.BlockSpec((None, None, bq, d), lambda b, hh, i: (b, hh, i, 0))
    kv_spec = lambda x: pl.BlockSpec((None, None, st.sp, x.shape[-1]), lambda b, hh, i: (b, hh // grp, 0, 0))
    row_spec = _row(bq, lambda b, hh, i: (b, hh, i))
    out_shape = (jax.ShapeDtypeStruct((bsz, h, tp, vh.shape[-1]), qh.dtype),
                 *(jax.ShapeDtypeStruct((bsz, h, tp, 1), dt) for dt in (jnp.float32, jnp.float32, jnp.int32)))
    o_spec = pl.BlockSpec((None, None, bq, vh.shape[-1]), lambda b, hh, i: (b, hh, i, 0))
    return _call(st, _fwd_kernel, (bsz, h, tp // bq), [q_spec, kv_spec(kh), kv_spec(vh), row_spec, row_spec],
                 [o_spec, row_spec, row_spec, row_spec], out_shape, "sparse_attention_fwd")(qh, kh, vh, rows,
                                                                                            bias_rows)


def _backward(st: _Static, qh, kh, vh, doh, lse, delta, rows, bias_rows, dd_rows):
    if st.backend == "tpu":
        from . import pallas_tpu

        return pallas_tpu.backward(st, qh, kh, vh, doh, lse, delta, rows, bias_rows, dd_rows)
    bsz, h, tp, d = qh.shape
    kvh = kh.shape[1]
    grp = h // kvh
    dv_dim = vh.shape[-1]
    bq, bk = st.block_q_bwd, st.block_k_bwd
    full_q = lambda x: pl.BlockSpec((None, None, tp, x.shape[-1]), lambda b, hh, j: (b, hh, 0, 0))
    full_row = _row(tp, lambda b, hh, j: (b, hh, 0))
    k_tile = lambda x: pl.BlockSpec((None, None, bk, x.shape[-1]), lambda b, hh, j: (b, hh // grp, j, 0))
    out_tile = lambda width: pl.BlockSpec((None, None, bk, width), lambda b, hh, j: (b, hh, j, 0))
    dk_shapes = (jax.ShapeDtypeStruct((bsz, h, st.sp, d), jnp.float32),
                 jax.ShapeDtypeStruct((bsz, h, st.sp, dv_dim), jnp.float32))
    if st.backward == "atomic":  # one kernel: dq and the bias gradient accumulate in float32 buffers in place
        dq0, db0 = jnp.zeros((bsz, h, tp, d), jnp.float32), jnp.zeros((bsz, h, tp, 1), jnp.float32)
        dk, dv, dq, db = _call(st, _dkdv_kernel, (bsz, h, st.sp // bk),
                               [full_q(qh), k_tile(kh), k_tile(vh), full_q(doh), *[full_row] * 5, full_q(dq0),
                                full_row],
                               [out_tile(d), out_tile(dv_dim), full_q(dq0), full_row],
                               (*dk_shapes, jax.ShapeDtypeStruct(dq0.shape, jnp.float32),
                                jax.ShapeDtypeStruct(db0.shape, jnp.float32)),
                               "sparse_attention_bwd_atomic", aliases={9: 2, 10: 3})(
                                   qh, kh, vh, doh, lse, delta, rows, bias_rows, dd_rows, dq0, db0)
        return dq, _sum_groups(dk, kvh), _sum_groups(dv, kvh), db
    dk, dv = _call(st, _dkdv_kernel, (bsz, h, st.sp // bk),
                   [full_q(qh), k_tile(kh), k_tile(vh), full_q(doh), full_row, full_row, full_row, full_row,
                    full_row],
                   [out_tile(d), out_tile(dv_dim)], dk_shapes, "sparse_attention_dkdv")(
                       qh, kh, vh, doh, lse, delta, rows, bias_rows, dd_rows)
    q_tile = lambda x: pl.BlockSpec((None, None, bq, x.shape[-1]), lambda b, hh, i: (b, hh, i, 0))
    full_kv = lambda x: pl.BlockSpec((None, None, st.sp, x.shape[-1]), lambda b, hh, i: (b, hh // grp, 0, 0))
    row_tile = _row(bq, lambda b, hh, i: (b, hh, i))
    dq, db = _call(st, _dq_kernel, (bsz, h, tp // bq),
                   [q_tile(qh), full_kv(kh), full_kv(vh), q_tile(doh), row_tile, row_tile, row_tile, row_tile,
                    row_tile],
                   [q_tile(qh), row_tile],
                   (jax.ShapeDtypeStruct((bsz, h, tp, d), jnp.float32),
                    jax.ShapeDtypeStruct((bsz, h, tp, 1), jnp.float32)),
                   "sparse_attention_dq")(qh, kh, vh, doh, lse, delta, rows, bias_rows, dd_rows)
    return dq, _sum_groups(dk, kvh), _sum_groups(dv, kvh), db


def _sum_groups(x, kvh):
    """Grouped-query attention: the k/v gradient of a kv head sums over its query heads."""
    bsz, h, sp, width = x.shape
    return x.reshape(bsz, kvh, h // kvh, sp, width).sum(2)


# ------------------------------------------------------------------------------------------ custom_vjp glue
def _pad_heads_major(x, length):
    """[B, T, H, D] -> [B, H, length, D] (zero padded)."""
    x = jnp.transpose(x, (0, 2, 1, 3))
    return jnp.pad(x, ((0, 0), (0, 0), (0, length - x.shape[2]), (0, 0)))


def _rows(st: _Static, bsz, h, seed, bias, offsets):
    """Per-row kernel inputs: row hashes (uint32) and the head's bias, both ``[B, H, Tp, 1]``. ``offsets``: the
    global index of this shard's first batch row and first head (the noise is a function of global indices)."""
    shape = (bsz, h, st.tp, 1)
    if st.train and st.gate is not None:
        rows = row_hash(seed, offsets[0] + jnp.arange(bsz)[:, None, None, None],
                        noise_heads(st.gate, offsets[1] + jnp.arange(h)[None, :, None, None]),
                        jnp.arange(st.tp)[None, None, :, None])
    else:
        rows = jnp.zeros(shape, jnp.uint32)
    return rows, jnp.broadcast_to(bias.astype(jnp.float32)[None, :, None, None], shape)


def _fwd_impl(st: _Static, q, k, v, bias, seed, offsets):
    bsz, t, h, _ = q.shape
    qh, kh, vh = _pad_heads_major(q, st.tp), _pad_heads_major(k, st.sp), _pad_heads_major(v, st.sp)
    rows, bias_rows = _rows(st, bsz, h, seed, bias, offsets)
    o, lse, rho, edges = _forward(st, qh, kh, vh, rows, bias_rows)
    out = jnp.transpose(o[:, :, :t], (0, 2, 1, 3))
    if st.gate is None:
        density = edge_density = jnp.ones((bsz, h), jnp.float32)
    else:
        pairs = float(st.pairs())  # a float: from T = 65536 (causal) the count no longer fits an int32
        density = rho.sum((2, 3)) / pairs
        edge_density = edges.astype(jnp.float32).sum((2, 3)) / pairs  # float32 sum: exact below 2**24, no overflow
    return out, density, edge_density, (qh, kh, vh, rows, bias_rows, o, lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(st: _Static, q, k, v, bias, seed, offsets):
    out, density, edge_density, _ = _fwd_impl(st, q, k, v, bias, seed, offsets)
    return out, density, edge_density


def _fused_fwd(st, q, k, v, bias, seed, offsets):
    out, density, edge_density, res = _fwd_impl(st, q, k, v, bias, seed, offsets)
    return (out, density, edge_density), (res, bias, seed)


def _fused_bwd(st, res, cts):
    (qh, kh, vh, rows, bias_rows, o, lse), bias, seed = res
    dout, ddens, _ = cts  # the edge density is a count: no gradient
    bsz, h, tp, _ = qh.shape
    t, s = st.t, st.s
    doh = _pad_heads_major(dout.astype(qh.dtype), tp)
    delta = jnp.sum(doh.astype(jnp.float32) * o.astype(jnp.float32), axis=-1, keepdims=True)  # D_i = dy_i . y_i
    dd_rows = jnp.where(jnp.arange(tp)[:, None] < t,  # padded rows inert
                        (ddens.astype(jnp.float32) / float(st.pairs()))[:, :, None, None], 0.0)
    dq, dk, dv, db = _backward(st, qh, kh, vh, doh, lse, delta, rows, bias_rows, dd_rows)
    back = lambda x, n, dt: jnp.transpose(x[:, :, :n], (0, 2, 1, 3)).astype(dt)
    dbias = db.sum(axis=(0, 2, 3)) if st.gate is not None else jnp.zeros_like(bias)
    return (back(dq, t, qh.dtype), back(dk, s, kh.dtype), back(dv, s, vh.dtype), dbias.astype(bias.dtype),
            None, None)


_fused.defvjp(_fused_fwd, _fused_bwd)


# ------------------------------------------------------------------------------------------------- public
def backend_of(platform: str) -> str:
    """The kernel lowering for a JAX platform: ``"gpu"`` (Triton), ``"tpu"`` (Mosaic) or ``"interpret"``."""
    return {"gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}.get(platform, "interpret")


def unsupported(q, k, v, backend: str) -> str | None:
    """Why the compiled kernel cannot take these inputs (None when it can). Interpret mode takes anything."""
    if backend == "interpret":
        return None
    if q.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
        return f"dtype {q.dtype} (the kernel takes float32, bfloat16 or float16)"
    d, dv = q.shape[-1], v.shape[-1]
    if backend == "gpu" and not all(x >= 16 and x & (x - 1) == 0 for x in (d, dv)):
        return f"head_dim {d}/{dv} (the Triton kernel needs powers of two >= 16)"
    if backend == "tpu" and (d % 128 or dv % 128) and d not in (64,):
        return f"head_dim {d} (the Mosaic kernel needs 64 or a multiple of 128)"
    return None


def _fit(block: int, length: int, backend: str) -> int:
    """A block no longer than needed: the next power of two >= length (at least 16 for Triton's dot)."""
    floor = 16 if backend == "gpu" else (128 if backend == "tpu" else 1)
    return max(floor, min(block, pl.next_power_of_2(length)))


def pallas_attention(q, k, v, gate: Gate | None, *, causal: bool, train: bool, seed, return_adjacency: bool,
                     backend: str | None = None, tpu_interpret: bool = False, window: int | None = None,
                     block_sizes: BlockSizes | None = None, partition=None, **blocks):
    """Same contract as :func:`reference_attention`, fused. ``backend`` defaults to the default device's
    (``"interpret"`` on CPU). ``block_sizes``: a :class:`BlockSizes` (default: ``BLOCK_SIZES[backend]``), its fields
    overridden by ``blocks`` (``block_q``, ``block_k``, ``block_q_bwd``, ``block_k_bwd``, ``backward``
    (``"split"`` | ``"atomic"``), and on GPU ``num_warps``, ``num_stages``). ``partition(kernel, q, k, v, bias,
    seed)`` runs the per-shard kernel (``attention/sharded.py``: under ``shard_map`` on a training mesh); default:
    one device."""
    backend = backend or backend_of(jax.default_backend())
    cfg = BlockSizes.of(block_sizes, backend=backend, **blocks).check(backend)
    if gate is not None and gate.noise is not None and train:
        raise ValueError("implementation='pallas' samples the method's full gate noise; a scaled noise (Gate.noise, "
                         "noise annealing) runs in implementation='chunked' or 'reference' ('auto' picks chunked)")
    why = unsupported(q, k, v, backend)
    if why:
        raise ValueError(f"implementation='pallas' cannot run {why} on {backend}; use implementation='chunked' "
                         "(or 'auto', which falls back by itself)")
    t, s_len, h = q.shape[1], k.shape[1], q.shape[2]
    st = _Static(backend=backend, causal=causal, train=train,
                 gate=None if gate is None else dataclasses.replace(gate, bias=None, noise=None), t=t, s=s_len,
                 block_q=_fit(cfg.block_q, t, backend), block_k=_fit(cfg.block_k, s_len, backend),
                 block_q_bwd=_fit(cfg.block_q_bwd, t, backend), block_k_bwd=_fit(cfg.block_k_bwd, s_len, backend),
                 num_warps=cfg.num_warps, num_stages=cfg.num_stages, backward=cfg.backward,
                 tpu_interpret=tpu_interpret, window=window)
    bias = jnp.zeros((h,), jnp.float32) if gate is None else jnp.broadcast_to(gate.bias, (h,)).astype(jnp.float32)
    seed = jnp.zeros((), jnp.uint32) if seed is None else seed
    kernel = functools.partial(_fused, st)
    if partition is None:
        out, density, edge_density = kernel(q, k, v, bias, seed, jnp.zeros((2,), jnp.int32))
    else:
        out, density, edge_density = partition(kernel, q, k, v, bias, seed)
    adjacency = None
    if return_adjacency:  # analysis only: the materialised edges, from the reference statement (same gates)
        from .reference import attention_weights

        _, a, _, _ = attention_weights(q, k, None if gate is None else dataclasses.replace(
            gate, bias=jax.lax.stop_gradient(bias)), causal=causal, train=train, seed=seed, window=window)
        adjacency = a > 0
    return out, density, edge_density, adjacency
