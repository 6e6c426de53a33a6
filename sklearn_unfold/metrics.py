"""Recovery metrics: NMSE in dB and a scorer for model selection."""

from __future__ import annotations

import numpy as np
from sklearn.metrics._scorer import _Scorer


def nmse(X_true, X_pred) -> float:
    r"""Normalised mean-squared error ``‖X̂ − X‖²_F / ‖X‖²_F`` (linear scale).

    Parameters
    ----------
    X_true, X_pred : array-like of shape (n_samples, n_features) or (n_samples,)

    Returns
    -------
    float
    """
    X_true = np.asarray(X_true, dtype=np.float64)
    X_pred = np.asarray(X_pred, dtype=np.float64)
    if X_true.shape != X_pred.shape:
        raise ValueError(
            f"X_true and X_pred must have the same shape; got {X_true.shape} and {X_pred.shape}."
        )
    denom = float(np.sum(np.abs(X_true) ** 2))
    if denom == 0.0:
        raise ValueError("X_true is all zeros: the NMSE is undefined.")
    return float(np.sum(np.abs(X_pred - X_true) ** 2) / denom)


def nmse_db(X_true, X_pred) -> float:
    r"""NMSE in decibels, ``10 log10(‖X̂ − X‖²_F / ‖X‖²_F)``. Lower is better.

    Examples
    --------
    >>> import numpy as np
    >>> round(nmse_db(np.ones((2, 3)), 0.9 * np.ones((2, 3))), 2)
    -20.0
    """
    value = nmse(X_true, X_pred)
    return float(10.0 * np.log10(max(value, 1e-300)))


class _NMSEScorer(_Scorer):
    """The negated NMSE in dB of ``estimator.predict``, which also receives each sample's
    operator when one is routed to the scorer (``operator=`` metadata, requested by default)."""

    __metadata_request__score = {"operator": True}

    def _score(self, method_caller, estimator, X, y_true, **kwargs):
        operator = kwargs.pop("operator", None)
        y_pred = (estimator.predict(X) if operator is None
                  else estimator.predict(X, operator=operator))
        return self._sign * self._score_func(y_true, y_pred, **{**self._kwargs, **kwargs})


def make_nmse_scorer():
    """A new NMSE scorer (see :data:`nmse_scorer`), for code that changes its metadata requests."""
    return _NMSEScorer(nmse_db, -1, {}, response_method="predict")


#: Scorer for ``GridSearchCV(scoring=nmse_scorer)``: the negated NMSE in dB (greater is better).
#: Under scikit-learn's metadata routing (``sklearn.set_config(enable_metadata_routing=True)``)
#: it passes the per-sample ``operator`` of the test samples to ``predict``.
nmse_scorer = make_nmse_scorer()
