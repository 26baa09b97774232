"""Mesh with named axes (data, fsdp, tensor), a logical rule table for parameters, and batch shardings."""
from __future__ import annotations

import re

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")

# (regex on the "/"-joined parameter path, spec). Stacked layer leaves have a leading layer axis (never sharded).
PARAM_RULES = (
    (r"embed/tokens", P("tensor", "fsdp")),
    (r"embed/positions", P(None, "fsdp")),
    (r"layers/attn/[qkv]/kernel", P(None, "fsdp", "tensor")),
    (r"layers/attn/[qkv]/bias", P(None, "tensor")),
    (r"layers/attn/o/kernel", P(None, "tensor", "fsdp")),
    (r"layers/mlp/(gate|up|fc)/kernel", P(None, "fsdp", "tensor")),
    (r"layers/mlp/(gate|up|fc)/bias", P(None, "tensor")),
    (r"layers/mlp/(down|proj)/kernel", P(None, "tensor", "fsdp")),
    (r"lm_head/kernel", P("fsdp", "tensor")),
)
BATCH_SPEC = P(("data", "fsdp"))


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices=None) -> jax.sharding.Mesh:
    devices = jax.devices() if devices is None else devices
    if data * fsdp * tensor != len(devices):
        raise ValueError(f"mesh data x fsdp x tensor = {data} x {fsdp} x {tensor} = {data * fsdp * tensor} does not "
                         f"match the {len(devices)} available devices; choose sizes whose product is {len(devices)}")
    return jax.make_mesh((data, fsdp, tensor), AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _spec_for(path: str, shape, mesh) -> P:
    for pattern, spec in PARAM_RULES:
        if re.fullmatch(pattern, path):
            dims = list(spec) + [None] * (len(shape) - len(spec))
            # an axis that does not divide its dimension is replicated instead
            dims = [d if d is None or shape[i] % mesh.shape[d] == 0 else None for i, d in enumerate(dims[:len(shape)])]
            return P(*dims)
    return P()


def param_shardings(params, mesh):
    """NamedShardings for a parameter pytree, from :data:`PARAM_RULES` (anything unmatched is replicated)."""
    def one(path, leaf):
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        return NamedSharding(mesh, _spec_for(name, leaf.shape, mesh))
    return jax.tree_util.tree_map_with_path(one, params)


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
