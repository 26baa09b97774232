"""GECO (multiplicative, the paper's lineage; Rezende & Viola 2018): ``C_t = alpha C_{t-1} + (1 - alpha) CE_t``
(``C_0 = CE_0``), ``beta <- clip(beta * exp(eta * (tau - C_t)), beta_min, beta_max)``; loss ``CE + beta * density``.
beta grows while the loss is under target and shrinks quickly when it goes over (``constraint.method=geco``)."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .common import DECAY, POSITIVE, POSITIVE_OR_NULL, check_beta_range, check_multiplier, check_positive, \
    target_schedule
from .registry import EMA, SENSES, TARGET, Controller, option, register


class GecoState(NamedTuple):
    beta: jax.Array       # weight of the density term
    ema: jax.Array        # EMA of the constraint (CE)
    tau: jax.Array        # target
    count: jax.Array      # updates so far


def geco(tau: float, *, beta_init: float = 1e-2, eta: float = 1.0, alpha: float = 0.99, beta_min: float = 1e-6,
         beta_max: float = 1e6, relative: bool = False, max_log_step: float | None = None,
         max_log_step_down: float | None = None, sense: str = "ce", target_start: float | None = None,
         anneal_steps: int = 0) -> optax.GradientTransformationExtraArgs:
    """GECO multiplier for the constraint ``CE <= tau`` (updates pass through unchanged).

    Options beyond the paper's form, for losses far from 1 nat: ``relative`` uses ``(tau - C_t) / tau`` in the
    exponent (scale-free), and ``max_log_step`` clips ``eta * (...)`` so that one bad step cannot collapse beta;
    ``max_log_step_down`` (default: ``max_log_step``) is the clip for decreasing steps, so that the multiplier
    can fall faster than it rises (asymmetric steps). ``sense="density"``: the constraint is ``density <= tau``
    and beta (the density weight) rises while the density is above ``tau``. ``target_start`` / ``anneal_steps``:
    an annealed target (:func:`~sparsejax.controllers.common.target_schedule`); ``state.tau`` is the current target.
    """
    check_positive(eta=eta)
    check_multiplier(alpha, beta_init, beta_min, beta_max, sense)
    target = target_schedule(tau, target_start, anneal_steps)
    down = max_log_step if max_log_step_down is None else max_log_step_down
    sign = 1.0 if sense == "ce" else -1.0

    def init(params=None):
        f = lambda x: jnp.asarray(x, jnp.float32)
        return GecoState(f(beta_init), f(0.0), target(0), jnp.zeros((), jnp.int32))

    def update(updates, state: GecoState, params=None, *, constraint, **extra):
        c = jnp.asarray(constraint, jnp.float32)
        ema = jnp.where(state.count == 0, c, alpha * state.ema + (1 - alpha) * c)
        tau_t = target(state.count)
        step = sign * eta * (tau_t - ema) / (tau_t if relative else 1.0)
        if max_log_step is not None or down is not None:
            step = jnp.clip(step, -down if down is not None else None, max_log_step)
        beta = jnp.clip(state.beta * jnp.exp(step), beta_min, beta_max)
        return updates, GecoState(beta, ema, tau_t, state.count + 1)

    return optax.GradientTransformationExtraArgs(init, update)


@dataclasses.dataclass
class GecoOptions:
    beta_init: float = option(1e-2, doc="the multiplier's start (a shared key)")
    beta_min: float = option(1e-6, POSITIVE, "floor of beta (keeps some sparsity pressure)")
    eta: float = option(1.0, POSITIVE, "the log-multiplier's gain")
    alpha: float = option(0.99, DECAY, "EMA decay of the constrained quantity")
    relative: bool = option(False, doc="exponent (tau - C) / tau instead of (tau - C)")
    max_log_step: float | None = option(None, POSITIVE_OR_NULL, "clip of eta * (tau - C) per step")
    max_log_step_down: float | None = option(None, POSITIVE_OR_NULL, "clip of decreasing steps (null: max_log_step)")


@register
class Geco(Controller):
    name = "geco"
    Options = GecoOptions
    State = GecoState
    multiplier = "beta"
    logged = ("beta", EMA, TARGET, "violation")
    senses = SENSES
    anneals = True

    def transform(self, o: GecoOptions, setup):
        return geco(setup.tau, beta_init=o.beta_init, eta=o.eta, alpha=o.alpha, beta_min=o.beta_min,
                    relative=o.relative, max_log_step=o.max_log_step, max_log_step_down=o.max_log_step_down,
                    sense=setup.sense, target_start=setup.target_start, anneal_steps=setup.anneal_steps)

    def metrics(self, state: GecoState) -> dict:
        return {"beta": state.beta, EMA: state.ema, TARGET: state.tau, "violation": state.ema - state.tau}

    def check(self, o: GecoOptions, section) -> list[str]:
        return check_beta_range(o)
