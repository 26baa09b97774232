"""The constraint-controller registry: a controller is one file that subclasses :class:`Controller` and registers
itself with ``@register``; ``constraint.method`` names it, ``train/step.py`` looks it up with :func:`get`, the run
config takes its options (the ``constraint.*`` keys it reads) from its ``Options`` dataclass, and the host loop and
the report take the names of what it logs from it.

A controller states:

* ``name``: the value of ``constraint.method``;
* ``Options``: a dataclass of :func:`option` fields, the ``constraint.<key>`` values it reads (their defaults, their
  checks); the run config's constraint section is the shared keys plus every registered controller's options, so a
  new option is a new field here and nowhere else. Two controllers reading the same key declare it alike;
* ``State``: the NamedTuple of its multiplier state (:func:`find_state` finds it inside an optimiser state);
* ``transform(options, setup)``: an optax ``GradientTransformationExtraArgs`` whose ``update`` takes the constraint
  value as ``constraint=`` (and a guarded curriculum's CE as ``guard=``) and passes parameter updates through, or
  None for a fixed penalty (no state; the loss weights are then ``(1, constraint.beta_init)``);
* ``loss_weights(state)``: ``(ce_weight, density_weight)`` of the step's loss (no gradient into the multiplier);
* ``metrics(state)``: what the step outputs every step, under its own names; ``logged`` (and, in a guarded
  curriculum, ``logged_with_guard``) the ones the host loop records, ``multiplier`` the name of the multiplier
  (the progress bar, the report's plot);
* ``senses``, ``anneals``, ``guards``, ``constrains``: what it supports (the config checks ask these);
  ``check(options, section)``: its own cross-field problems.
"""
from __future__ import annotations

import abc
import dataclasses
import difflib
import typing
from typing import Any, Callable

import jax
import jax.numpy as jnp

CONTROLLERS: dict[str, "Controller"] = {}
SENSES = ("ce", "density")  # "ce": min density s.t. CE <= tau; "density": min CE s.t. density <= target
EMA, TARGET = "ce_ema", "tau"  # the metric names of a controller's estimate of the constrained quantity and target
# in density mode the records name the estimate and the target after the density
_SENSE_NAMES = {"ce": {}, "density": {EMA: "density_ema", TARGET: "density_target"}}


def option(default: Any = None, rule: tuple[Callable[[Any], bool], str] | None = None, doc: str = "", *,
           exclusive: bool = False):
    """A field of a controller's ``Options``: the ``constraint.<name>`` key, its default, ``rule = (valid?, what it
    must be)`` checked by the run config whatever the method, and ``exclusive``: setting it away from its default
    while another method is selected is an error (an option that only means something to this controller)."""
    return dataclasses.field(default=default, metadata={"rule": rule, "doc": doc, "exclusive": exclusive})


