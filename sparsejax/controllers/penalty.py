"""No multiplier: a fixed density weight ``constraint.beta_init`` (``constraint.method=penalty``), and ``none``
(pretraining, or a gated run without a constraint: the same fixed weight when gated, nothing when dense)."""
from __future__ import annotations

import dataclasses

from .registry import SENSES, Controller, option, register


@dataclasses.dataclass
class PenaltyOptions:
    beta_init: float = option(1e-2, doc="the fixed density weight (a shared key)")


@register
class Penalty(Controller):
    name = "penalty"
    Options = PenaltyOptions
    senses = SENSES
    constrains = False

    def transform(self, options, setup):
        return None  # the step weights the loss by (1, constraint.beta_init)


@register
class NoConstraint(Controller):
    name = "none"
    senses = SENSES
    constrains = False

    def transform(self, options, setup):
        return None
