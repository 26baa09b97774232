"""Hard-concrete gates (Louizos et al. 2018) on the same logits, ``log_alpha = g``: training samples
``clip(sigmoid((l + g) / beta) * (zeta - gamma) + gamma, 0, 1)``, evaluation uses the deterministic
``clip(sigmoid(g) * (zeta - gamma) + gamma, 0, 1)``; expected L0 ``sigmoid(g - beta * log(-gamma / zeta))``. A pair is
an edge when its gate value is > 0. Parameters: ``Gate.temperature`` (beta) and ``Gate.stretch`` (gamma, zeta). A
noise scale ``sigma`` (``Gate.noise``) multiplies the logistic noise ``l``."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .noise import logistic_noise
from .registry import GateFamily, register


def _pre(gate, g, uniform, train: bool):
    gamma, zeta = gate.stretch
    if train:
        noise = logistic_noise(uniform)
        t = (g + (noise if gate.noise is None else jnp.asarray(gate.noise, jnp.float32) * noise)) / gate.temperature
    else:
        t = g
    dt_dg = 1.0 / gate.temperature if train else 1.0
    return jax.nn.sigmoid(t) * (zeta - gamma) + gamma, t, dt_dg


@register
class HardConcrete(GateFamily):
    name = "hard_concrete"

    def check(self, gate):
        gamma, zeta = gate.stretch
        if not (gamma < 0.0 < 1.0 < zeta):
            raise ValueError(f"hard-concrete stretch must satisfy gamma < 0 < 1 < zeta, got {gate.stretch}")
        if not gate.temperature > 0:
            raise ValueError(f"gate temperature must be > 0, got {gate.temperature}")

    def sample(self, gate, g, uniform, train):
        return jnp.clip(_pre(gate, g, uniform, train)[0], 0.0, 1.0)

    def value_and_slope(self, gate, g, uniform, train):
        gamma, zeta = gate.stretch
        pre, t, dt_dg = _pre(gate, g, uniform, train)
        sig = jax.nn.sigmoid(t)
        inside = (pre > 0.0) & (pre < 1.0)
        return jnp.clip(pre, 0.0, 1.0), jnp.where(inside, (zeta - gamma) * dt_dg * sig * (1.0 - sig), 0.0)

    def _shift(self, gate) -> float:
        gamma, zeta = gate.stretch
        return gate.temperature * float(np.log(-gamma / zeta))

    def is_edge(self, gate, g):
        gamma, zeta = gate.stretch
        return jax.nn.sigmoid(g) * (zeta - gamma) + gamma > 0

    def expected(self, gate, g):
        return jax.nn.sigmoid(g - self._shift(gate))

    def torch_eval(self, torch, g, temperature, stretch):
        gamma, zeta = stretch
        return (torch.sigmoid(g) * (zeta - gamma) + gamma).clamp(0, 1)
