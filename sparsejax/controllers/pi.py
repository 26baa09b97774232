"""PI control (the default since issue H; ``constraint.method=pi``): a proportional-integral controller on
``log beta`` driven by the EMA'd, relative, clipped violation. The integral moves ``log beta`` by at most ``ki`` a
step; the proportional term lowers beta *at once* when the loss goes over target (no windup to unwind), which is
what stops the limit cycle of plain GECO (see docs/controllers.md). It handles both senses, an annealed target and
the guarded density curriculum."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .common import DECAY, NON_NEGATIVE, POSITIVE, POSITIVE_OR_NULL, SHARE_OR_NULL, check_beta_range, \
    check_multiplier, check_positive, target_schedule
from .registry import EMA, SENSES, TARGET, Controller, option, register


class PIState(NamedTuple):
    beta: jax.Array       # weight of the density term, exp(integral + kp * error)
    integral: jax.Array   # integral part of log beta
    ema: jax.Array        # EMA of the constrained quantity
    tau: jax.Array        # target
    count: jax.Array
    progress: jax.Array   # steps of the annealed target's schedule taken (= count without a guard)
    guard_ema: jax.Array  # EMA of the guarded CE (a guarded curriculum; else 0)
    peak: jax.Array       # the highest integral reached so far (what `regain` lets the integral climb back to)


def pi_control(tau: float, *, beta_init: float = 1e-2, ki: float = 0.02, kp: float = 2.0, alpha: float = 0.9,
               beta_min: float = 1e-4, beta_max: float = 1e4, error_clip: float = 1.0, scale: float | None = None,
               sense: str = "ce", ki_down: float | None = None, target_start: float | None = None,
               anneal_steps: int = 0, ki_up_scale=None, ki_down_scale=None, guard_tau: float | None = None,
               hold_from: int | None = None, regain: bool = False,
               clip_first: bool = False) -> optax.GradientTransformationExtraArgs:
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

    ``target_start`` / ``anneal_steps``: an annealed target (:func:`~sparsejax.controllers.common.target_schedule`;
    ``tau`` in the formulas above is the target of the step, ``state.tau``).

    ``ki_up_scale`` (anti-windup at the end of a schedule): a function of the step giving a factor in [0, 1] for the
    integral gain while ``e_t > 0`` (beta growing), e.g. the learning rate over its peak. As the learning rate decays
    the model can no longer follow a growing multiplier; without it the integral keeps growing while the constrained
    quantity sits just inside its target, and the wound-up beta carries the last steps past the target
    (docs/controllers.md). Falling beta keeps its full rate unless ``ki_down_scale`` is given.

    ``ki_down_scale`` (the same for falling beta, e.g. the same lr ratio): the integral gain while ``e_t < 0`` is
    scaled by it. Late in a schedule a brief excursion over the target (one hard batch) would otherwise drop beta
    by orders of magnitude at the full rate while the scaled growth needs many times as long to bring it back, so the
    last steps run at the floor and stop sparsifying (docs/controllers.md, twenty-fourth round).

    ``guard_tau`` (a guarded density curriculum; needs ``sense="density"`` and an annealed target): ``update``
    also takes ``guard=`` (a CE, e.g. the training batch's CE under the deterministic gates), EMA'd with ``alpha``
    as ``G_t``; the annealed target's schedule position ``p`` advances by one (up to ``anneal_steps``) while
    ``G_t <= guard_tau`` and stays while ``G_t > guard_tau``; the target is ``target_schedule(p)``, and the error
    the PI terms see is the more cautious of the density's and the guard's, ``min(e_t, clip((guard_tau - G_t) /
    guard_tau))``: beta grows only while the density is above its target *and* the CE is under ``guard_tau``, and
    falls as soon as either says so (a target that merely waited would leave the density's integral winding up
    while the CE is over). Without a guard ``p`` is the update count.

    ``hold_from`` (a multiplier that stops rising at the end of a schedule): from this update count on, neither the
    integral nor beta may exceed their values of the previous update (``I_t <= I_{t-1}``, ``beta_t <= beta_{t-1}``):
    beta still falls at once when the constrained quantity goes over its target, but never grows again, so nothing
    pushes more edges over the threshold while the learning rate decays (docs/controllers.md, fourteenth round).

    ``regain`` (with ``ki_up_scale``: anti-windup for new ground only): while the integral is below the highest value
    it has reached (``P_{t-1}``, ``state.peak``) and beta may grow, it climbs back at the full ``ki``, never past
    ``P_{t-1}`` in that step; ``ki_up_scale`` applies above it. A late excursion over the target (a needed edge
    closed, healed by the CE's own gradient within a few hundred steps) drops beta at the full rate; without it
    the climb back follows the decayed lr and the last part of the run stays at the floor, its CE far under the
    target (docs/controllers.md, twenty-fifth round). ``P_t = max(P_{t-1}, I_t)``.

    ``clip_first`` (a robust input): each update's value is clipped to ``tau +- error_clip * scale`` *before* the
    EMA, so ``e_t`` is the EMA of the clipped per-update errors instead of the clip of the EMA'd error. One batch
    far over the target (the toy's deterministic-gate CE is heavy-tailed: a batch that loses a problem reads
    10-100x tau) then moves the error by ``(1 - alpha) * error_clip`` instead of holding it at ``-error_clip`` for
    the tens of steps the EMA takes to forget it; a sustained excursion still drives it to ``-error_clip``.
    """
    check_positive(ki=ki, error_clip=error_clip, scale=tau if scale is None else scale)
    if ki_down is not None:
        check_positive(ki_down=ki_down)
    if kp < 0:
        raise ValueError(f"kp must be >= 0, got {kp}")
    check_multiplier(alpha, beta_init, beta_min, beta_max, sense)
    sign = 1.0 if sense == "ce" else -1.0
    lo, hi = float(np.log(beta_min)), float(np.log(beta_max))
    target = target_schedule(tau, target_start, anneal_steps)
    if hold_from is not None and hold_from < 0:
        raise ValueError(f"hold_from must be an update count >= 0, got {hold_from}")
    if guard_tau is not None and (sense != "density" or not anneal_steps):
        raise ValueError("a guarded curriculum (guard_tau) needs sense='density' and an annealed target "
                         f"(anneal_steps > 0), got sense={sense!r}, anneal_steps={anneal_steps}")

    def init(params=None):
        f = lambda x: jnp.asarray(x, jnp.float32)
        zero = lambda: jnp.zeros((), jnp.int32)
        return PIState(f(beta_init), f(np.log(beta_init)), f(0.0), target(0), zero(), zero(), f(0.0),
                       f(np.log(beta_init)))

    def update(updates, state: PIState, params=None, *, constraint, guard=None, **extra):
        c = jnp.asarray(constraint, jnp.float32)
        if clip_first:  # around the last update's target (they differ only while an annealed target moves)
            t_last = target(state.progress)
            width = error_clip * (t_last if scale is None else scale)
            c = jnp.clip(c, t_last - width, t_last + width)
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
        if ki_down_scale is not None:
            rate = jnp.where(e < 0, rate * jnp.clip(ki_down_scale(state.count), 0.0, 1.0), rate)
        integral = jnp.clip(state.integral + rate * e, lo, hi)
        if regain:  # back up to the highest level reached at the full gain (not past it in this step)
            back = (e > 0) & (state.integral < state.peak)
            integral = jnp.where(back, jnp.minimum(state.integral + ki * e, state.peak), integral)  # within [lo, hi]
        beta = jnp.exp(jnp.clip(integral + kp * e, lo, hi))
        if hold_from is not None:  # only down from here: neither part of log beta rises above its last value
            held = (state.count >= hold_from) & (state.count > 0)
            integral = jnp.where(held, jnp.minimum(integral, state.integral), integral)
            beta = jnp.where(held, jnp.minimum(beta, state.beta), beta)
        return updates, PIState(beta, integral, ema, tau_t, state.count + 1, progress, guard_ema,
                                jnp.maximum(state.peak, integral))

    return optax.GradientTransformationExtraArgs(init, update)


