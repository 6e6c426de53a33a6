"""Recovery metrics: NMSE in dB, a scorer for model selection, and ``R²`` for complex signals.

Every metric here takes real or complex arrays: errors are measured with the squared modulus
``|·|²``, so a complex signal's imaginary part counts as much as its real part.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import r2_score
from sklearn.metrics._scorer import _Scorer
from sklearn.utils.validation import _check_sample_weight, check_consistent_length

__all__ = ["complex_r2_score", "make_nmse_scorer", "nmse", "nmse_db", "nmse_scorer"]


def _sq_abs(a: np.ndarray) -> np.ndarray:
    """``|a|²`` elementwise (real for complex ``a``)."""
    return a.real**2 + a.imag**2 if np.iscomplexobj(a) else a**2


def _pair(X_true, X_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64, or both as complex128 when either one is complex."""
    X_true, X_pred = np.asarray(X_true), np.asarray(X_pred)
    dtype = np.complex128 if np.iscomplexobj(X_true) or np.iscomplexobj(X_pred) else np.float64
    return X_true.astype(dtype, copy=False), X_pred.astype(dtype, copy=False)


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity; the metric is undefined for non-finite "
                         "values.")


def nmse(X_true: ArrayLike, X_pred: ArrayLike) -> float:
    r"""Normalised mean-squared error ``‖X̂ − X‖²_F / ‖X‖²_F`` (linear scale).

    Real and complex inputs are both accepted: the squared Frobenius norms sum ``|·|²`` over
    the entries, so the imaginary parts count. When either argument is complex both are
    compared as ``complex128``; otherwise both are compared as ``float64``.

    Parameters
    ----------
    X_true : array-like of shape (n_samples, n_features) or (n_samples,)
        The true signals, real or complex.
    X_pred : array-like of the same shape as ``X_true``
        The estimates, real or complex.

    Returns
    -------
    float
        ``‖X̂ − X‖²_F / ‖X‖²_F`` (0 for a perfect estimate).

    Raises
    ------
    ValueError
        If the shapes differ, if either input holds NaN or infinity, or if ``X_true`` is all
        zeros (the ratio is then undefined).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1 + 1j, 0], [0, 2j]])
    >>> round(nmse(X, 1.1 * X), 6)
    0.01
    """
    X_true, X_pred = _pair(X_true, X_pred)
    if X_true.shape != X_pred.shape:
        raise ValueError(
            f"X_true and X_pred must have the same shape; got {X_true.shape} and {X_pred.shape}."
        )
    _check_finite(X_true, "X_true")
    _check_finite(X_pred, "X_pred")
    denom = float(np.sum(_sq_abs(X_true)))
    if denom == 0.0:
        raise ValueError("X_true is all zeros: the NMSE is undefined.")
    return float(np.sum(_sq_abs(X_pred - X_true)) / denom)


def nmse_db(X_true: ArrayLike, X_pred: ArrayLike) -> float:
    r"""NMSE in decibels, ``10 log10(‖X̂ − X‖²_F / ‖X‖²_F)``. Lower is better.

    Parameters
    ----------
    X_true : array-like of shape (n_samples, n_features) or (n_samples,)
        The true signals, real or complex.
    X_pred : array-like of the same shape as ``X_true``
        The estimates, real or complex.

    Returns
    -------
    float
        The NMSE of :func:`~sklearn_unfold.metrics.nmse` in dB (a perfect estimate gives
        -3000 dB, the floor of ``10 log10(1e-300)``).

    Raises
    ------
    ValueError
        As :func:`~sklearn_unfold.metrics.nmse`: different shapes, non-finite values, or an
        all-zero ``X_true``.

    Examples
    --------
    >>> import numpy as np
    >>> round(nmse_db(np.ones((2, 3)), 0.9 * np.ones((2, 3))), 2)
    -20.0
    >>> round(nmse_db(np.ones(4) * 1j, 0.9j * np.ones(4)), 2)
    -20.0
    """
    value = nmse(X_true, X_pred)
    return float(10.0 * np.log10(max(value, 1e-300)))


