"""The materialised reference: the method stated in plain jnp (DESIGN.md §1.1). O(T^2) memory."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..gates import Gate, expected_gate, gate_sample, hash_uniform


def causal_mask(t: int, s: int):
    """``[t, s]`` bool, True where key j <= query i (top-left aligned, as ``jax.nn.dot_product_attention``)."""
    return jnp.arange(s)[None, :] <= jnp.arange(t)[:, None]


def reference_attention(q, k, v, gate: Gate | None, *, causal: bool, train: bool, seed, return_adjacency: bool):
    """Returns ``(out [B,T,H,D], expected_density [B,H], adjacency [B,H,T,S] bool or None)``."""
    b, t, h, d = q.shape
    s_len, kv_heads = k.shape[1], k.shape[2]
    group = h // kv_heads
    f32 = lambda a: a.astype(jnp.float32)
    kh, vh = jnp.repeat(f32(k), group, axis=2), jnp.repeat(f32(v), group, axis=2)

    s = jnp.einsum("bthd,bshd->bhts", f32(q), kh) / jnp.sqrt(jnp.float32(d))
    mask = causal_mask(t, s_len) if causal else jnp.ones((t, s_len), bool)
    p = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), axis=-1)  # softmax over all (causal) keys, as dense

    if gate is None:  # the dense model: every gate open
        a = mask.astype(jnp.float32)
        density = jnp.ones((b, h), jnp.float32)
    else:
        bias = jnp.broadcast_to(gate.bias, (h,)).astype(jnp.float32)
        g = s + bias[None, :, None, None]
        if train:
            idx = jnp.ix_(jnp.arange(b), jnp.arange(h), jnp.arange(t), jnp.arange(s_len))
            noise = hash_uniform(seed, *idx)
        else:
            noise = None
        a = jnp.where(mask, gate_sample(gate, g, noise, train), 0.0)
        density = jnp.sum(jnp.where(mask, expected_gate(gate, g), 0.0), axis=(2, 3)) / jnp.sum(mask)

    out = jnp.einsum("bhts,bshd->bthd", p * a, vh)  # no renormalisation: closed gates drop their mass
    adjacency = (a > 0) if return_adjacency else None
    return out.astype(q.dtype), density, adjacency
