"""Flax modules for composing the sparse attention into your own models (NNX and linen).

``SparseSelfAttention`` (q/k/v/o projections + optional RoPE + :func:`sparsejax.sparse_attention`) and
``DecoderBlock`` (pre-norm RMSNorm, attention, SwiGLU MLP: the Llama block). Calls return ``(y, stats)`` with
``stats.expected_density`` ``[batch, heads]`` for the sparsity regulariser. The gate bias is a learnable
``nnx.Param`` when ``learnable_bias=True`` and a fixed ``nnx.Variable`` otherwise. ``window=W`` makes the attention
a sliding window over the last W keys (Gemma 3's local layers; densities over the visible pairs).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from .attention import AttentionStats, sparse_attention
from .gates import Gate
from .models.decoder import apply_rope, rope_tables


def _attend(q, k, v, bias, *, kind, dense, mode, seed, rope_theta, implementation, window=None):
    if rope_theta is not None:
        cos, sin = rope_tables(q.shape[1], q.shape[-1], rope_theta, dtype=q.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    gate = None if dense else Gate(bias, kind)
    return sparse_attention(q, k, v, gate, mode=mode, seed=seed if gate is not None else None,
                            implementation=implementation, window=window)


class SparseSelfAttention(nnx.Module):
    """Causal multi-head (or grouped-query) self-attention with sparse gates, as an NNX module."""

    def __init__(self, d_model: int, num_heads: int, *, num_kv_heads: int | None = None,
                 head_dim: int | None = None, gate_bias: float = 3.0, gate_kind: str = "bernoulli",
                 per_head_bias: bool = True, learnable_bias: bool = False, use_bias: bool = False,
                 rope_theta: float | None = 10000.0, implementation: str = "auto", window: int | None = None,
                 rngs: nnx.Rngs):
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads or num_heads
        self.head_dim = head_dim or d_model // num_heads
        self.gate_kind, self.rope_theta, self.implementation = gate_kind, rope_theta, implementation
        self.window = window
        init = nnx.initializers.normal(0.02)
        lin = lambda n_in, n_out: nnx.Linear(n_in, n_out, use_bias=use_bias, kernel_init=init, rngs=rngs)
        self.q = lin(d_model, num_heads * self.head_dim)
        self.k = lin(d_model, self.num_kv_heads * self.head_dim)
        self.v = lin(d_model, self.num_kv_heads * self.head_dim)
        self.o = lin(num_heads * self.head_dim, d_model)
        bias = jnp.full((num_heads,) if per_head_bias else (), gate_bias, jnp.float32)
        self.gate_bias = nnx.Param(bias) if learnable_bias else nnx.Variable(bias)

    def __call__(self, x, *, mode: str = "eval", seed=None, dense: bool = False) -> tuple[jax.Array, AttentionStats]:
        b, t, _ = x.shape
        q = self.q(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        z, stats = _attend(q, k, v, self.gate_bias[...], kind=self.gate_kind, dense=dense, mode=mode, seed=seed,
                           rope_theta=self.rope_theta, implementation=self.implementation, window=self.window)
        return self.o(z.reshape(b, t, -1)), stats


class DecoderBlock(nnx.Module):
    """Pre-norm Llama-style block: ``x + attn(norm(x))``, then ``x + swiglu(norm(x))``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, rngs: nnx.Rngs, norm_eps: float = 1e-6,
                 **attention_kwargs):
        self.attn_norm = nnx.RMSNorm(d_model, epsilon=norm_eps, rngs=rngs)
        self.attn = SparseSelfAttention(d_model, num_heads, rngs=rngs, **attention_kwargs)
        self.mlp_norm = nnx.RMSNorm(d_model, epsilon=norm_eps, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        self.gate = nnx.Linear(d_model, d_ff, use_bias=False, kernel_init=init, rngs=rngs)
        self.up = nnx.Linear(d_model, d_ff, use_bias=False, kernel_init=init, rngs=rngs)
        self.down = nnx.Linear(d_ff, d_model, use_bias=False, kernel_init=init, rngs=rngs)

    def __call__(self, x, *, mode: str = "eval", seed=None, dense: bool = False):
        a, stats = self.attn(self.attn_norm(x), mode=mode, seed=seed, dense=dense)
        x = x + a
        h = self.mlp_norm(x)
        return x + self.down(jax.nn.silu(self.gate(h)) * self.up(h)), stats


class SparseSelfAttentionLinen(nn.Module):
    """The same attention as a linen module (``gate_bias`` is a param when ``learnable_bias``)."""

    d_model: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    gate_bias: float = 3.0
    gate_kind: str = "bernoulli"
    per_head_bias: bool = True
    learnable_bias: bool = False
    use_bias: bool = False
    rope_theta: float | None = 10000.0
    implementation: str = "auto"
    window: int | None = None

    @nn.compact
    def __call__(self, x, *, mode: str = "eval", seed=None, dense: bool = False):
        b, t, _ = x.shape
        kvh, hd = self.num_kv_heads or self.num_heads, self.head_dim or self.d_model // self.num_heads
        dense_layer = lambda n, name: nn.Dense(n, use_bias=self.use_bias, kernel_init=nn.initializers.normal(0.02),
                                               name=name)
        q = dense_layer(self.num_heads * hd, "q")(x).reshape(b, t, self.num_heads, hd)
        k = dense_layer(kvh * hd, "k")(x).reshape(b, t, kvh, hd)
        v = dense_layer(kvh * hd, "v")(x).reshape(b, t, kvh, hd)
        shape = (self.num_heads,) if self.per_head_bias else ()
        bias = jnp.full(shape, self.gate_bias, jnp.float32)
        if self.learnable_bias:
            bias = self.param("gate_bias", lambda _: bias)
        z, stats = _attend(q, k, v, bias, kind=self.gate_kind, dense=dense, mode=mode, seed=seed,
                           rope_theta=self.rope_theta, implementation=self.implementation, window=self.window)
        return dense_layer(self.d_model, "o")(z.reshape(b, t, -1)), stats