ERROR_SCALES = ("tau", "slack")


@dataclasses.dataclass
class PIOptions:
    beta_init: float = option(1e-2, doc="the multiplier's start (a shared key)")
    beta_min: float = option(1e-6, POSITIVE, "floor of beta (keeps some sparsity pressure)")
    alpha: float = option(0.99, DECAY, "EMA decay of the constrained quantity")
    pi_ki: float = option(0.02, POSITIVE, "integral gain (max change of log beta per step)")
    pi_kp: float = option(2.0, NON_NEGATIVE, "proportional gain on the clipped relative error")
    pi_ki_down: float | None = option(None, POSITIVE_OR_NULL, "integral gain while beta falls (anti-windup; "
                                      "null: pi_ki)")
    pi_ki_follow_lr: bool = option(False, doc="scale the integral gain while beta grows by lr / peak lr "
                                   "(anti-windup as the lr decays; docs/controllers.md)", exclusive=True)
    pi_ki_down_follow_lr: bool = option(False, doc="scale the integral gain while beta falls by lr / peak lr too (a "
                                        "late excursion over the target does not drop beta for the rest of the "
                                        "run; docs/controllers.md)", exclusive=True)
    pi_regain: bool = option(False, doc="with pi_ki_follow_lr: the integral climbs back to the highest level it has "
                             "reached at the full gain; only new ground follows the lr (docs/controllers.md)",
                             exclusive=True)
    pi_clip_first: bool = option(False, doc="clip each update's value to tau +- error_clip * scale before the EMA "
                                 "(one batch far over the target moves the error by (1 - alpha) * error_clip; "
                                 "docs/controllers.md)", exclusive=True)
    pi_hold_from: float | None = option(None, SHARE_OR_NULL, "share of train.steps after which beta only falls "
                                        "(never rises again; null: never held)", exclusive=True)
    error_clip: float = option(1.0, POSITIVE, "clip of the scaled error")
    error_scale: str = option("tau", (lambda v: v in ERROR_SCALES, " or ".join(ERROR_SCALES)),
                              "the error's unit: tau (relative error) or slack (units of the slack)")


