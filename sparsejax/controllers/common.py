"""What the controllers share: the annealed target (:func:`target_schedule`), argument checks, and the value rules
of their options (``option(default, POSITIVE)``)."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .registry import SENSES

# rules of option values: (valid?, what it must be)
POSITIVE = (lambda v: math.isfinite(v) and v > 0, "a number > 0")
NON_NEGATIVE = (lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
POSITIVE_OR_NULL = (lambda v: v is None or (math.isfinite(v) and v > 0), "a number > 0 or null")
DECAY = (lambda v: 0 <= v < 1, "in [0, 1)")
SHARE_OR_NULL = (lambda v: v is None or 0 <= v <= 1, "a share in [0, 1] or null")


def check_positive(**values):
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")


def check_multiplier(alpha, beta_init, beta_min, beta_max, sense):
    """The checks of an EMA'd, clipped multiplier beta (GECO, PI)."""
    check_positive(beta_init=beta_init, beta_min=beta_min)
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha (EMA decay) must be in [0, 1), got {alpha}")
    if not beta_min <= beta_init <= beta_max:
        raise ValueError(f"beta_init {beta_init} must lie in [beta_min, beta_max] = [{beta_min}, {beta_max}]")
    if sense not in SENSES:
        raise ValueError(f"sense must be one of {SENSES}, got {sense!r}")


def check_beta_range(options) -> list[str]:
    """The config problem of a multiplier that starts under its floor."""
    if options.beta_init < options.beta_min:
        return [f"constraint.beta_init={options.beta_init} must be >= constraint.beta_min={options.beta_min}"]
    return []


def target_schedule(tau: float, target_start: float | None = None, anneal_steps: int = 0):
    """``count -> target``: ``target_start * (tau / target_start) ** min(count / anneal_steps, 1)`` (geometric, so
    a density target falls by the same factor every step), or the constant ``tau`` without annealing."""
    if not anneal_steps:
        return lambda count: jnp.asarray(tau, jnp.float32)
    if anneal_steps < 0 or target_start is None:
        raise ValueError(f"an annealed target needs anneal_steps > 0 and target_start, got {anneal_steps}, "
                         f"{target_start}")
    check_positive(tau=tau, target_start=target_start)
    log_start, log_ratio = float(np.log(target_start)), float(np.log(tau / target_start))

    def target(count):
        frac = jnp.minimum(jnp.asarray(count, jnp.float32) / anneal_steps, 1.0)
        return jnp.exp(log_start + frac * log_ratio)

    return target