@dataclasses.dataclass
class NoOptions:
    """A controller that reads no ``constraint.*`` key of its own."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """What ``transform`` gets besides its options: the shared constraint keys and what the Trainer measured."""

    tau: float                             # the final target: the CE target or constraint.density_target
    sense: str = "ce"                      # constraint.sense
    slack: float = 0.0                     # constraint.slack (the CE target's tolerance)
    anneal_steps: int = 0                  # constraint.anneal_steps
    target_start: float | None = None      # where an annealed target starts (anneal_from or the measured density)
    guard_tau: float | None = None         # a guarded curriculum's CE target (None: no guard)
    lr_over_peak: Callable | None = None   # update count -> the learning rate over its peak
    updates: int = 0                       # the multiplier updates of the whole run (train.steps x grad_accum)


class Controller(abc.ABC):
    """The interface of a constraint controller (see the module docstring)."""

    name: str = ""
    Options: type = NoOptions
    State: type | None = None
    multiplier: str | None = None          # the metric of its multiplier ("beta", "lambda")
    logged: tuple[str, ...] = ()           # the metrics the host loop records
    logged_with_guard: tuple[str, ...] = ()  # ... and those it records in a guarded curriculum
    senses: tuple[str, ...] = ("ce",)      # the constraint senses it handles
    anneals: bool = False                  # handles an annealed target (constraint.anneal_steps)
    guards: bool = False                   # handles a guarded curriculum (constraint.guard)
    constrains: bool = True                # False: a fixed penalty (no target, no multiplier)

    def options(self, section) -> Any:
        """Its ``Options`` picked from the flat constraint section (or any object with those attributes)."""
        return self.Options(**{f.name: getattr(section, f.name) for f in dataclasses.fields(self.Options)})

    @abc.abstractmethod
    def transform(self, options, setup: Setup):
        """The multiplier as an optax transformation, or None (a fixed penalty)."""

    def loss_weights(self, state) -> tuple[jax.Array, jax.Array]:
        """``(ce_weight, density_weight)``; the default weights the density term by the multiplier."""
        return jnp.ones(()), jax.lax.stop_gradient(getattr(state, self.multiplier))

    def metrics(self, state) -> dict:
        """What to output every step, under this controller's names."""
        return {}

    def check(self, options, section) -> list[str]:
        """Cross-field problems of its options when this controller is selected (default: none)."""
        return []

    def record_names(self, sense: str, guard: bool) -> dict[str, str]:
        """``metric -> record name`` of what the host loop records (the estimate and the target renamed in
        density mode)."""
        keys = self.logged + (self.logged_with_guard if guard else ())
        return {k: record_name(k, sense) for k in keys}


def record_name(metric: str, sense: str) -> str:
    """The name under which the host loop records a controller's metric in this constraint sense."""
    return _SENSE_NAMES[sense].get(metric, metric)


_sealed: dict[str, tuple] | None = None  # the constraint section's fields, once the run config has built it


def register(cls):
    """Class decorator: register an instance of ``cls`` under ``cls.name``."""
    if not cls.name or cls.name in CONTROLLERS:
        raise ValueError(f"a constraint controller needs a new, non-empty name; got {cls.name!r} "
                         f"(taken: {', '.join(CONTROLLERS)})")
    if not dataclasses.is_dataclass(cls.Options):
        raise TypeError(f"controller {cls.name!r}: Options must be a dataclass of option() fields")
    ctrl = cls()  # an incomplete controller (no transform) fails here
    fields = _option_fields(ctrl)
    if _sealed is not None:
        new = [name for name in fields if name not in _sealed]
        if new:
            raise ValueError(f"controller {cls.name!r} is registered after sparsejax.config built the constraint "
                             f"section, so its options {', '.join(new)} are no constraint.* keys: put it in "
                             "sparsejax/controllers/ (imported with the package) or read existing keys only")
        _check_agrees(fields, _sealed, cls.name)
    _check_agrees(fields, {n: (hint, f) for c in CONTROLLERS.values() for n, (hint, f) in _option_fields(c).items()},
                  cls.name)
    CONTROLLERS[cls.name] = ctrl
    return cls


def names() -> tuple[str, ...]:
    """The registered controller names (the valid ``constraint.method`` values), in registration order."""
    return tuple(CONTROLLERS)


def did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(str(name), list(CONTROLLERS), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def get(name: str) -> Controller:
    """The controller registered as ``name``; an unknown name is an error naming the closest ones."""
    if name not in CONTROLLERS:
        raise ValueError(f"unknown constraint controller (constraint.method) {name!r}{did_you_mean(name)} "
                         f"(registered: {', '.join(CONTROLLERS)})")
    return CONTROLLERS[name]


def supporting(what: str) -> list[str]:
    """The names of the constraining controllers with ``what`` ("anneals", "guards") or the sense ``what``."""
    return [n for n, c in CONTROLLERS.items() if c.constrains and (what in c.senses if what in SENSES
                                                                    else getattr(c, what))]


def multiplier_names() -> tuple[str, ...]:
    """The metric names of the registered controllers' multipliers, each once (what the report plots)."""
    return tuple(dict.fromkeys(c.multiplier for c in CONTROLLERS.values() if c.multiplier))


# ---- the flat constraint section of the run config -------------------------------------------------------------
def _option_fields(ctrl) -> dict[str, tuple[Any, dataclasses.Field]]:
    hints = typing.get_type_hints(ctrl.Options)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(ctrl.Options)}