@register
class PI(Controller):
    name = "pi"
    Options = PIOptions
    State = PIState
    multiplier = "beta"
    logged = ("beta", EMA, TARGET, "violation")
    logged_with_guard = ("guard_ema", "target_progress")  # the guard's CE EMA, where the annealed target stands
    senses = SENSES
    anneals = True
    guards = True

    def transform(self, o: PIOptions, setup):
        scale = setup.slack if o.error_scale == "slack" and setup.sense == "ce" else None
        return pi_control(setup.tau, beta_init=o.beta_init, ki=o.pi_ki, kp=o.pi_kp, alpha=o.alpha,
                          beta_min=o.beta_min, error_clip=o.error_clip, scale=scale, sense=setup.sense,
                          ki_down=o.pi_ki_down, target_start=setup.target_start, anneal_steps=setup.anneal_steps,
                          ki_up_scale=setup.lr_over_peak if o.pi_ki_follow_lr else None,
                          ki_down_scale=setup.lr_over_peak if o.pi_ki_down_follow_lr else None,
                          guard_tau=setup.guard_tau,
                          hold_from=None if o.pi_hold_from is None else round(o.pi_hold_from * setup.updates),
                          regain=o.pi_regain, clip_first=o.pi_clip_first)

    def metrics(self, state: PIState) -> dict:
        return {"beta": state.beta, EMA: state.ema, TARGET: state.tau, "violation": state.ema - state.tau,
                "guard_ema": state.guard_ema, "target_progress": state.progress}

    def check(self, o: PIOptions, section) -> list[str]:
        problems = check_beta_range(o)
        if o.error_scale == "slack" and section.sense == "ce" and not section.slack > 0:
            problems.append("constraint.error_scale=slack needs constraint.slack > 0")
        if o.pi_regain and not o.pi_ki_follow_lr:
            problems.append("constraint.pi_regain=true needs constraint.pi_ki_follow_lr=true (without it the integral "
                            "rises at the full gain everywhere, and there is nothing to regain faster)")
        return problems
