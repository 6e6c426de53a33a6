"""scikit-learn estimators."""

from .baselines import LinearMMSERegressor, OMPRegressor
from .classical import AMPRegressor, FISTARegressor, ISTARegressor, VAMPRegressor
from .learned import LAMPRegressor, LDVAMPRegressor, LISTARegressor

__all__ = ["AMPRegressor", "FISTARegressor", "ISTARegressor", "VAMPRegressor",
           "LAMPRegressor", "LDVAMPRegressor", "LISTARegressor", "LinearMMSERegressor",
           "OMPRegressor"]
