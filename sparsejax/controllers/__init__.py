"""Constraint controllers: the multiplier of "minimise density subject to CE <= tau" (or CE subject to
density <= target), one file each, looked up by ``constraint.method`` (docs/method.md §3, docs/controllers.md).

* ``pi`` (:mod:`sparsejax.controllers.pi`, the default; the transformation ``pi.pi_control``): PI control of
  ``log beta``;
* ``geco`` (:mod:`sparsejax.controllers.geco`; ``geco.geco``): multiplicative GECO updates of beta;
* ``dual_ascent`` (:mod:`sparsejax.controllers.dual_ascent`; ``dual_ascent.dual_ascent``): projected dual ascent on
  the CE's multiplier;
* ``penalty`` / ``none`` (:mod:`sparsejax.controllers.penalty`): a fixed density weight, no multiplier.

Each multiplier is an optax-style transformation: its state is a pytree (jit-able, checkpointable), it passes
parameter updates through unchanged (so it sits in an ``optax.chain`` beside any optimiser) and takes the
constraint value (the step's CE, or the edge density in density mode) as ``constraint=``. The loss of a step is
``ce_weight * CE + density_weight * density`` with the weights from :func:`loss_weights` of the current state.

Two constraint senses share this machinery (``sense=``): ``"ce"`` — minimise density subject to ``CE <= tau``
(the multiplier weights the density term and rises while the constraint holds); ``"density"`` — minimise CE
subject to ``density <= target`` (the multiplier weights the density term and rises while the density is above
its target). In both the loss is ``CE + beta * density``; ``constraint=`` is the CE or the density.

An annealed target (``target_start=``, ``anneal_steps=``; GECO and PI): the target moves geometrically from
``target_start`` to ``tau`` over the first ``anneal_steps`` updates, then stays at ``tau``
(:func:`~sparsejax.controllers.common.target_schedule`). A guarded curriculum (PI, density sense, ``guard_tau=``):
the annealed density target takes its next step only while the EMA of a CE passed as ``guard=`` is at or under
``guard_tau`` and waits while it is over, and the multiplier falls while the CE is over, so the density falls as
fast as the model keeps its loss and no faster (docs/controllers.md).

A new controller is one file in this package: subclass :class:`~sparsejax.controllers.registry.Controller`, give
it an ``Options`` dataclass of :func:`~sparsejax.controllers.registry.option` fields (its ``constraint.*`` keys)
and decorate it with ``@register`` (every module here is imported, which registers it); the run config, the train
step, the host loop's records and the report then know it (docs/controllers.md, "Writing a controller").
"""
from __future__ import annotations

import importlib
import pkgutil

from . import pi, geco, dual_ascent, penalty  # noqa: F401  (registration order: the order of constraint.method)
from .common import target_schedule
from .registry import (CONTROLLERS, EMA, SENSES, TARGET, Controller, NoOptions, Setup, controller_of, find_state,
                       get, loss_weights, metrics, multiplier_names, names, option, record_name, register)

for _module in pkgutil.iter_modules(__path__):  # every other module of this package is a controller: import = register
    if _module.name not in ("common", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["CONTROLLERS", "Controller", "EMA", "NoOptions", "SENSES", "Setup", "TARGET", "controller_of", "find_state",
           "get", "loss_weights", "metrics", "multiplier_names", "names", "option", "record_name", "register",
           "target_schedule"]
