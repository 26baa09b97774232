"""The multipliers' former home, kept for the names users import (``constrained.pi_control``, ``geco``,
``dual_ascent``, their states, ``find_state``, ``loss_weights``, ``metrics``, ``target_schedule``): each controller
is now one file of :mod:`sparsejax.controllers`, looked up by ``constraint.method``."""
from __future__ import annotations

from .controllers.common import target_schedule
from .controllers.dual_ascent import DualAscentState, dual_ascent
from .controllers.geco import GecoState, geco
from .controllers.pi import PIState, pi_control
from .controllers.registry import SENSES, find_state, loss_weights, metrics

__all__ = ["DualAscentState", "GecoState", "PIState", "SENSES", "dual_ascent", "find_state", "geco", "loss_weights",
           "metrics", "pi_control", "target_schedule"]
