"""The multiplier of "minimise density subject to CE <= tau" as optax-style transformations (DESIGN.md §1.3).

Both transformations keep their multiplier in a pytree state, are jit-able and checkpointable, pass parameter
updates through unchanged (so they sit in an ``optax.chain`` beside any optimiser), and take the constraint value
(the step's cross-entropy) as the extra argument ``constraint=``. The loss to minimise at each step is
``ce_weight * CE + density_weight * density`` with the weights from :func:`loss_weights` of the current state.

* :func:`geco` (multiplicative, the paper's lineage; Rezende & Viola 2018): ``C_t = alpha C_{t-1} + (1 - alpha) CE_t``
  (``C_0 = CE_0``), ``beta <- clip(beta * exp(eta * (tau - C_t)), beta_min, beta_max)``; loss ``CE + beta * density``.
  beta grows while the loss is under target and shrinks quickly when it goes over.
* :func:`dual_ascent` (additive, projected, optional PI damping): for the Lagrangian ``density + lam (CE - tau)``,
  ``e_t = CE_t - tau``, ``lam <- max(0, lam + lr * e_t + kp * (e_t - e_{t-1}))``; loss ``lam * CE + density``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class GecoState(NamedTuple):
    beta: jax.Array       # weight of the density term
    ema: jax.Array        # EMA of the constraint (CE)
    tau: jax.Array        # target
    count: jax.Array      # updates so far


class DualAscentState(NamedTuple):
    lam: jax.Array        # Lagrange multiplier of CE <= tau (>= 0)
    prev_error: jax.Array
    tau: jax.Array
    count: jax.Array


def _check_positive(**values):
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")


def geco(tau: float, *, beta_init: float = 1e-2, eta: float = 1.0, alpha: float = 0.99, beta_min: float = 1e-6,
         beta_max: float = 1e6, relative: bool = False,
         max_log_step: float | None = None) -> optax.GradientTransformationExtraArgs:
    """GECO multiplier for the constraint ``CE <= tau`` (updates pass through unchanged).

    Options beyond the paper's form, for losses far from 1 nat: ``relative`` uses ``(tau - C_t) / tau`` in the
    exponent (scale-free), and ``max_log_step`` clips ``eta * (...)`` so that one bad step cannot collapse beta.
    """
    _check_positive(beta_init=beta_init, eta=eta, beta_min=beta_min)
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha (EMA decay) must be in [0, 1), got {alpha}")
    if not beta_min <= beta_init <= beta_max:
        raise ValueError(f"beta_init {beta_init} must lie in [beta_min, beta_max] = [{beta_min}, {beta_max}]")

    def init(params=None):
        f = lambda x: jnp.asarray(x, jnp.float32)
        return GecoState(f(beta_init), f(0.0), f(tau), jnp.zeros((), jnp.int32))

    def update(updates, state: GecoState, params=None, *, constraint, **extra):
        c = jnp.asarray(constraint, jnp.float32)
        ema = jnp.where(state.count == 0, c, alpha * state.ema + (1 - alpha) * c)
        step = eta * (state.tau - ema) / (state.tau if relative else 1.0)
        if max_log_step is not None:
            step = jnp.clip(step, -max_log_step, max_log_step)
        beta = jnp.clip(state.beta * jnp.exp(step), beta_min, beta_max)
        return updates, GecoState(beta, ema, state.tau, state.count + 1)

    return optax.GradientTransformationExtraArgs(init, update)


def dual_ascent(tau: float, *, lr: float = 0.1, lam_init: float = 1.0, kp: float = 0.0,
                lam_max: float = 1e6) -> optax.GradientTransformationExtraArgs:
    """Projected (optionally PI-damped with ``kp``) dual ascent on the multiplier of ``CE <= tau``."""
    _check_positive(lr=lr)
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


def find_state(opt_state):
    """The GECO or dual-ascent state inside an optimiser state (e.g. an ``optax.chain``'s tuple)."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, (GecoState, DualAscentState)))
             if isinstance(s, (GecoState, DualAscentState))]
    if len(found) != 1:
        raise ValueError(f"expected exactly one GECO/dual-ascent state in the optimiser state, found {len(found)}")
    return found[0]


def loss_weights(state) -> tuple[jax.Array, jax.Array]:
    """``(ce_weight, density_weight)`` for the current multiplier (no gradient flows into it)."""
    state = find_state(state)
    if isinstance(state, GecoState):
        return jnp.ones(()), jax.lax.stop_gradient(state.beta)
    return jax.lax.stop_gradient(state.lam), jnp.ones(())


def metrics(state) -> dict:
    """What to log every step: the multiplier, the constraint estimate, tau and the violation."""
    state = find_state(state)
    if isinstance(state, GecoState):
        return {"beta": state.beta, "ce_ema": state.ema, "tau": state.tau, "violation": state.ema - state.tau}
    return {"lambda": state.lam, "tau": state.tau, "violation": state.prev_error}
