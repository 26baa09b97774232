"""Memory-efficient sparse attention: online softmax over key blocks, hand-written backward (O(T) memory).

Forward, for each query block, over the key blocks that the causal mask (and a sliding window, when given) does
not empty (dynamic loop bounds, so fully-masked blocks cost nothing: O(T W) work with a window W): keep the running max ``m``, the softmax denominator ``l`` over **all**
causal keys, and the gated numerator ``acc = sum_j exp(s_ij - m) A_ij v_j``; ``out = acc / l``. The gate never
enters ``l`` (no renormalisation). Saved for the backward pass: ``out`` and the row log-sum-exp only.

Backward (``y_i = sum_j P_ij A_ij v_j``, ``D_i = dy_i . y_i``, ``dov_ij = dy_i . v_j``)::

    dv_j  = sum_i P_ij A_ij dy_i
    dg_ij = P_ij dov_ij A'_ij + (d rho / N) E'_ij          (A' = d gate / d g, E' = d expected / d g)
    ds_ij = P_ij (A_ij dov_ij - D_i) + dg_ij               (softmax path + gate path, since g = s + b)
    dq_i  = sum_j ds_ij k_j / sqrt(d);  dk_j = sum_i ds_ij q_i / sqrt(d);  db = sum dg

The noise and gates of each block are regenerated from the counter-based hash (gates/noise.py).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..gates import Gate, expected_gate, expected_gate_slope, gate_value_and_slope, hash_uniform, is_edge, \
    noise_heads
from . import geometry

_NEG = -1e30


@dataclasses.dataclass(frozen=True)
class _Cfg:
    causal: bool
    train: bool
    gate: Gate | None  # static part only (bias and noise replaced by None); None = dense
    t: int
    s: int
    block_q: int
    block_k: int
    window: int | None = None  # sliding window (causal): key j is visible to query i iff i - j < window
    noise_scaled: bool = False  # the training noise is scaled by ``noise_scale`` (Gate.noise set: noise annealing)

    @property
    def nq(self):
        return -(-self.t // self.block_q)

    @property
    def nk(self):
        return -(-self.s // self.block_k)

    @property
    def tiles(self) -> geometry.Tiles:
        return geometry.Tiles(self.t, self.s, self.block_q, self.block_k, self.causal, self.window)

    def pairs(self):
        """Number of (query, key) pairs the density averages over."""
        return geometry.pairs(self.t, self.s, self.causal, self.window)

    def kblock_range(self, qi):
        """``[lo, hi)``: the key blocks query block ``qi`` needs (the rest are empty under the causal mask and the
        window)."""
        return self.tiles.k_range(qi)

    def qblock_range(self, kj):
        """``[lo, hi)``: the query blocks that key block ``kj`` is visible to."""
        return self.tiles.q_range(kj)


def _block_scores(cfg: _Cfg, qb, kb, qi, kj, bias, seed, noise_scale):
    """Logits, validity, gate logits, gate values and slopes of one (query block, key block) pair (XLA drops
    whatever a caller leaves unused).

    qb: [B, K, G, bq, D] f32, kb: [B, K, bk, D] f32 (head-major). Returns arrays shaped [B, K, G, bq, bk].
    """
    bsz, kvh, grp, bq, d = qb.shape
    bk = kb.shape[2]
    s = jnp.einsum("bkgqd,bksd->bkgqs", qb, kb) / np.float32(np.sqrt(d))
    i = qi * cfg.block_q + jnp.arange(bq)
    j = kj * cfg.block_k + jnp.arange(bk)
    valid = (i[:, None] < cfg.t) & (j[None, :] < cfg.s)
    if cfg.causal:
        valid &= j[None, :] <= i[:, None]
    if cfg.window is not None:
        valid &= i[:, None] - j[None, :] < cfg.window
    if cfg.gate is None:
        return s, valid, None, None, None
    g = s + bias.reshape(1, kvh, grp, 1, 1)
    if cfg.train:
        heads = noise_heads(cfg.gate, jnp.arange(kvh * grp).reshape(1, kvh, grp, 1, 1))
        noise = hash_uniform(seed, jnp.arange(bsz).reshape(-1, 1, 1, 1, 1), heads,
                               i.reshape(1, 1, 1, bq, 1), j.reshape(1, 1, 1, 1, bk))
    else:
        noise = None
    gate = dataclasses.replace(cfg.gate, noise=noise_scale) if cfg.noise_scaled else cfg.gate
    a, a_slope = gate_value_and_slope(gate, g, noise, cfg.train)
    return s, valid, g, a, a_slope


def _pad(x, axis, to):
    extra = to - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths)


def _heads_major(x, length, kvh):
    """[B, T, H, D] -> f32 [B, K, G, Tp, D] (padded to ``length``)."""
    bsz, t, h, d = x.shape
    x = _pad(x.astype(jnp.float32), 1, length).reshape(bsz, length, kvh, h // kvh, d)
    return jnp.transpose(x, (0, 2, 3, 1, 4))


def _split(cfg: _Cfg, q, k, v):
    """Head-major, padded f32 copies: q [B, K, G, Tp, D]; k, v [B, K, Sp, D]."""
    kvh = k.shape[2]
    qp = _heads_major(q, cfg.nq * cfg.block_q, kvh)
    kp = _heads_major(k, cfg.nk * cfg.block_k, kvh)[:, :, 0]
    vp = _heads_major(v, cfg.nk * cfg.block_k, kvh)[:, :, 0]
    return qp, kp, vp


def _forward(cfg: _Cfg, q, k, v, bias, seed, noise_scale):
    bsz, t, h, d = q.shape
    kvh, dv = k.shape[2], v.shape[3]
    grp = h // kvh
    qp, kp, vp = _split(cfg, q, k, v)
    bq, bk = cfg.block_q, cfg.block_k

    def q_block(_, qi):
        qb = jax.lax.dynamic_slice_in_dim(qp, qi * bq, bq, axis=3)

        def k_step(kj, carry):
            m, l, acc, rho, edges = carry
            kb = jax.lax.dynamic_slice_in_dim(kp, kj * bk, bk, axis=2)
            vb = jax.lax.dynamic_slice_in_dim(vp, kj * bk, bk, axis=2)
            s, valid, g, a, _ = _block_scores(cfg, qb, kb, qi, kj, bias, seed, noise_scale)
            m_new = jnp.maximum(m, jnp.max(jnp.where(valid, s, _NEG), axis=-1))
            p = jnp.where(valid, jnp.exp(s - m_new[..., None]), 0.0)
            alpha = jnp.exp(m - m_new)
            l = alpha * l + jnp.sum(p, axis=-1)
            pa = p if a is None else p * a
            acc = alpha[..., None] * acc + jnp.einsum("bkgqs,bksd->bkgqd", pa, vb)
            if g is not None:
                rho = rho + jnp.sum(jnp.where(valid, expected_gate(cfg.gate, g), 0.0), axis=(-2, -1))
                edges = edges + jnp.sum(valid & is_edge(cfg.gate, g), axis=(-2, -1), dtype=jnp.int32)
            return m_new, l, acc, rho, edges

        init = (jnp.full((bsz, kvh, grp, bq), _NEG, jnp.float32), jnp.zeros((bsz, kvh, grp, bq), jnp.float32),
                jnp.zeros((bsz, kvh, grp, bq, dv), jnp.float32), jnp.zeros((bsz, kvh, grp), jnp.float32),
                jnp.zeros((bsz, kvh, grp), jnp.int32))
        m, l, acc, rho, edges = jax.lax.fori_loop(*cfg.kblock_range(qi), k_step, init)
        l = jnp.where(l > 0, l, 1.0)  # padded query rows only
        return None, (acc / l[..., None], m + jnp.log(l), rho, edges)

    _, (out, lse, rho, edges) = jax.lax.scan(q_block, None, jnp.arange(cfg.nq))
    # out: [nq, B, K, G, bq, Dv] -> [B, T, H, Dv]; lse: [nq, B, K, G, bq] -> [B, K, G, Tp]
    out = jnp.moveaxis(out, (0, 4), (1, 2)).reshape(bsz, cfg.nq * bq, h, dv)[:, :t]
    lse = jnp.moveaxis(lse, 0, 3).reshape(bsz, kvh, grp, cfg.nq * bq)
    if cfg.gate is None:
        density = edge_density = jnp.ones((bsz, h), jnp.float32)
    else:
        pairs = float(cfg.pairs())  # a float: from T = 65536 (causal) the count no longer fits an int32
        density = (rho.sum(0) / pairs).reshape(bsz, h)
        edge_density = (edges.astype(jnp.float32).sum(0) / pairs).reshape(bsz, h)  # float32 sum: no int32 overflow
    return out, lse, density, edge_density


def _backward(cfg: _Cfg, q, k, v, bias, seed, noise_scale, out, lse, dout, ddens):
    bsz, t, h, d = q.shape
    kvh, dv = k.shape[2], v.shape[3]
    grp = h // kvh
    qp, kp, vp = _split(cfg, q, k, v)
    bq, bk = cfg.block_q, cfg.block_k
    tp = cfg.nq * bq
    dop = _heads_major(dout, tp, kvh)
    delta = jnp.einsum("bkgtd,bkgtd->bkgt", dop, _heads_major(out, tp, kvh))  # D_i = dy_i . y_i
    ddens = (ddens.astype(jnp.float32) / float(cfg.pairs())).reshape(bsz, kvh, grp, 1, 1)
    scale = np.float32(1.0 / np.sqrt(d))

    def k_block(carry, kj):
        dq, dbias = carry
        kb = jax.lax.dynamic_slice_in_dim(kp, kj * bk, bk, axis=2)
        vb = jax.lax.dynamic_slice_in_dim(vp, kj * bk, bk, axis=2)

        def q_step(qi, inner):
            dq, dk, dvv, dbias = inner
            qb = jax.lax.dynamic_slice_in_dim(qp, qi * bq, bq, axis=3)
            dob = jax.lax.dynamic_slice_in_dim(dop, qi * bq, bq, axis=3)
            lse_b = jax.lax.dynamic_slice_in_dim(lse, qi * bq, bq, axis=3)
            dl_b = jax.lax.dynamic_slice_in_dim(delta, qi * bq, bq, axis=3)
            s, valid, g, a, a_slope = _block_scores(cfg, qb, kb, qi, kj, bias, seed, noise_scale)
            p = jnp.where(valid, jnp.exp(s - lse_b[..., None]), 0.0)
            dov = jnp.einsum("bkgqd,bksd->bkgqs", dob, vb)
            if a is None:
                pa, ds = p, p * (dov - dl_b[..., None])
            else:
                pa = p * a
                dg = p * dov * a_slope + jnp.where(valid, ddens * expected_gate_slope(cfg.gate, g), 0.0)
                ds = pa * dov - p * dl_b[..., None] + dg
                dbias = dbias + jnp.sum(dg, axis=(0, 3, 4))
            dvv = dvv + jnp.einsum("bkgqs,bkgqd->bksd", pa, dob)
            dk = dk + jnp.einsum("bkgqs,bkgqd->bksd", ds, qb) * scale
            dq_b = jax.lax.dynamic_slice_in_dim(dq, qi * bq, bq, axis=3)
            dq = jax.lax.dynamic_update_slice_in_dim(dq, dq_b + jnp.einsum("bkgqs,bksd->bkgqd", ds, kb) * scale,
                                                     qi * bq, axis=3)
            return dq, dk, dvv, dbias

        zeros_k = jnp.zeros((bsz, kvh, bk, d), jnp.float32)
        zeros_v = jnp.zeros((bsz, kvh, bk, dv), jnp.float32)
        dq, dk, dvv, dbias = jax.lax.fori_loop(*cfg.qblock_range(kj), q_step, (dq, zeros_k, zeros_v, dbias))
        return (dq, dbias), (dk, dvv)

    init = (jnp.zeros_like(qp), jnp.zeros((kvh, grp), jnp.float32))
    (dq, dbias), (dk, dvv) = jax.lax.scan(k_block, init, jnp.arange(cfg.nk))
    dq = jnp.transpose(dq, (0, 3, 1, 2, 4)).reshape(bsz, tp, h, d)[:, :t].astype(q.dtype)
    # dk, dv: [nk, B, K, bk, D] -> [B, S, K, D]
    dk = jnp.transpose(dk, (1, 0, 3, 2, 4)).reshape(bsz, cfg.nk * bk, kvh, d)[:, : cfg.s].astype(k.dtype)
    dvv = jnp.transpose(dvv, (1, 0, 3, 2, 4)).reshape(bsz, cfg.nk * bk, kvh, dv)[:, : cfg.s].astype(v.dtype)
    return dq, dk, dvv, dbias.reshape(h)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _chunked(cfg: _Cfg, q, k, v, bias, seed, noise_scale):
    out, _, density, edge_density = _forward(cfg, q, k, v, bias, seed, noise_scale)
    return out.astype(q.dtype), density, edge_density


def _chunked_fwd(cfg, q, k, v, bias, seed, noise_scale):
    out, lse, density, edge_density = _forward(cfg, q, k, v, bias, seed, noise_scale)
    out = out.astype(q.dtype)
    return (out, density, edge_density), (q, k, v, bias, seed, noise_scale, out, lse)


def _chunked_bwd(cfg, res, cts):
    q, k, v, bias, seed, noise_scale, out, lse = res
    dout, ddens, _ = cts  # the edge density is a count: no gradient
    dq, dk, dv, dbias = _backward(cfg, q, k, v, bias, seed, noise_scale, out, lse, dout, ddens)
    return dq, dk, dv, dbias.astype(bias.dtype), None, None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def _adjacency(cfg: _Cfg, q, k, bias, seed, noise_scale):
    """Boolean ``[B, H, T, S]`` edges, computed one query block at a time (no float T x T buffer)."""
    bsz, t, h, d = q.shape
    qp, kp, _ = _split(cfg, q, k, k)

    def q_block(_, qi):
        qb = jax.lax.dynamic_slice_in_dim(qp, qi * cfg.block_q, cfg.block_q, axis=3)
        one = dataclasses.replace(cfg, block_k=cfg.nk * cfg.block_k)
        s, valid, g, a, _ = _block_scores(one, qb, kp, qi, 0, bias, seed, noise_scale)
        return None, valid if a is None else valid & (a > 0)

    _, adj = jax.lax.scan(q_block, None, jnp.arange(cfg.nq))  # [nq, B, K, G, bq, Sp]
    adj = jnp.moveaxis(adj, 0, 3).reshape(bsz, h, cfg.nq * cfg.block_q, -1)
    return adj[:, :, :t, : cfg.s]


def chunked_attention(q, k, v, gate: Gate | None, *, causal: bool, train: bool, seed, return_adjacency: bool,
                      block_q: int = 256, block_k: int = 256, window: int | None = None):
    """Same contract as :func:`reference_attention`; O(T) memory in forward and backward, O(T W) work with a
    sliding ``window`` W (a static int)."""
    bsz, t, h, d = q.shape
    s_len = k.shape[1]
    cfg = _Cfg(causal=causal, train=train,
               gate=None if gate is None else dataclasses.replace(gate, bias=None, noise=None),
               noise_scaled=gate is not None and gate.noise is not None, t=t, s=s_len, block_q=min(block_q, t),
               block_k=min(block_k, s_len), window=window)
    bias = jnp.zeros((h,), jnp.float32) if gate is None else jnp.broadcast_to(gate.bias, (h,)).astype(jnp.float32)
    seed = jnp.zeros((), jnp.uint32) if seed is None else seed
    noise_scale = jnp.asarray(1.0 if gate is None or gate.noise is None else gate.noise, jnp.float32)
    out, density, edge_density = _chunked(cfg, q, k, v, bias, seed, noise_scale)
    adjacency = _adjacency(cfg, q, k, jax.lax.stop_gradient(bias), seed, noise_scale) if return_adjacency else None
    return out, density, edge_density, adjacency
