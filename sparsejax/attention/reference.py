"""The materialised reference: the method stated in plain jnp (docs/method.md §1). O(T^2) memory."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..gates import Gate, expected_gate, gate_sample, hash_uniform, is_edge, noise_heads


def causal_mask(t: int, s: int, window=None):
    """``[t, s]`` bool, True where key j <= query i (top-left aligned, as ``jax.nn.dot_product_attention``) and,
    with a sliding ``window`` (an int, or a traced integer scalar), i - j < window."""
    i, j = jnp.arange(t)[:, None], jnp.arange(s)[None, :]
    return (j <= i) if window is None else (j <= i) & (i - j < window)


def attention_weights(q, k, gate: Gate | None, *, causal: bool, train: bool, seed, attention_mask=None,
                      window=None):
    """Materialised softmax ``p``, gate values ``a`` (0 outside the mask; straight-through gradients attached),
    both ``[B, H, T, S]`` f32, the expected density ``[B, H]`` and the deterministic edge density ``[B, H]``
    (share of causal pairs that are eval-mode edges). ``p * a`` is the effective attention.

    ``attention_mask`` ``[B, T]`` (self-attention, T == S; True/1 = a real token, False/0 = padding): the softmax
    runs over the real keys only, gates (and so edges and outputs) exist only between real tokens — a padded
    query's row is all zero — and the densities average over the pairs of real tokens.

    ``window`` (causal only): sliding-window attention, query i sees key j iff j <= i and i - j < window; the
    softmax, the gates and the densities' denominator are over those pairs (the pairs the dense model attends)."""
    b, t, h, d = q.shape
    s_len, kv_heads = k.shape[1], k.shape[2]
    kh = jnp.repeat(k.astype(jnp.float32), h // kv_heads, axis=2)
    s = jnp.einsum("bthd,bshd->bhts", q.astype(jnp.float32), kh) / jnp.sqrt(jnp.float32(d))
    mask = causal_mask(t, s_len, window) if causal else jnp.ones((t, s_len), bool)
    if attention_mask is not None:
        real = jnp.asarray(attention_mask).astype(bool)
        keys = mask[None, None] & real[:, None, None, :]   # [B, 1, T, S]: the real keys each query's softmax sees
        mask = keys & real[:, None, :, None]                # the pairs of real tokens
        has_key = jnp.any(keys, -1, keepdims=True)          # a left-padded query may have none: its row is 0
        p = jnp.where(has_key, jax.nn.softmax(jnp.where(keys, s, jnp.where(has_key, -jnp.inf, 0.0)), axis=-1), 0.0)
    else:
        p = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), axis=-1)  # softmax over all (causal) keys, as dense

    pairs = jnp.maximum(jnp.sum(mask, axis=(-2, -1)), 1)  # () or [B, 1]
    if gate is None:  # the dense model: every gate open
        ones = jnp.ones((b, h), jnp.float32)
        return p, jnp.broadcast_to(mask, p.shape).astype(jnp.float32), ones, ones
    bias = jnp.broadcast_to(gate.bias, (h,)).astype(jnp.float32)
    g = s + bias[None, :, None, None]
    heads = noise_heads(gate, jnp.arange(h))
    noise = hash_uniform(seed, *jnp.ix_(jnp.arange(b), heads, jnp.arange(t), jnp.arange(s_len))) if train else None
    a = jnp.where(mask, gate_sample(gate, g, noise, train), 0.0)
    density = jnp.sum(jnp.where(mask, expected_gate(gate, g), 0.0), axis=(2, 3)) / pairs
    edges = jnp.sum(mask & is_edge(gate, jax.lax.stop_gradient(g)), axis=(2, 3)) / pairs
    return p, a, density, edges.astype(jnp.float32)


def reference_attention(q, k, v, gate: Gate | None, *, causal: bool, train: bool, seed, return_adjacency: bool,
                        attention_mask=None, window=None):
    """Returns ``(out [B,T,H,D], expected_density [B,H], edge_density [B,H], adjacency [B,H,T,S] bool or None)``."""
    p, a, density, edges = attention_weights(q, k, gate, causal=causal, train=train, seed=seed,
                                             attention_mask=attention_mask, window=window)
    vh = jnp.repeat(v.astype(jnp.float32), q.shape[2] // k.shape[2], axis=2)
    out = jnp.einsum("bhts,bshd->bthd", p * a, vh)  # no renormalisation: closed gates drop their mass
    return out.astype(q.dtype), density, edges, (a > 0) if return_adjacency else None
