"""The paper's logit-tied Bernoulli gate (the default family, docs/method.md §1.1): training draws logistic noise
``l`` and uses the hard sample ``1[g + l > 0]`` forward with the straight-through gradient of ``sigmoid(g + l)``;
evaluation uses ``1[g > 0]`` (noise 0). Expected density ``sigmoid(g)``. No parameters of its own. With a noise
scale ``sigma`` (``Gate.noise``, noise annealing) training uses ``1[g + sigma l > 0]`` and the gradient of
``sigmoid(g + sigma l)``; ``sigma = 0`` is the evaluation gate."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .noise import logistic_noise
from .registry import GateFamily, register


def bernoulli_terms(g, uniform, train: bool, recip=None, exp=jnp.exp, scale=None):
    """``(hard, soft, e)`` = ``(1[z > 0], sigmoid(z), sigmoid(g))`` for ``z = g + log u - log(1 - u)`` (``z = g``
    and ``soft = e`` in eval).

    Written without logarithms: ``z > 0  <=>  1 - u < e`` with ``e = sigmoid(g)``, and ``sigmoid(z) = e u / (e u +
    (1 - e)(1 - u))``. ``recip=None``: true divisions (the statement autodiff differentiates). Kernels may pass a
    fast approximate ``recip`` and, for eval mode, ``exp``: only values, never the sample, depend on them (in
    training the sample needs the exact ``sigmoid(g)``; in eval it is ``g > 0``).

    ``scale``: the noise scale ``sigma`` (a float32 scalar; ``None`` = 1 exactly, the form above), ``z = g + sigma
    (log u - log(1 - u))``. Then ``z > 0  <=>  1 - u < sigmoid(g / sigma)`` (``g > 0`` at ``sigma = 0``; the same
    test as above at ``sigma = 1``) and ``soft = sigmoid(z)``.
    """
    if not train:
        e = jax.nn.sigmoid(g) if recip is None else recip(1.0 + exp(-g))
        return (g > 0).astype(g.dtype), e, e
    u, one_minus_u = uniform
    e = jax.nn.sigmoid(g)
    if scale is not None:
        scale = jnp.asarray(scale, jnp.float32)
        positive = scale > 0
        e_scaled = jnp.where(positive, jax.nn.sigmoid(g / jnp.where(positive, scale, 1.0)), (g > 0).astype(g.dtype))
        soft = jax.nn.sigmoid(g + scale * logistic_noise(uniform))
        return (one_minus_u < e_scaled).astype(g.dtype), soft, e
    eu = e * u
    den = eu + (1.0 - e) * one_minus_u
    return (one_minus_u < e).astype(g.dtype), eu / den if recip is None else eu * recip(den), e


@register
class Bernoulli(GateFamily):
    name = "bernoulli"

    def sample(self, gate, g, uniform, train):
        """``A + (sigmoid(z) - stop_gradient(sigmoid(z)))`` with ``A = 1[z > 0]``: the bracket is exactly 0 in value,
        so the forward value is exactly the hard sample and the gradient is that of ``sigmoid(z)``."""
        hard, soft, _ = bernoulli_terms(g, uniform, train, scale=gate.noise)
        return hard + (soft - jax.lax.stop_gradient(soft))

    def value_and_slope(self, gate, g, uniform, train):
        hard, soft, _ = bernoulli_terms(g, uniform, train, scale=gate.noise)
        return hard, soft * (1.0 - soft)

    def kernel_terms(self, gate, g, uniform, train, recip=None, exp=None):
        hard, soft, e = bernoulli_terms(g, uniform, train, recip, jnp.exp if exp is None else exp, gate.noise)
        return hard, soft * (1.0 - soft), e

    def is_edge(self, gate, g):
        return g > 0

    def expected(self, gate, g):
        return jax.nn.sigmoid(g)

    def torch_eval(self, torch, g, temperature, stretch):
        return (g > 0).float()