def complex_r2_score(y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike | None = None) -> float:
    r"""Coefficient of determination ``R²`` for real or complex targets.

    For each output ``j`` (column),

    .. math:: R^2_j = 1 - \frac{\sum_i w_i\,|y_{ij} - \hat y_{ij}|^2}
                                {\sum_i w_i\,|y_{ij} - \bar y_j|^2},
              \qquad \bar y_j = \frac{\sum_i w_i\, y_{ij}}{\sum_i w_i},

    and the score is the plain mean of the ``R²_j`` (scikit-learn's
    ``multioutput="uniform_average"``). On real inputs it *is*
    :func:`sklearn.metrics.r2_score` (it calls it, so the value is identical to the last bit,
    validation and warnings included); complex inputs, which ``r2_score`` refuses, are computed
    here in ``complex128`` with the same conventions.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        True targets, real or complex.
    y_pred : array-like of the same shape as ``y_true``
        Predictions, real or complex.
    sample_weight : array-like of shape (n_samples,), default=None
        Real weight of each sample (``None``: all 1).

    Returns
    -------
    float
        The uniform average of the per-output scores; 1 is a perfect prediction, and the score
        may be negative. ``nan`` (with an ``UndefinedMetricWarning``) when there are fewer
        than two samples, as for ``r2_score``.

    Raises
    ------
    ValueError
        If the lengths or numbers of outputs differ, if an input is more than 2-D, or if an
        input or a weight is NaN or infinite.

    Notes
    -----
    Constant targets follow scikit-learn's ``force_finite=True`` convention: an output whose
    denominator is 0 (every ``y_ij`` equal to its weighted mean, e.g. a constant column) scores
    1.0 when its prediction is exact (numerator 0) and 0.0 otherwise, instead of ``nan`` or
    ``-inf``. An output whose numerator is 0 scores 1.0 in any case.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([1 + 1j, 2 - 1j, -1j, 3 + 0j])
    >>> complex_r2_score(y, y)
    1.0
    >>> complex_r2_score(y, np.full(4, y.mean()))
    0.0
    >>> round(complex_r2_score([3.0, -0.5, 2.0, 7.0], [2.5, 0.0, 2.0, 8.0]), 4)  # as r2_score
    0.9486
    """
    if not (np.iscomplexobj(np.asarray(y_true)) or np.iscomplexobj(np.asarray(y_pred))):
        return float(r2_score(y_true, y_pred, sample_weight=sample_weight))
    check_consistent_length(y_true, y_pred, sample_weight)
    y_true, y_pred = _pair(y_true, y_pred)
    for arr, name in ((y_true, "y_true"), (y_pred, "y_pred")):
        if arr.ndim not in (1, 2):
            raise ValueError(f"{name} must be 1-D or 2-D; got an array of shape {arr.shape}.")
        _check_finite(arr, name)
    y_true, y_pred = y_true.reshape(len(y_true), -1), y_pred.reshape(len(y_pred), -1)
    if y_true.shape[1] != y_pred.shape[1]:
        raise ValueError(f"y_true and y_pred have different numbers of outputs "
                         f"({y_true.shape[1]}!={y_pred.shape[1]}).")
    if sample_weight is not None:
        sample_weight = _check_sample_weight(sample_weight, y_true, dtype=np.float64)
    if len(y_true) < 2:
        warnings.warn("R^2 score is not well-defined with less than two samples.",
                      UndefinedMetricWarning, stacklevel=2)
        return float("nan")
    weight = 1.0 if sample_weight is None else sample_weight[:, None]
    numerator = np.sum(weight * _sq_abs(y_true - y_pred), axis=0)
    mean = np.average(y_true, axis=0, weights=sample_weight)
    denominator = np.sum(weight * _sq_abs(y_true - mean), axis=0)
    scores = np.ones(y_true.shape[1])
    nonzero_num, nonzero_den = numerator != 0, denominator != 0
    valid = nonzero_num & nonzero_den
    scores[valid] = 1 - numerator[valid] / denominator[valid]
    scores[nonzero_num & ~nonzero_den] = 0.0
    return float(np.mean(scores))


class _NMSEScorer(_Scorer):
    """The negated NMSE in dB of ``estimator.predict``, which also receives each sample's
    operator when one is routed to the scorer (``operator=`` metadata, requested by default)."""

    __metadata_request__score = {"operator": True}

    def _score(self, method_caller, estimator, X, y_true, **kwargs):
        operator = kwargs.pop("operator", None)
        y_pred = (estimator.predict(X) if operator is None
                  else estimator.predict(X, operator=operator))
        return self._sign * self._score_func(y_true, y_pred, **{**self._kwargs, **kwargs})


def make_nmse_scorer() -> _Scorer:
    """A new NMSE scorer (see :data:`nmse_scorer`), for code that changes its metadata requests.

    Returns
    -------
    scorer
        A scikit-learn scorer ``scorer(estimator, Y, X)`` that returns ``-nmse_db(X,
        estimator.predict(Y))`` (greater is better), for real or complex signals.
    """
    return _NMSEScorer(nmse_db, -1, {}, response_method="predict")


#: Scorer for ``GridSearchCV(scoring=nmse_scorer)``: the negated NMSE in dB (greater is better),
#: for real or complex signals. Under scikit-learn's metadata routing
#: (``sklearn.set_config(enable_metadata_routing=True)``) it passes the per-sample ``operator``
#: of the test samples to ``predict``.
nmse_scorer = make_nmse_scorer()
