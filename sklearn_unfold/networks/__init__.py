"""Unrolled networks: torch modules whose layers call the solvers' step functions."""

from ._base import UnrolledNetwork
from .lamp import LAMPNetwork
from .ldvamp import LDVAMPNetwork
from .lista import LISTANetwork

__all__ = ["LAMPNetwork", "LDVAMPNetwork", "LISTANetwork", "UnrolledNetwork"]
