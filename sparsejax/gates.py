"""Gate families and counter-based gate noise (docs/method.md §1, §2).

A gate turns the gate logit ``g_ij = s_ij + b`` of each causal pair (query i, key j) into a multiplier
``A_ij`` on the attention weight ``P_ij``. Two families:

* ``"bernoulli"`` (the paper's logit-tied Bernoulli gate, the default): training draws logistic noise
  ``l`` and uses the hard sample ``1[g + l > 0]`` forward with the straight-through gradient of
  ``sigmoid(g + l)``; evaluation uses ``1[g > 0]`` (noise 0). Expected density ``sigmoid(g)``.
* ``"hard_concrete"`` (Louizos et al. 2018): ``clip(sigmoid((l + g) / beta) * (zeta - gamma) + gamma, 0, 1)``
  in training, ``clip(sigmoid(g) * (zeta - gamma) + gamma, 0, 1)`` in evaluation; expected L0
  ``sigmoid(g - beta * log(-gamma / zeta))``. A pair is an edge when its gate value is > 0.

Noise for (seed, batch, head, query, key) is a pure function of those five integers (a 32-bit hash giving a
uniform ``u``; the logistic noise is ``log u - log(1 - u)``), so every implementation draws the same gates and a backward pass regenerates them instead of storing T x T tensors.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FAMILIES = ("bernoulli", "hard_concrete")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Gate:
    """The gate pytree passed to attention and to the model blocks.

    ``bias`` is the only array leaf (differentiable, so it can be learned): shape ``()`` or ``[heads]`` at the
    attention level, ``[layers]`` or ``[layers, heads]`` at the model level. The rest is static configuration.
    """

    bias: Any
    kind: str = dataclasses.field(default="bernoulli", metadata=dict(static=True))  # the gate family
    temperature: float = dataclasses.field(default=2.0 / 3.0, metadata=dict(static=True))
    stretch: tuple[float, float] = dataclasses.field(default=(-0.1, 1.1), metadata=dict(static=True))

    def __post_init__(self):
        if self.kind not in FAMILIES:
            raise ValueError(f"unknown gate family {self.kind!r}: Gate.kind must be one of {FAMILIES}")
        gamma, zeta = self.stretch
        if not (gamma < 0.0 < 1.0 < zeta):
            raise ValueError(f"hard-concrete stretch must satisfy gamma < 0 < 1 < zeta, got {self.stretch}")
        if not self.temperature > 0:
            raise ValueError(f"gate temperature must be > 0, got {self.temperature}")


def make_gate(bias: Any = 3.0, kind: str = "bernoulli", *, shape: tuple[int, ...] = (),
              temperature: float = 2.0 / 3.0, stretch: tuple[float, float] = (-0.1, 1.1)) -> Gate:
    """A gate whose bias is ``bias`` broadcast to ``shape`` (``()``, ``(heads,)``, ``(layers,)``, ``(layers, heads)``)."""
    b = jnp.broadcast_to(jnp.asarray(bias, jnp.float32), shape)
    return Gate(b, kind, float(temperature), (float(stretch[0]), float(stretch[1])))


def gate_to_json(gate: Gate) -> dict:
    """The gate as the JSON object stored in a checkpoint's ``sparsejax_gate.json``."""
    return {"bias": np.asarray(gate.bias).tolist(), "kind": gate.kind, "temperature": gate.temperature,
            "stretch": list(gate.stretch)}


def gate_from_json(d: dict) -> Gate:
    """The inverse of :func:`gate_to_json` (files written before the field was named ``kind`` say ``family``)."""
    return Gate(jnp.asarray(d["bias"], jnp.float32), d.get("kind", d.get("family", "bernoulli")),
                float(d["temperature"]), tuple(d["stretch"]))


def as_gate(gate: Any) -> Gate | None:
    """Accept ``None`` (dense), a float/array bias (Bernoulli gate) or a :class:`Gate`."""
    if gate is None or isinstance(gate, Gate):
        return gate
    return Gate(jnp.asarray(gate, jnp.float32))


# ----------------------------------------------------------------------------------------------------------
# Counter-based noise. lowbias32 (C. Wellons' 32-bit integer hash) chained over the five coordinates.
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


