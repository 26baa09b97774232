"""Sharding by logical axes: every parameter (and the batch) has logical axis names, one rule table maps them to
the mesh axes ``(data, fsdp, tensor)`` (as MaxText does). The parameters' axes are declared where they are created
(``sparsejax.models.decoder.PARAM_AXES``); this module holds the rules and the activations' axes.

Logical names: ``batch``, ``seq``, ``embed`` (d_model), ``heads`` / ``kv_heads`` (flattened ``heads x head_dim``
projection outputs), ``mlp`` (d_ff), ``vocab``, ``layers`` (the stacked-layer axis), ``position`` (learned
positions), ``norm`` / ``bias`` (small vectors, replicated by default). ``MeshSection.rules`` in the run config
overrides the table (``"embed=fsdp"``, ``"heads=tensor"``, ``"batch=data+fsdp"``, ``"mlp="`` for replicated).
An axis that does not divide its dimension is replicated instead.
"""
from __future__ import annotations

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes (a tuple: sharded over their product; () = replicated)
DEFAULT_RULES = (("batch", ("data", "fsdp")), ("embed", ("fsdp",)), ("heads", ("tensor",)), ("kv_heads", ("tensor",)),
                 ("mlp", ("tensor",)), ("vocab", ("tensor",)), ("layers", ()), ("seq", ()), ("position", ()),
                 ("norm", ()), ("bias", ()))

# keys under which a parameter tree sits inside a train state (the optimiser moments mirror them)
PARAM_ROOTS = ("params", "base", "teacher")


