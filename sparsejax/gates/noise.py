"""Counter-based gate noise: the uniform for (seed, batch, head, query, key) is a pure function of those five
integers (lowbias32, C. Wellons' 32-bit integer hash, chained over the coordinates), so every implementation draws
the same gates and a backward pass regenerates them instead of storing T x T tensors. The logistic noise is
``log u - log(1 - u)``."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_M1, _M2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)
_SALTS = tuple(np.uint32(c) for c in (0x9E3779B9, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1))


def _mix32(x):
    x = x ^ (x >> 16)
    x = x * _M1
    x = x ^ (x >> 15)
    x = x * _M2
    return x ^ (x >> 16)


def row_hash(seed, b, h, i):
    """The row part of the hash, ``x = mix(seed + s0); x = mix(x ^ (b + s1)); ...; mix(x ^ (i + s3))`` (uint32),
    shared by every key of query row ``i`` (kernels receive it precomputed, one word per row)."""
    u32 = lambda a: jnp.asarray(a).astype(jnp.uint32)
    x = _mix32(u32(seed) + _SALTS[0])
    for c, salt in zip((b, h, i), _SALTS[1:4]):
        x = _mix32(x ^ (u32(c) + salt))
    return x


def key_uniform(row, j):
    """``(u, 1 - u)`` for key ``j`` of a row whose :func:`row_hash` is ``row``: ``n`` = the top 23 bits of
    ``mix(row ^ (j + s4))``, ``u = (n + 0.5) / 2**23``, ``1 - u = (2**23 - 1 - n + 0.5) / 2**23`` (both exact).
    ``n < 2**23`` goes through int32 on its way to float32 (the same value; kernels lower signed conversions)."""
    n = _mix32(row ^ (jnp.asarray(j).astype(jnp.uint32) + _SALTS[4])) >> 9
    scale = np.float32(2.0 ** -23)
    to_f32 = lambda x: x.astype(jnp.int32).astype(jnp.float32)
    return (to_f32(n) + 0.5) * scale, (to_f32(np.uint32(2**23 - 1) - n) + 0.5) * scale


def hash_uniform(seed, b, h, i, j):
    """``(u, 1 - u)``, both exact float32, ``u`` uniform on (0, 1), for integer coordinates (all broadcast):
    ``key_uniform(row_hash(seed, b, h, i), j)``. The row part is computed once per row and broadcast over keys.
    """
    return key_uniform(row_hash(seed, b, h, i), j)


def layer_seed(seed, layer):
    """The seed of one layer's gates: ``mix(seed ^ (layer + s0))`` (uint32), so layers draw independent noise."""
    return _mix32(jnp.asarray(seed).astype(jnp.uint32) ^ (jnp.asarray(layer).astype(jnp.uint32) + _SALTS[0]))


def logistic_noise(uniform):
    """Logistic(0, 1) noise ``log u - log(1 - u)`` from a :func:`hash_uniform` pair."""
    u, one_minus_u = uniform
    return jnp.log(u) - jnp.log(one_minus_u)
