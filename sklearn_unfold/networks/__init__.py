"""Unrolled networks: torch modules whose layers call the solvers' step functions.

Every network's ``forward(Y, op)`` takes the operator at call time (one shared by the batch, a
fast transform, or one per sample) and returns every layer's estimate.
"""

from ._unrolled import UnrolledNetwork
from .lamp import LAMPNetwork
from .ldvamp import LDVAMPNetwork
from .lista import ALISTANetwork, LISTACPNetwork, LISTANetwork, lista_from_ista

__all__ = ["ALISTANetwork", "LAMPNetwork", "LDVAMPNetwork", "LISTACPNetwork", "LISTANetwork",
           "UnrolledNetwork", "lista_from_ista"]
