"""The gate-family registry: a family is one file that subclasses :class:`GateFamily` and registers itself with
``@register``; :class:`sparsejax.gates.Gate` looks its ``kind`` up here, and every attention implementation, the
config and the PyTorch export ask the family instead of testing names.

A family states the method's elementwise maps of the gate logit ``g = s + b`` (float32 arrays, noise = the
:func:`~sparsejax.gates.noise.hash_uniform` pair, ignored in eval mode):

* ``sample``: the gate value with its gradient attached, written for autodiff (the readable statement);
* ``value_and_slope``: the same value and ``d value / d g`` explicitly (hand-written backward passes);
* ``kernel_terms``: ``(value, slope, expected)`` for the fused kernels, which may pass fast approximate
  ``recip`` / ``exp`` (only values, never the sample, may depend on them);
* ``is_edge``: the deterministic (eval-mode) edge test; ``expected``: the probability that a pair is an edge (the
  regulariser's density) and ``expected_slope`` its derivative;
* ``torch_eval``: the eval-mode gate value in PyTorch (``sparsejax.checkpoints.transformers_attention``);
* ``check``: validate the family's own parameters on a :class:`~sparsejax.gates.Gate`.
"""
from __future__ import annotations

import abc

FAMILIES: dict[str, "GateFamily"] = {}


class GateFamily(abc.ABC):
    """The interface of a gate family (see the module docstring for what each map states). A subclass missing one
    of the abstract maps cannot be instantiated, so ``@register`` names what is missing."""

    name: str = ""

    def check(self, gate) -> None:
        """Raise ValueError if ``gate``'s parameters are invalid for this family (default: nothing to check)."""

    @abc.abstractmethod
    def sample(self, gate, g, uniform, train: bool):
        """The gate value with its gradient attached (autodiff form)."""

    @abc.abstractmethod
    def value_and_slope(self, gate, g, uniform, train: bool):
        """``(value, d value / d g)`` explicitly."""

    def kernel_terms(self, gate, g, uniform, train: bool, recip=None, exp=None):
        """``(value, slope, expected)``; the default ignores the fast-math hooks."""
        value, slope = self.value_and_slope(gate, g, uniform, train)
        return value, slope, self.expected(gate, g)

    @abc.abstractmethod
    def is_edge(self, gate, g):
        """The deterministic (eval-mode) edge test."""

    @abc.abstractmethod
    def expected(self, gate, g):
        """The probability that a pair is an edge."""

    def expected_slope(self, gate, g):
        """``d expected / d g``; the default is right for every ``expected`` of the form ``sigmoid(g - shift)``."""
        e = self.expected(gate, g)
        return e * (1.0 - e)

    @abc.abstractmethod
    def torch_eval(self, torch, g, temperature: float, stretch: tuple[float, float]):
        """The eval-mode gate value in PyTorch."""


def register(cls):
    """Class decorator: register an instance of ``cls`` under ``cls.name``."""
    if not cls.name or cls.name in FAMILIES:
        raise ValueError(f"a gate family needs a new, non-empty name; got {cls.name!r} (taken: {sorted(FAMILIES)})")
    FAMILIES[cls.name] = cls()
    return cls


def family(kind: str) -> GateFamily:
    if kind not in FAMILIES:
        raise ValueError(f"unknown gate family {kind!r}: Gate.kind must be one of {tuple(FAMILIES)}")
    return FAMILIES[kind]
