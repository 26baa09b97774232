"""Gates: the :class:`Gate` pytree, the gate families (one file each, looked up by name) and counter-based noise
(docs/method.md §1, §2).

A gate turns the gate logit ``g_ij = s_ij + b`` of each causal pair (query i, key j) into a multiplier ``A_ij`` on
the attention weight ``P_ij``. The families (``Gate.kind``):

* ``"bernoulli"`` (:mod:`sparsejax.gates.bernoulli`, the paper's logit-tied Bernoulli gate, the default);
* ``"hard_concrete"`` (:mod:`sparsejax.gates.hard_concrete`, Louizos et al. 2018).

A new family is one file in this package: subclass :class:`~sparsejax.gates.registry.GateFamily` and decorate it
with ``@register`` (every module here is imported, which registers it); the functions here, every attention implementation, the config's value list and the PyTorch
export then know it. Noise: :mod:`sparsejax.gates.noise`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import importlib
import pkgutil

from .bernoulli import bernoulli_terms
from .noise import hash_uniform, key_uniform, layer_seed, logistic_noise, row_hash
from .registry import FAMILIES as _REGISTRY, GateFamily, family, register

for _module in pkgutil.iter_modules(__path__):  # every other module of this package is a family: import = register
    if _module.name not in ("noise", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")
FAMILIES = tuple(_REGISTRY)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Gate:
    """The gate pytree passed to attention and to the model blocks.

    ``bias`` is the array leaf that is learned: shape ``()`` or ``[heads]`` at the attention level, ``[layers]`` or
    ``[layers, heads]`` at the model level. ``noise`` is the scale of the training noise, a float32 scalar (traced:
    a schedule may move it every step without recompiling) or ``None``, the full noise of the method; at scale 0
    the sampled gates are the deterministic ones (docs/method.md §1, noise annealing). Eval mode ignores it. The
    rest is static configuration (the family and its parameters). Change a gate with ``dataclasses.replace``
    (never rebuild it field by field).
    """

    bias: Any
    kind: str = dataclasses.field(default="bernoulli", metadata=dict(static=True))  # the gate family
    temperature: float = dataclasses.field(default=2.0 / 3.0, metadata=dict(static=True))
    stretch: tuple[float, float] = dataclasses.field(default=(-0.1, 1.1), metadata=dict(static=True))
    noise: Any = None  # training-noise scale in [0, 1] (float32 scalar) or None = 1 exactly (the method's gates)
    # the density penalty's knee (ours, training only; None: the method's): above this gate logit the gradient of
    # the expected gate is its slope at the knee, not the sigmoid's vanishing one (its value is unchanged)
    penalty_knee: float | None = dataclasses.field(default=None, metadata=dict(static=True))
    # the density penalty's floor (ours, training only; None: the method's): below this gate logit the gradient of
    # the expected gate is 0 (its value is unchanged), so the penalty stops pushing an edge once it is well closed
    penalty_floor: float | None = dataclasses.field(default=None, metadata=dict(static=True))
    # one noise draw per (batch, query, key) for every head (ours, training only; False: the method's, a draw per
    # head): two heads that keep the same read are then sampled closed together, so a copy is no insurance
    shared_noise: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def __post_init__(self):
        family(self.kind).check(self)

    @property
    def family(self) -> GateFamily:
        return family(self.kind)


def make_gate(bias: Any = 3.0, kind: str = "bernoulli", *, shape: tuple[int, ...] = (),
              temperature: float = 2.0 / 3.0, stretch: tuple[float, float] = (-0.1, 1.1)) -> Gate:
    """A gate whose bias is ``bias`` broadcast to ``shape`` (``()``, ``(heads,)``, ``(layers,)``, ``(layers, heads)``)."""
    b = jnp.broadcast_to(jnp.asarray(bias, jnp.float32), shape)
    return Gate(b, kind, float(temperature), (float(stretch[0]), float(stretch[1])))


def gate_to_json(gate: Gate) -> dict:
    """The gate as the JSON object stored in a checkpoint's ``sparsejax_gate.json`` (the eval-mode gate: the
    training-noise scale is not part of it)."""
    return {"bias": np.asarray(gate.bias).tolist(), "kind": gate.kind, "temperature": gate.temperature,
            "stretch": list(gate.stretch)}


def gate_from_json(d: dict) -> Gate:
    """The inverse of :func:`gate_to_json` (files written before the field was named ``kind`` say ``family``)."""
    return Gate(jnp.asarray(d["bias"], jnp.float32), d.get("kind", d.get("family", "bernoulli")),
                float(d["temperature"]), tuple(d["stretch"]))


def noise_heads(gate: Gate, heads):
    """The head index the noise hash is given for query heads ``heads`` (an integer array): ``heads`` itself, or 0
    for every head with ``gate.shared_noise`` (one draw per batch row, query and key, shared by the heads)."""
    return heads * 0 if gate.shared_noise else heads


def as_gate(gate: Any) -> Gate | None:
    """Accept ``None`` (dense), a float/array bias (Bernoulli gate) or a :class:`Gate`."""
    if gate is None or isinstance(gate, Gate):
        return gate
    return Gate(jnp.asarray(gate, jnp.float32))


# The family's maps of the gate logit g (float32 arrays; noise is 0 in eval mode), as used by every attention
# implementation: see sparsejax.gates.registry for what each one states.
def gate_sample(gate: Gate, g, uniform, train: bool):
    """Gate value with the family's gradient attached, written for autodiff (the readable statement);
    ``uniform`` is the :func:`hash_uniform` pair (ignored in eval mode)."""
    return gate.family.sample(gate, g, uniform, train)


def gate_value_and_slope(gate: Gate, g, uniform, train: bool):
    """``(value, d value / d g)`` of :func:`gate_sample`, explicitly (for hand-written backward passes)."""
    return gate.family.value_and_slope(gate, g, uniform, train)


def is_edge(gate: Gate, g):
    """The deterministic (eval-mode) edge test on gate logits (Bernoulli: ``g > 0``)."""
    return gate.family.is_edge(gate, g)


def expected_gate(gate: Gate, g):
    """Probability that the pair is an edge (Bernoulli: ``sigmoid(g)``; hard-concrete: the expected L0).

    With ``gate.penalty_knee = k`` the value is the same and its gradient is that of the expected gate continued by
    its tangent above ``k``: ``expected_slope(min(g, k))``. An open edge the CE does not need then keeps a price
    however large its logit (the sigmoid's slope at a logit of 20 is 2e-9, and such an edge is never closed;
    docs/method.md §1, issue J nineteenth round in docs/controllers.md). With ``gate.penalty_floor = f`` the value is
    the same and its gradient is 0 at ``g <= f``: the penalty stops pushing a closed edge once its logit is at the
    floor (meant to leave it where the CE's straight-through gradient ``sigmoid'(g)`` could open it again; measured
    on the toy, the closed logits still sink, pulled by the bias, ``q`` and ``k`` they share with the edges above the
    floor: issue J, twenty-eighth round)."""
    e = gate.family.expected(gate, g)
    if gate.penalty_knee is None and gate.penalty_floor is None:
        return e
    tangent = e
    if gate.penalty_knee is not None:
        k = jnp.float32(gate.penalty_knee)
        tangent = gate.family.expected(gate, jnp.minimum(g, k)) + gate.family.expected_slope(gate, k) * jnp.maximum(
            g - k, 0.0)
    if gate.penalty_floor is not None:
        tangent = jnp.where(g > jnp.float32(gate.penalty_floor), tangent, jax.lax.stop_gradient(tangent))
    return jax.lax.stop_gradient(e) + (tangent - jax.lax.stop_gradient(tangent))


def expected_gate_slope(gate: Gate, g):
    """``d expected_gate / d g`` (with ``gate.penalty_knee = k``: the slope at ``min(g, k)``; with
    ``gate.penalty_floor = f``: 0 at ``g <= f``)."""
    slope = gate.family.expected_slope(gate, g if gate.penalty_knee is None else jnp.minimum(g, gate.penalty_knee))
    return slope if gate.penalty_floor is None else jnp.where(g > jnp.float32(gate.penalty_floor), slope, 0.0)


__all__ = ["FAMILIES", "Gate", "GateFamily", "as_gate", "bernoulli_terms", "expected_gate", "expected_gate_slope",
           "family", "gate_from_json", "gate_sample", "gate_to_json", "gate_value_and_slope", "hash_uniform",
           "is_edge", "key_uniform", "layer_seed", "logistic_noise", "make_gate", "noise_heads", "register", "row_hash"]
