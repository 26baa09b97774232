"""Exact block-skipping inference (eval gates) and block occupancy: what a sparse model lets a kernel skip.

An experiment, not a library kernel: moved out of ``sparsejax/attention/`` (issue K) because it is faster than
the fused kernel nowhere it was measured. On an H200 (``benchmarks/block_skipping.py``,
``docs/results/block_skipping_h200.txt``; T=4096, bf16, eval gates) it takes 1.02-1.41x the fused kernel's time
even with 94% of the tiles empty: pass 1 already costs most of a forward (the softmax denominator includes
closed edges). It is kept as the exact statement of what skipping can remove, with its tests
(``tests/test_pallas.py``), and ``tile_occupancy`` measures that bound on trained models
(``experiments/block_occupancy.py``). Import it with ``experiments/`` on ``sys.path``.

Pass 1 (one Pallas program per batch, head, query tile) computes the row log-sum-exp over **all** causal keys (the
softmax denominator of the method includes closed edges) and which key tiles hold at least one open edge. Pass 2
computes ``y_i = sum_j exp(s_ij - lse_i) A_ij v_j`` only on those tiles: a tile with no open edge contributes
exactly 0, so the output equals the reference's while the value product (and the second score product) is skipped
there. On GPU the skip is a branch per tile; on CPU the kernels run in Pallas interpret mode (correctness, and the
count of skipped tiles: the bound on what an accelerator saves in pass 2). The tile geometry is the library's
(``sparsejax.attention.geometry``), the tile math the fused kernel's (``sparsejax.attention.pallas._tile``).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from sparsejax.attention import geometry
from sparsejax.attention.pallas import _dot_nn, _pad_heads_major, _tile, backend_of
from sparsejax.gates import Gate, as_gate, is_edge

_NEG = -1e30


@dataclasses.dataclass(frozen=True)
class _Static:
    backend: str
    causal: bool
    gate: Gate | None
    t: int
    s: int
    block: int
    nk_pad: int  # key tiles, padded to a power of two (Triton block shapes)
    train: bool = False  # inference: deterministic gates only (read by the shared tile math)
    window: None = None  # no sliding window here (read by the shared tile math)

    def k_blocks(self, qi):
        return geometry.Tiles(self.t, self.s, self.block, self.block, self.causal).k_hi(qi)


def _scores(st, q, k, qi, kj, bias):
    """Scores, validity and open (eval-mode) edges of one tile: the fused kernel's tile math, deterministic gates."""
    s, valid, g, *_ = _tile(st, q, k, qi, kj, st.block, st.block, None, bias)
    return s, valid, valid if g is None else valid & is_edge(st.gate, g)


def _pass1(q_ref, k_ref, bias_ref, lse_ref, occ_ref, *, st):
    b = st.block
    qi = pl.program_id(2)
    q, bias = q_ref[...], bias_ref[...]
    lanes = jax.lax.broadcasted_iota(jnp.int32, (1, st.nk_pad), 1)

    def body(kj, carry):
        m, l, occ = carry
        k = k_ref[pl.ds(pl.multiple_of(kj * b, b), b), :]
        s, valid, edge = _scores(st, q, k, qi, kj, bias)
        m_new = jnp.maximum(m, jnp.max(jnp.where(valid, s, _NEG), axis=1, keepdims=True))
        l = jnp.exp(m - m_new) * l + jnp.sum(jnp.where(valid, jnp.exp(s - m_new), 0.0), axis=1, keepdims=True)
        any_edge = jnp.max(edge.astype(jnp.int32))
        return m_new, l, jnp.where(lanes == kj, any_edge, occ)

    init = (jnp.full((b, 1), _NEG, jnp.float32), jnp.zeros((b, 1), jnp.float32), jnp.zeros((1, st.nk_pad), jnp.int32))
    m, l, occ = jax.lax.fori_loop(0, st.k_blocks(qi), body, init)
    lse_ref[...] = m + jnp.log(jnp.where(l > 0, l, 1.0))
    occ_ref[...] = occ


def _pass2(q_ref, k_ref, v_ref, bias_ref, lse_ref, occ_ref, o_ref, *, st):
    b = st.block
    qi = pl.program_id(2)
    q, bias, lse, occ = q_ref[...], bias_ref[...], lse_ref[...], occ_ref[...]
    lanes = jax.lax.broadcasted_iota(jnp.int32, (1, st.nk_pad), 1)

    def body(kj, acc):
        def tile(acc):
            cols = pl.ds(pl.multiple_of(kj * b, b), b)
            k, v = k_ref[cols, :], v_ref[cols, :]
            s, valid, edge = _scores(st, q, k, qi, kj, bias)
            pa = jnp.where(edge, jnp.exp(s - lse), 0.0)
            return acc + _dot_nn(pa.astype(v.dtype), v)
        open_tile = jnp.sum(jnp.where(lanes == kj, occ, 0)) > 0
        return jax.lax.cond(open_tile, tile, lambda a: a, acc)

    acc = jax.lax.fori_loop(0, st.k_blocks(qi), body, jnp.zeros((b, v_ref.shape[-1]), jnp.float32))
    o_ref[...] = acc.astype(o_ref.dtype)


