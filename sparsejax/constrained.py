"""The multiplier of "minimise density subject to CE <= tau" as optax-style transformations (docs/method.md §3).

Both transformations keep their multiplier in a pytree state, are jit-able and checkpointable, pass parameter
updates through unchanged (so they sit in an ``optax.chain`` beside any optimiser), and take the constraint value
(the step's cross-entropy) as the extra argument ``constraint=``. The loss to minimise at each step is
``ce_weight * CE + density_weight * density`` with the weights from :func:`loss_weights` of the current state.

* :func:`geco` (multiplicative, the paper's lineage; Rezende & Viola 2018): ``C_t = alpha C_{t-1} + (1 - alpha) CE_t``
  (``C_0 = CE_0``), ``beta <- clip(beta * exp(eta * (tau - C_t)), beta_min, beta_max)``; loss ``CE + beta * density``.
  beta grows while the loss is under target and shrinks quickly when it goes over.
* :func:`dual_ascent` (additive, projected, optional PI damping): for the Lagrangian ``density + lam (CE - tau)``,
  ``e_t = CE_t - tau``, ``lam <- max(0, lam + lr * e_t + kp * (e_t - e_{t-1}))``; loss ``lam * CE + density``.
* :func:`pi_control` (the default since issue H): a proportional-integral controller on ``log beta`` driven by the
  EMA'd, relative, clipped violation. The integral moves ``log beta`` by at most ``ki`` a step; the proportional
  term lowers beta *at once* when the loss goes over target (no windup to unwind), which is what stops the
  limit cycle of plain GECO (see docs/controllers.md).

Two constraint senses share this machinery (``sense=``): ``"ce"`` — minimise density subject to ``CE <= tau``
(the multiplier weights the density term and rises while the constraint holds); ``"density"`` — minimise CE
subject to ``density <= target`` (the multiplier weights the density term and rises while the density is above
its target). In both the loss is ``CE + beta * density``; ``constraint=`` is the CE or the density.

An annealed target (``target_start=``, ``anneal_steps=``; GECO and PI): the target moves geometrically from
``target_start`` to ``tau`` over the first ``anneal_steps`` updates, then stays at ``tau``
(:func:`target_schedule`). A guarded curriculum (PI, density sense, ``guard_tau=``): the annealed density target
takes its next step only while the EMA of a CE passed as ``guard=`` is at or under ``guard_tau`` and waits while
it is over, and the multiplier falls while the CE is over, so the density falls as fast as the model keeps its
loss and no faster. In density mode this is the difference between asking a model for 2% of its edges at
once — the multiplier winds up while the density is far above the target, overshoots, and the model loses what it
knew — and leading it there at a rate it can follow (docs/controllers.md).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class GecoState(NamedTuple):
    beta: jax.Array       # weight of the density term
    ema: jax.Array        # EMA of the constraint (CE)
    tau: jax.Array        # target
    count: jax.Array      # updates so far


class PIState(NamedTuple):
    beta: jax.Array       # weight of the density term, exp(integral + kp * error)
    integral: jax.Array   # integral part of log beta
    ema: jax.Array        # EMA of the constrained quantity
    tau: jax.Array        # target
    count: jax.Array
    progress: jax.Array   # steps of the annealed target's schedule taken (= count without a guard)
    guard_ema: jax.Array  # EMA of the guarded CE (a guarded curriculum; else 0)


class DualAscentState(NamedTuple):
    lam: jax.Array        # Lagrange multiplier of CE <= tau (>= 0)
    prev_error: jax.Array
    tau: jax.Array
    count: jax.Array


def _check_positive(**values):
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")


SENSES = ("ce", "density")


def target_schedule(tau: float, target_start: float | None = None, anneal_steps: int = 0):
    """``count -> target``: ``target_start * (tau / target_start) ** min(count / anneal_steps, 1)`` (geometric, so
    a density target falls by the same factor every step), or the constant ``tau`` without annealing."""
    if not anneal_steps:
        return lambda count: jnp.asarray(tau, jnp.float32)
    if anneal_steps < 0 or target_start is None:
        raise ValueError(f"an annealed target needs anneal_steps > 0 and target_start, got {anneal_steps}, "
                         f"{target_start}")
    _check_positive(tau=tau, target_start=target_start)
    log_start, log_ratio = float(np.log(target_start)), float(np.log(tau / target_start))

    def target(count):
        frac = jnp.minimum(jnp.asarray(count, jnp.float32) / anneal_steps, 1.0)
        return jnp.exp(log_start + frac * log_ratio)

    return target


def _check_multiplier(alpha, beta_init, beta_min, beta_max, sense):
    _check_positive(beta_init=beta_init, beta_min=beta_min)
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha (EMA decay) must be in [0, 1), got {alpha}")
    if not beta_min <= beta_init <= beta_max:
        raise ValueError(f"beta_init {beta_init} must lie in [beta_min, beta_max] = [{beta_min}, {beta_max}]")
    if sense not in SENSES:
        raise ValueError(f"sense must be one of {SENSES}, got {sense!r}")


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
    an annealed target (:func:`target_schedule`); ``state.tau`` is the current target.
    """
    _check_positive(eta=eta)
    _check_multiplier(alpha, beta_init, beta_min, beta_max, sense)
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


