"""scikit-learn estimators."""

from .classical import AMPRegressor, FISTARegressor, ISTARegressor, VAMPRegressor

__all__ = ["AMPRegressor", "FISTARegressor", "ISTARegressor", "VAMPRegressor"]