def _call(st, kernel, grid, in_specs, out_specs, out_shape, name):
    kw = {"interpret": True} if st.backend != "gpu" else {}
    if st.backend == "gpu":
        from jax.experimental.pallas import triton as plgpu

        kw["compiler_params"] = plgpu.CompilerParams(num_warps=4, num_stages=2)
    return pl.pallas_call(functools.partial(kernel, st=st), grid=grid, in_specs=in_specs, out_specs=out_specs,
                          out_shape=out_shape, name=name, **kw)


def block_skipping_attention(q, k, v, gate=None, *, causal: bool = True, block: int = 64, backend: str | None = None):
    """Eval-mode gated attention that skips the value product on tiles with no open edge.

    Returns ``(out [B, T, H, D], open_tiles [B, H, nq, nk] bool)``; ``open_tiles`` covers the tiles a causal
    kernel visits (the others are False). Same output as ``sparse_attention(..., mode="eval")``."""
    gate = as_gate(gate)
    bsz, t, h, d = q.shape
    s_len, kvh = k.shape[1], k.shape[2]
    grp = h // kvh
    backend = backend or backend_of(jax.default_backend())
    nq, nk = -(-t // block), -(-s_len // block)
    st = _Static(backend, causal, None if gate is None else dataclasses.replace(gate, bias=None), t, s_len, block,
                 pl.next_power_of_2(nk))
    tp, sp = nq * block, nk * block
    qh, kh, vh = _pad_heads_major(q, tp), _pad_heads_major(k, sp), _pad_heads_major(v, sp)
    bias = jnp.zeros((h,), jnp.float32) if gate is None else jnp.broadcast_to(gate.bias, (h,)).astype(jnp.float32)
    bias_rows = jnp.broadcast_to(bias[None, :, None, None], (bsz, h, tp, 1))
    q_spec = pl.BlockSpec((None, None, block, d), lambda b, hh, i: (b, hh, i, 0))
    kv_spec = lambda x: pl.BlockSpec((None, None, sp, x.shape[-1]), lambda b, hh, i: (b, hh // grp, 0, 0))
    row_spec = pl.BlockSpec((None, None, block, 1), lambda b, hh, i: (b, hh, i, 0))
    occ_spec = pl.BlockSpec((None, None, 1, st.nk_pad), lambda b, hh, i: (b, hh, i, 0))
    grid = (bsz, h, nq)
    lse, occ = _call(st, _pass1, grid, [q_spec, kv_spec(kh), row_spec], [row_spec, occ_spec],
                     (jax.ShapeDtypeStruct((bsz, h, tp, 1), jnp.float32),
                      jax.ShapeDtypeStruct((bsz, h, nq, st.nk_pad), jnp.int32)), "block_skip_lse")(qh, kh, bias_rows)
    o_spec = pl.BlockSpec((None, None, block, vh.shape[-1]), lambda b, hh, i: (b, hh, i, 0))
    out = _call(st, _pass2, grid, [q_spec, kv_spec(kh), kv_spec(vh), row_spec, row_spec, occ_spec], o_spec,
                jax.ShapeDtypeStruct((bsz, h, tp, vh.shape[-1]), q.dtype), "block_skip_out")(
                    qh, kh, vh, bias_rows, lse, occ)
    return jnp.transpose(out[:, :, :t], (0, 2, 1, 3)), occ[..., :nk] > 0


def causal_tiles(t: int, s: int, block: int, causal: bool = True) -> np.ndarray:
    """``[nq, nk]`` bool: the tiles that hold at least one (causal) pair, i.e. the ones a kernel visits."""
    return geometry.Tiles(t, s, block, block, causal).visited()


def tile_occupancy(adjacency, block: int, causal: bool = True) -> dict:
    """From boolean edges ``[..., T, S]`` (e.g. ``attn.hook_adjacency``): the share of visited tiles with no open
    edge, and the share of visited (query, key) pairs that lie in such tiles (the value-product work skipped)."""
    adj = np.asarray(adjacency)
    t, s = adj.shape[-2:]
    nq, nk = -(-t // block), -(-s // block)
    padded = np.zeros(adj.shape[:-2] + (nq * block, nk * block), bool)
    padded[..., :t, :s] = adj
    tiles = padded.reshape(*adj.shape[:-2], nq, block, nk, block).any(axis=(-3, -1))
    visited = causal_tiles(t, s, block, causal)
    rows = np.minimum((np.arange(nq) + 1) * block, t) - np.arange(nq) * block
    if causal:
        i = np.arange(t)
        pair_counts = np.zeros((nq, nk))
        for kj in range(nk):
            lo, hi = kj * block, min((kj + 1) * block, s)
            per_row = np.clip(np.minimum(i + 1, hi) - lo, 0, None)
            pair_counts[:, kj] = np.add.reduceat(per_row, np.arange(0, t, block))
    else:
        cols = np.minimum((np.arange(nk) + 1) * block, s) - np.arange(nk) * block
        pair_counts = rows[:, None] * cols[None, :]
    empty = ~tiles & visited
    n_lead = int(np.prod(adj.shape[:-2]))
    return {"block": block, "empty_tile_share": float(empty.sum() / (visited.sum() * n_lead)),
            "skipped_pair_share": float((empty * pair_counts).sum() / (pair_counts.sum() * n_lead))}