def _check_agrees(fields: dict, known: dict, who: str) -> None:
    for name, (hint, f) in fields.items():
        if name in known and (known[name][0] != hint or known[name][1].default != f.default):
            raise ValueError(f"controller {who!r} declares constraint.{name} as {hint} = {f.default!r}, but it is "
                             f"already {known[name][0]} = {known[name][1].default!r}: a shared key is declared alike")


def section_fields(shared) -> list[tuple[str, Any, dataclasses.Field]]:
    """The fields of the run config's constraint section (``dataclasses.make_dataclass``): those of the ``shared``
    dataclass, then every registered controller's options, each name once."""
    hints = typing.get_type_hints(shared)
    out = {f.name: (hints[f.name], f) for f in dataclasses.fields(shared)}
    for ctrl in CONTROLLERS.values():
        fields = _option_fields(ctrl)
        _check_agrees(fields, out, ctrl.name)
        for name, entry in fields.items():
            out.setdefault(name, entry)
    return [(name, hint, dataclasses.field(default=f.default, metadata=f.metadata))
            for name, (hint, f) in out.items()]


def seal(section) -> None:
    """Called by the run config once its constraint section exists: later registrations may not add keys."""
    global _sealed
    hints = typing.get_type_hints(section)
    _sealed = {f.name: (hints[f.name], f) for f in dataclasses.fields(section)}


def option_rules() -> list[tuple[str, Callable, str]]:
    """``(key, valid?, what it must be)`` of every registered controller's options that have a rule."""
    seen, out = set(), []
    for ctrl in CONTROLLERS.values():
        for f in dataclasses.fields(ctrl.Options):
            rule = f.metadata.get("rule")
            if rule is not None and f.name not in seen:
                seen.add(f.name)
                out.append((f.name, *rule))
    return out


def check_section(section) -> list[str]:
    """The selected controller's own problems and options of other controllers set while it is not selected."""
    ctrl = CONTROLLERS.get(section.method)
    if ctrl is None:
        return []
    problems = ctrl.check(ctrl.options(section), section)
    mine = {f.name for f in dataclasses.fields(ctrl.Options)}
    for other in CONTROLLERS.values():
        for f in dataclasses.fields(other.Options):
            if f.metadata.get("exclusive") and f.name not in mine and getattr(section, f.name) != f.default:
                problems.append(f"constraint.{f.name} works with constraint.method={other.name}, not "
                                f"{section.method}")
    return problems


# ---- a multiplier state inside an optimiser state --------------------------------------------------------------
def _by_state() -> dict[type, Controller]:
    return {c.State: c for c in CONTROLLERS.values() if c.State is not None}


def find_state(opt_state):
    """The one controller state inside an optimiser state (e.g. an ``optax.chain``'s tuple)."""
    types = tuple(_by_state())
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, types)) if isinstance(s, types)]
    if len(found) != 1:
        raise ValueError(f"expected exactly one controller state ({', '.join(t.__name__ for t in types)}) in the "
                         f"optimiser state, found {len(found)}")
    return found[0]


def controller_of(state) -> Controller:
    """The controller whose state is inside ``state``."""
    return _by_state()[type(find_state(state))]


def loss_weights(state) -> tuple[jax.Array, jax.Array]:
    """``(ce_weight, density_weight)`` for the current multiplier (no gradient flows into it)."""
    s = find_state(state)
    return _by_state()[type(s)].loss_weights(s)


def metrics(state) -> dict:
    """What to output every step: the multiplier, the constraint estimate, the target, ... (the controller's
    names)."""
    s = find_state(state)
    return _by_state()[type(s)].metrics(s)