def pi_control(tau: float, *, beta_init: float = 1e-2, ki: float = 0.02, kp: float = 2.0, alpha: float = 0.9,
               beta_min: float = 1e-4, beta_max: float = 1e4, error_clip: float = 1.0, scale: float | None = None,
               sense: str = "ce", ki_down: float | None = None, target_start: float | None = None,
               anneal_steps: int = 0, ki_up_scale=None,
               guard_tau: float | None = None) -> optax.GradientTransformationExtraArgs:
    """PI controller on ``log beta`` for ``CE <= tau`` (or ``density <= tau`` with ``sense="density"``).

    With ``C_t`` the EMA (decay ``alpha``) of the constrained quantity and the scaled satisfaction
    ``e_t = clip(s (tau - C_t) / scale, -error_clip, error_clip)`` (``s = +1`` for CE, ``-1`` for density, so
    ``e_t > 0`` means "beta may grow"; ``scale`` defaults to ``tau``, i.e. the relative error; for a CE target
    ``tau = dense + slack`` the natural scale is the slack, the tolerance the run is allowed)::

        I_t = clip(I_{t-1} + ki * e_t, log beta_min, log beta_max)      # integral: at most ki per step
        beta_t = clip(exp(I_t + kp * e_t), beta_min, beta_max)         # proportional: immediate, no memory

    A loss spike above target drops beta by up to ``exp(kp * error_clip)`` in the same step and the integral
    starts falling; when the loss returns, the proportional part releases at once.

    ``ki_down`` (anti-windup; default ``ki``): the integral gain while ``e_t < 0`` (beta must fall: CE above its
    target, or density below its target). A larger value unwinds, in a few steps, the integral accumulated during a
    long approach to the target, so the multiplier does not carry the run far past it. It applies once the target
    has stopped moving: while an annealed target is still falling, being ahead of it is expected and the integral
    falls at ``ki`` (a brief dip below a moving target would otherwise drop beta to ``beta_min``, and the integral
    would then need hundreds of steps to climb back once the target passes below; docs/controllers.md).

    ``target_start`` / ``anneal_steps``: an annealed target (:func:`target_schedule`; ``tau`` in the formulas
    above is the target of the step, ``state.tau``).

    ``ki_up_scale`` (anti-windup at the end of a schedule): a function of the step giving a factor in [0, 1] for the
    integral gain while ``e_t > 0`` (beta growing), e.g. the learning rate over its peak. As the learning rate decays
    the model can no longer follow a growing multiplier; without it the integral keeps growing while the constrained
    quantity sits just inside its target, and the wound-up beta carries the last steps past the target
    (docs/controllers.md). Falling beta keeps its full rate.

    ``guard_tau`` (a guarded density curriculum; needs ``sense="density"`` and an annealed target): ``update``
    also takes ``guard=`` (a CE, e.g. the training batch's CE under the deterministic gates), EMA'd with ``alpha``
    as ``G_t``; the annealed target's schedule position ``p`` advances by one (up to ``anneal_steps``) while
    ``G_t <= guard_tau`` and stays while ``G_t > guard_tau``; the target is ``target_schedule(p)``, and the error
    the PI terms see is the more cautious of the density's and the guard's, ``min(e_t, clip((guard_tau - G_t) /
    guard_tau))``: beta grows only while the density is above its target *and* the CE is under ``guard_tau``, and
    falls as soon as either says so (a target that merely waited would leave the density's integral winding up
    while the CE is over). Without a guard ``p`` is the update count.
    """
    _check_positive(ki=ki, error_clip=error_clip, scale=tau if scale is None else scale)
    if ki_down is not None:
        _check_positive(ki_down=ki_down)
    if kp < 0:
        raise ValueError(f"kp must be >= 0, got {kp}")
    _check_multiplier(alpha, beta_init, beta_min, beta_max, sense)
    sign = 1.0 if sense == "ce" else -1.0
    lo, hi = float(np.log(beta_min)), float(np.log(beta_max))
    target = target_schedule(tau, target_start, anneal_steps)
    if guard_tau is not None and (sense != "density" or not anneal_steps):
        raise ValueError("a guarded curriculum (guard_tau) needs sense='density' and an annealed target "
                         f"(anneal_steps > 0), got sense={sense!r}, anneal_steps={anneal_steps}")

    def init(params=None):
        f = lambda x: jnp.asarray(x, jnp.float32)
        zero = lambda: jnp.zeros((), jnp.int32)
        return PIState(f(beta_init), f(np.log(beta_init)), f(0.0), target(0), zero(), zero(), f(0.0))

    def update(updates, state: PIState, params=None, *, constraint, guard=None, **extra):
        c = jnp.asarray(constraint, jnp.float32)
        ema = jnp.where(state.count == 0, c, alpha * state.ema + (1 - alpha) * c)
        if guard_tau is None:
            progress, guard_ema = state.count, state.guard_ema
        else:
            if guard is None:
                raise ValueError("this PI controller has a guard (guard_tau): pass update(..., guard=CE)")
            g = jnp.asarray(guard, jnp.float32)
            guard_ema = jnp.where(state.count == 0, g, alpha * state.guard_ema + (1 - alpha) * g)
            progress = jnp.where(guard_ema <= guard_tau, jnp.minimum(state.progress + 1, anneal_steps),
                                 state.progress)
            progress = jnp.where(state.count == 0, 0, progress)
        tau_t = target(progress)
        e = jnp.clip(sign * (tau_t - ema) / (tau_t if scale is None else scale), -error_clip, error_clip)
        if guard_tau is not None:  # the more cautious of the two errors: beta grows only while both allow it
            e = jnp.minimum(e, jnp.clip((guard_tau - guard_ema) / guard_tau, -error_clip, error_clip))
        settled = progress >= anneal_steps  # a fixed target (at once without annealing)
        rate = ki if ki_down is None else jnp.where((e < 0) & settled, ki_down, ki)
        if ki_up_scale is not None:
            rate = jnp.where(e > 0, rate * jnp.clip(ki_up_scale(state.count), 0.0, 1.0), rate)
        integral = jnp.clip(state.integral + rate * e, lo, hi)
        beta = jnp.exp(jnp.clip(integral + kp * e, lo, hi))
        return updates, PIState(beta, integral, ema, tau_t, state.count + 1, progress, guard_ema)

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
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, (GecoState, PIState, DualAscentState)))
             if isinstance(s, (GecoState, PIState, DualAscentState))]
    if len(found) != 1:
        raise ValueError(f"expected exactly one GECO/dual-ascent state in the optimiser state, found {len(found)}")
    return found[0]


def loss_weights(state) -> tuple[jax.Array, jax.Array]:
    """``(ce_weight, density_weight)`` for the current multiplier (no gradient flows into it)."""
    state = find_state(state)
    if isinstance(state, (GecoState, PIState)):
        return jnp.ones(()), jax.lax.stop_gradient(state.beta)
    return jax.lax.stop_gradient(state.lam), jnp.ones(())


def metrics(state) -> dict:
    """What to log every step: the multiplier, the constraint estimate, tau and the violation."""
    state = find_state(state)
    if isinstance(state, PIState):
        return {"beta": state.beta, "ce_ema": state.ema, "tau": state.tau, "violation": state.ema - state.tau,
                "guard_ema": state.guard_ema, "target_progress": state.progress}
    if isinstance(state, GecoState):
        return {"beta": state.beta, "ce_ema": state.ema, "tau": state.tau, "violation": state.ema - state.tau}
    return {"lambda": state.lam, "tau": state.tau, "violation": state.prev_error}
