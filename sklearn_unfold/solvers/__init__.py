"""Classical solvers: each is its step function (``steps.py``) run with fixed parameters."""

from ._loop import IterationReport
from .amp import amp, amp_iterates
from .ista import fista, ista, ista_iterates
from .vamp import vamp, vamp_iterates

__all__ = ["IterationReport", "amp", "amp_iterates", "fista", "ista", "ista_iterates",
           "vamp", "vamp_iterates"]