def parse_rules(items) -> tuple:
    """``["embed=fsdp", "batch=data+fsdp", "mlp="]`` -> the rule table, on top of :data:`DEFAULT_RULES`."""
    rules = dict(DEFAULT_RULES)
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"sharding rule {item!r} must look like logical=mesh_axis[+mesh_axis] (e.g. embed=fsdp)")
        name, axes = (s.strip() for s in item.split("=", 1))
        if name not in rules:
            raise ValueError(f"unknown logical axis {name!r} in rule {item!r}; logical axes: {', '.join(rules)}")
        mesh_axes = tuple(a for a in axes.split("+") if a)
        bad = [a for a in mesh_axes if a not in AXES]
        if bad:
            raise ValueError(f"unknown mesh axis {bad[0]!r} in rule {item!r}; mesh axes: {', '.join(AXES)}")
        rules[name] = mesh_axes
    return tuple(rules.items())


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices=None) -> jax.sharding.Mesh:
    devices = jax.devices() if devices is None else devices
    if data * fsdp * tensor != len(devices):
        raise ValueError(f"mesh data x fsdp x tensor = {data} x {fsdp} x {tensor} = {data * fsdp * tensor} does not "
                         f"match the {len(devices)} available devices; choose sizes whose product is {len(devices)}")
    return jax.make_mesh((data, fsdp, tensor), AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_spec(axes, shape, mesh, rules=DEFAULT_RULES) -> P:
    """PartitionSpec for an array with logical ``axes``; a mesh split that does not divide its dimension (or
    reuses a mesh axis) is dropped."""
    table = dict(rules)
    used, dims = set(), []
    for name, size in zip(axes, shape):
        mesh_axes = tuple(a for a in table.get(name, ()) if a not in used)
        n = 1
        for a in mesh_axes:
            n *= mesh.shape[a]
        if not mesh_axes or size % n:
            dims.append(None)
            continue
        used.update(mesh_axes)
        dims.append(mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
    return P(*dims)


# ----------------------------------------------------------------------------------------------- activations
# Logical axes of the activations the decoder constrains (one table, read by ``constrain``).
ACTIVATION_AXES = {
    "resid": ("batch", "seq", "embed"),          # the residual stream [B, T, d_model]
    "q": ("batch", "seq", "heads", None),        # [B, T, H, head_dim]
    "kv": ("batch", "seq", "kv_heads", None),    # [B, T, K, head_dim]
    "mlp": ("batch", "seq", "mlp"),              # MLP hidden [B, T, d_ff]
    "logits": ("batch", "seq", "vocab"),         # [B, T, vocab]
}
_ACTIVE_RULES: list = []


class use_rules:
    """Within this context (at trace time), :func:`constrain` places activations by ``rules`` on the current mesh
    (``jax.set_mesh``). The training and eval steps enter it; outside it the decoder adds no constraint."""

    def __init__(self, rules=DEFAULT_RULES):
        self.rules = tuple(rules)

    def __enter__(self):
        _ACTIVE_RULES.append(self.rules)
        return self

    def __exit__(self, *exc):
        _ACTIVE_RULES.pop()


def active_rules():
    """The rule table of the innermost :class:`use_rules` context, or None outside one."""
    return _ACTIVE_RULES[-1] if _ACTIVE_RULES else None


def constrain(x, kind: str):
    """``x`` with a sharding constraint from its logical axes (``ACTIVATION_AXES[kind]``) on the current mesh;
    unchanged when no rules are active or no mesh is set."""
    if not _ACTIVE_RULES:
        return x
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return x
    axes = ACTIVATION_AXES[kind]
    spec = logical_spec(tuple(a or "_none" for a in axes), x.shape, mesh, _ACTIVE_RULES[-1])
    return jax.lax.with_sharding_constraint(x, spec)


def replicate(x):
    """``x`` constrained to be whole on every device of the current mesh (a small result every process reads on the
    host, e.g. one value per row of a batch); unchanged when no mesh is set."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, P())


def param_axes(path: str) -> tuple | None:
    """Logical axes of a parameter given its path below the params root (None: not a model parameter); declared
    where the parameters are created, ``sparsejax.models.decoder.PARAM_AXES``."""
    from .models.decoder import PARAM_AXES  # (decoder imports this module for its activation constraints)

    return PARAM_AXES.get(path)


def sharding_for_path(path, leaf, mesh, rules=DEFAULT_RULES, *, bare: bool = False) -> NamedSharding:
    """The sharding of one leaf of a train state: a leaf below a ``params``/``base``/``teacher`` key (including
    optimiser moments, which mirror the parameters) by its logical axes; anything else (adapters, the gate, step
    counters) replicated. ``bare``: ``path`` is a parameter's own path (a parameter tree, no root key). A parameter
    without declared axes is an error."""
    from .models.decoder import param_path

    keys = param_path(path).split("/")
    roots = [i for i, k in enumerate(keys) if k in PARAM_ROOTS]
    if not roots and not bare:
        return NamedSharding(mesh, P())
    sub = "/".join(keys[roots[-1] + 1:]) if roots else "/".join(keys)
    axes = param_axes(sub)
    if axes is None or len(axes) != len(leaf.shape):
        raise ValueError(f"{'/'.join(keys)} (shape {tuple(leaf.shape)}) is a model parameter, but {sub!r} has no "
                         f"logical axes of its rank (got {axes}); declare them in "
                         "sparsejax/models/decoder.py PARAM_AXES")
    return NamedSharding(mesh, logical_spec(axes, leaf.shape, mesh, rules))


def param_shardings(params, mesh, rules=DEFAULT_RULES):
    """NamedShardings for a parameter pytree (its leaves are model parameters) from their logical axes."""
    return jax.tree_util.tree_map_with_path(lambda path, leaf: sharding_for_path(path, leaf, mesh, rules, bare=True),
                                            params)


def state_shardings(state, mesh, rules=DEFAULT_RULES):
    """NamedShardings for a train state: the parameters under ``params``/``base``/``teacher`` keys (and the
    optimiser moments mirroring them) by their logical axes, everything else replicated."""
    return jax.tree_util.tree_map_with_path(lambda path, leaf: sharding_for_path(path, leaf, mesh, rules), state)


def batch_sharding(mesh, rules=DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, P(dict(rules)["batch"] or None))


def local_rows(shard: NamedSharding, batch_size: int) -> slice:
    """The rows of a global batch held by this process's devices under ``shard`` (one contiguous range)."""
    starts, stops = [], []
    for index in shard.addressable_devices_indices_map((batch_size, 1)).values():
        rows = index[0]
        starts.append(rows.start or 0)
        stops.append(batch_size if rows.stop is None else rows.stop)
    lo, hi = min(starts), max(stops)
    covered = sorted(set(zip(starts, stops)))
    if sum(b - a for a, b in covered) != hi - lo:
        raise ValueError(f"this process's devices hold batch rows {covered}, not one contiguous range; order the "
                         f"mesh so each process's devices are adjacent on the batch axes")
    return slice(lo, hi)


def place_batch(read, batch_size: int, shard: NamedSharding):
    """A global batch on ``shard``. ``read(rows)`` returns the rows ``rows`` (a slice) of the batch as a dict of
    numpy arrays. One process reads the whole batch; with several, each reads only its own rows."""
    if jax.process_count() == 1:
        return jax.device_put(read(slice(None)), shard)
    local = read(local_rows(shard, batch_size))
    return {k: jax.make_array_from_process_local_data(shard, v, (batch_size, *v.shape[1:])) for k, v in local.items()}


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
