"""Dual ascent (additive, projected, optional PI damping): for the Lagrangian ``density + lam (CE - tau)``,
``e_t = CE_t - tau``, ``lam <- max(0, lam + lr * e_t + kp * (e_t - e_{t-1}))``; loss ``lam * CE + density``
(``constraint.method=dual_ascent``; CE targets only, no annealing)."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .common import NON_NEGATIVE, POSITIVE, check_positive
from .registry import TARGET, Controller, option, register


class DualAscentState(NamedTuple):
    lam: jax.Array        # Lagrange multiplier of CE <= tau (>= 0)
    prev_error: jax.Array
    tau: jax.Array
    count: jax.Array


def dual_ascent(tau: float, *, lr: float = 0.1, lam_init: float = 1.0, kp: float = 0.0,
                lam_max: float = 1e6) -> optax.GradientTransformationExtraArgs:
    """Projected (optionally PI-damped with ``kp``) dual ascent on the multiplier of ``CE <= tau``."""
    check_positive(lr=lr)
    if lam_init < 0 or kp < 0:
        raise ValueError(f"lam_init and kp must be >= 0, got {lam_init}, {kp}")

    def init(params=None):
        f = lambda x: jnp.asarray(x, jnp.float32)
        return DualAscentState(f(lam_init), f(0.0), f(tau), jnp.zeros((), jnp.int32))

    def update(updates, state: DualAscentState, params=None, *, constraint, **extra):
        error = jnp.asarray(constraint, jnp.float32) - state.tau
        damping = jnp.where(state.count == 0, 0.0, kp * (error - state.prev_error))
        lam = jnp.clip(state.lam + lr * error + damping, 0.0, lam_max)
        return updates, DualAscentState(lam, error, state.tau, state.count + 1)

    return optax.GradientTransformationExtraArgs(init, update)


@dataclasses.dataclass
class DualAscentOptions:
    lr: float = option(0.1, POSITIVE, "the multiplier's step size")
    kp: float = option(0.0, NON_NEGATIVE, "PI damping")


@register
class DualAscent(Controller):
    name = "dual_ascent"
    Options = DualAscentOptions
    State = DualAscentState
    multiplier = "lambda"
    logged = ("lambda", TARGET, "violation")

    def transform(self, o: DualAscentOptions, setup):
        return dual_ascent(setup.tau, lr=o.lr, kp=o.kp)

    def loss_weights(self, state: DualAscentState):
        return jax.lax.stop_gradient(state.lam), jnp.ones(())  # the multiplier weights the CE term

    def metrics(self, state: DualAscentState) -> dict:
        return {"lambda": state.lam, TARGET: state.tau, "violation": state.prev_error}