# ----------------------------------------------------------------------------------------------------------
# Per-family elementwise maps of the gate logit g (float32 arrays; noise is 0 in eval mode).

def _hc_pre(gate: Gate, g, uniform, train: bool):
    gamma, zeta = gate.stretch
    t = (g + logistic_noise(uniform)) / gate.temperature if train else g
    dt_dg = 1.0 / gate.temperature if train else 1.0
    return jax.nn.sigmoid(t) * (zeta - gamma) + gamma, t, dt_dg


def bernoulli_terms(g, uniform, train: bool, recip=None, exp=jnp.exp):
    """``(hard, soft, e)`` = ``(1[z > 0], sigmoid(z), sigmoid(g))`` for ``z = g + log u - log(1 - u)`` (``z = g``
    and ``soft = e`` in eval).

    Written without logarithms: ``z > 0  <=>  1 - u < e`` with ``e = sigmoid(g)``, and ``sigmoid(z) = e u / (e u +
    (1 - e)(1 - u))``. ``recip=None``: true divisions (the statement autodiff differentiates). Kernels may pass a
    fast approximate ``recip`` and, for eval mode, ``exp``: only values, never the sample, depend on them (in
    training the sample needs the exact ``sigmoid(g)``; in eval it is ``g > 0``).
    """
    if not train:
        e = jax.nn.sigmoid(g) if recip is None else recip(1.0 + exp(-g))
        return (g > 0).astype(g.dtype), e, e
    u, one_minus_u = uniform
    e = jax.nn.sigmoid(g)
    eu = e * u
    den = eu + (1.0 - e) * one_minus_u
    return (one_minus_u < e).astype(g.dtype), eu / den if recip is None else eu * recip(den), e


def gate_sample(gate: Gate, g, uniform, train: bool):
    """Gate value with the family's gradient attached, written for autodiff (the readable statement).

    ``uniform`` is the :func:`hash_uniform` pair (ignored in eval mode). Bernoulli:
    ``A + (sigmoid(z) - stop_gradient(sigmoid(z)))`` with ``A = 1[z > 0]``; the bracket is exactly 0 in value,
    so the forward value is exactly the hard sample and the gradient is that of ``sigmoid(z)``.
    """
    if gate.kind == "bernoulli":
        hard, soft, _ = bernoulli_terms(g, uniform, train)
        return hard + (soft - jax.lax.stop_gradient(soft))
    pre, _, _ = _hc_pre(gate, g, uniform, train)
    return jnp.clip(pre, 0.0, 1.0)


def gate_value_and_slope(gate: Gate, g, uniform, train: bool):
    """``(value, d value / d g)`` of :func:`gate_sample`, explicitly (for hand-written backward passes)."""
    if gate.kind == "bernoulli":
        hard, soft, _ = bernoulli_terms(g, uniform, train)
        return hard, soft * (1.0 - soft)
    gamma, zeta = gate.stretch
    pre, t, dt_dg = _hc_pre(gate, g, uniform, train)
    sig = jax.nn.sigmoid(t)
    inside = (pre > 0.0) & (pre < 1.0)
    return jnp.clip(pre, 0.0, 1.0), jnp.where(inside, (zeta - gamma) * dt_dg * sig * (1.0 - sig), 0.0)


def _l0_shift(gate: Gate) -> float:
    gamma, zeta = gate.stretch
    return 0.0 if gate.kind == "bernoulli" else gate.temperature * float(np.log(-gamma / zeta))


def is_edge(gate: Gate, g):
    """The deterministic (eval-mode) edge test on gate logits: ``g > 0`` (Bernoulli) or a positive
    deterministic hard-concrete gate, ``sigmoid(g) (zeta - gamma) + gamma > 0``."""
    if gate.kind == "bernoulli":
        return g > 0
    gamma, zeta = gate.stretch
    return jax.nn.sigmoid(g) * (zeta - gamma) + gamma > 0


def expected_gate(gate: Gate, g):
    """Probability that the pair is an edge: ``sigmoid(g)`` (Bernoulli) or the expected L0 (hard-concrete)."""
    return jax.nn.sigmoid(g - _l0_shift(gate))


def expected_gate_slope(gate: Gate, g):
    """``d expected_gate / d g``."""
    e = expected_gate(gate, g)
    return e * (1.0 - e)
