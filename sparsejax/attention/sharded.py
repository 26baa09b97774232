"""A per-shard attention kernel under ``jax.shard_map`` on a training mesh, with the mesh and the logical-axis
rules passed in by the caller (the dispatch in ``attention/__init__.py`` reads the trainer's active rules once).

A Pallas call is opaque to XLA's sharding propagation: under a multi-device mesh it would be replicated (every
device computing the whole batch and every head). :func:`shard_map_heads` splits batch and heads by the rules
(sequence and head_dim stay whole: the kernel needs every key of its rows) and gives each shard the global index
of its first batch row and first head, so a kernel whose gate noise is a function of global indices draws on
each shard exactly the gates of the unsharded call.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from .. import sharding


def _axes(a) -> tuple:
    return () if a is None else (tuple(a) if isinstance(a, (tuple, list)) else (a,))


def shard_map_heads(kernel: Callable, q, k, v, bias, seed, *, mesh, rules):
    """``kernel(q, k, v, bias, seed, offsets) -> (out [B, T, H, D], density [B, H], edge_density [B, H])`` run
    under ``jax.shard_map`` on ``mesh``: q ``[B, T, H, D]``, k/v ``[B, S, K, D]`` and the per-head ``bias [H]`` split
    along batch (logical axis ``"batch"``) and heads (``"heads"`` / ``"kv_heads"``) by ``rules``; ``seed`` whole;
    ``offsets`` int32 ``[2]`` = the global index of the shard's first batch row and first head. Heads stay whole
    when query and key/value heads cannot split alike (grouped-query groups must not straddle shards)."""
    qspec = sharding.logical_spec(("batch", "_", "heads", "_"), q.shape, mesh, rules)
    kspec = sharding.logical_spec(("batch", "_", "kv_heads", "_"), k.shape, mesh, rules)
    if qspec[2] != kspec[2]:
        qspec, kspec = P(qspec[0], None, None, None), P(kspec[0], None, None, None)
    batch_axes, head_axes = qspec[0], qspec[2]

    def index(axes):
        axes = _axes(axes)
        return jax.lax.axis_index(axes) if axes else jnp.zeros((), jnp.int32)

    def body(q, k, v, bias, seed):
        offsets = jnp.stack([index(batch_axes) * q.shape[0], index(head_axes) * q.shape[2]]).astype(jnp.int32)
        return kernel(q, k, v, bias, seed, offsets)

    stats = P(batch_axes, head_axes)
    return jax.shard_map(body, mesh=mesh, in_specs=(qspec, kspec, kspec, P(head_axes), P()),
                         out_specs=(qspec, stats, stats), check_vma=False)(q, k, v, bias, seed)


def unsharded(kernel: Callable, q, k, v, bias, seed):
    """The same contract on one device (offsets 0)."""
    return kernel(q, k, v, bias, seed, jnp.zeros((2,), jnp.int32))


def partition_for(mesh, rules):
    """The partition function for a call site: :func:`shard_map_heads` on a multi-device ``mesh`` with ``rules``,
    else :func:`unsharded`."""
    if rules is None or mesh is None or mesh.empty or mesh.size == 1:
        return unsharded
    return lambda kernel, *args: shard_map_heads(kernel, *args, mesh=mesh, rules=rules)
