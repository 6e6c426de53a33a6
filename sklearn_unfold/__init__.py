"""sklearn-unfold: deep unfolding (learned ISTA / AMP / VAMP) for scikit-learn.

Recover signals ``X`` from measurements ``Y = X Aᵀ + W`` with ``est.fit(Y, X)`` and
``est.predict(Y)``.
"""

from .estimators import (
    AMPRegressor,
    FISTARegressor,
    ISTARegressor,
    LAMPRegressor,
    LDVAMPRegressor,
    LinearMMSERegressor,
    LISTARegressor,
    OMPRegressor,
    VAMPRegressor,
)
from .metrics import nmse_db, nmse_scorer

__version__ = "0.1.0"

__all__ = [
    "AMPRegressor",
    "FISTARegressor",
    "ISTARegressor",
    "VAMPRegressor",
    "nmse_db",
    "nmse_scorer",
    "LAMPRegressor",
    "LDVAMPRegressor",
    "LISTARegressor",
    "LinearMMSERegressor",
    "OMPRegressor",
]
