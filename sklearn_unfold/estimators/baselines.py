"""Non-iterative baselines as scikit-learn regressors: the linear MMSE estimate and OMP.

Both serve real and complex problems alike (a complex ``A`` declares the problem complex) and
are what signal-processing engineers compare learned recovery against: the LMMSE estimate is
optimal among linear estimators for the second moments it is given (for channels, the
power-delay profile), and orthogonal matching pursuit is the standard greedy sparse solver.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..channels import delay_lmmse, omp
from ._base import RecoveryEstimatorBase, fill_a_doc


class _BaselineBase(RecoveryEstimatorBase):
    """``fit`` validates, then ``_fit_baseline(Y, X)``; ``predict`` runs ``_estimate`` per chunk."""

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, operator=None):
        """Validate the training pairs and fit the estimator.

        The signature is scikit-learn's ``fit(X, y)``, used positionally as ``fit(Y, X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_measurements)
            Measurements ``Y``.
        y : array-like of shape (n_samples, n_features) or (n_samples,)
            The signals ``X`` behind them.
        operator : None
            Accepted for a uniform interface; these baselines need one fixed operator ``A``.

        Returns
        -------
        self : object
        """
        if operator is not None:
            raise ValueError(f"{type(self).__name__} needs one fixed operator A (its estimate "
                             "is a matrix of A); per-sample operators are not supported.")
        Y, X, _ = self._validate_fit_data(X, y)
        if self.operator_ is None:
            raise ValueError(f"{type(self).__name__} needs one fixed operator A; an operator "
                             "ensemble is not supported.")
        # one memory layout, so that a data frame and an array give the same bits
        self._fit_baseline(np.ascontiguousarray(Y), np.ascontiguousarray(X))
        return self

    def _fit_baseline(self, Y: np.ndarray, X: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def _dense_operator(self) -> np.ndarray:
        return self.operator_.to_dense().cpu().numpy()

    def _iterate(self, Y: np.ndarray, op):
        if op is not self.operator_:
            raise ValueError(f"{type(self).__name__} was fitted for one fixed operator A; "
                             "predict does not take per-sample operators.")
        yield self._estimate(np.ascontiguousarray(Y))


@fill_a_doc
class LinearMMSERegressor(_BaselineBase):
    r"""The linear minimum-mean-squared-error estimate with second moments learned from signals.

    .. math:: \hat x = R\,Aᴴ\,(A R Aᴴ + σ_w^2 I)^{-1}\,y, \qquad R = E[x xᴴ]

    ``R`` is estimated from the training signals: its diagonal (``covariance="diagonal"``, for
    channels the power-delay profile ``E|h_l|²``; Edfors et al., "OFDM channel estimation by
    singular value decomposition", IEEE Trans. Commun. 46, 1998) or the whole matrix
    (``"full"``). It is the best estimator that is linear in ``y`` for those second moments,
    and the posterior mean when ``x`` is Gaussian; for sparse signals it is the reference a
    non-linear method must beat.

    Parameters
    ----------
    %A%
    covariance : {"diagonal", "full"}, default="diagonal"
        Which second moments of the training signals ``R`` keeps.
    noise_var : "auto" or float, default="auto"
        ``σw²`` (``E|w|²`` for complex noise); ``"auto"`` estimates it from ``Y − X A_ᵀ``.
    batch_size : int, default=4096
        Samples per chunk in ``predict``.

    Attributes
    ----------
    covariance_ : ndarray of shape (n_features,) or (n_features, n_features)
        ``E|x_i|²`` per entry, or ``E[x xᴴ]``.
    coef_ : ndarray of shape (n_features, n_measurements)
        The estimator's matrix ``R Aᴴ (A R Aᴴ + σw² I)⁻¹``: ``predict(Y) = Y coef_ᵀ``.
    A_, operator_, noise_var_, sparsity_, signal_var_, n_features_in_, is_complex_
        As in :class:`~sklearn_unfold.AMPRegressor`.
    """

    _parameter_constraints: dict = {
        **RecoveryEstimatorBase._parameter_constraints,
        "covariance": [StrOptions({"diagonal", "full"})],
    }

    def __init__(self, A=None, *, covariance="diagonal", noise_var="auto", batch_size=4096):
        self.A = A
        self.covariance = covariance
        self.noise_var = noise_var
        self.batch_size = batch_size

    def _fit_baseline(self, Y, X) -> None:
        if self.covariance == "diagonal":
            self.covariance_ = np.mean(np.abs(X) ** 2, axis=0)
        else:
            self.covariance_ = X.T @ X.conj() / X.shape[0]
        A = self._dense_operator()
        M = A.shape[0]
        # the rows of coef_ map y to x̂: coef_ = R Aᴴ G⁻¹, the LMMSE estimate of the basis
        self.coef_ = delay_lmmse(np.eye(M, dtype=A.dtype), A, self.covariance_,
                                 float(self.noise_var_)).T.copy()

    def _estimate(self, Y: np.ndarray) -> np.ndarray:
        return Y @ self.coef_.T


@fill_a_doc
class OMPRegressor(_BaselineBase):
    r"""Orthogonal matching pursuit, real or complex, with its sparsity tuned on the training pairs.

    Per sample, the column most correlated with the residual joins the support and the
    coefficients are refitted by least squares on it,

    .. math:: j_t = \arg\max_j |a_jᴴ r_{t-1}|, \qquad \hat x_{S_t} = A_{S_t}^{+} y,
              \qquad r_t = y - A_{S_t} \hat x_{S_t},

    for ``k`` steps (Pati, Rezaiifar and Krishnaprasad, Asilomar 1993). On real data it equals
    :func:`sklearn.linear_model.orthogonal_mp`; unlike scikit-learn's it handles complex
    signals and operators (:func:`sklearn_unfold.channels.omp`).

    Parameters
    ----------
    %A%
    n_nonzero_coefs : "auto" or int, default="auto"
        ``k``. ``"auto"`` tries ``k = 1 … max(2, 2 × mean non-zeros of the training
        signals)`` (at most ``min(M, N)``) on ``validation_fraction`` of the training pairs
        and keeps the ``k`` of lowest squared error.
    validation_fraction : float in (0, 1), default=0.1
        The pairs held out to tune ``k`` (at most 1,000, at least one).
    noise_var : "auto" or float, default="auto"
        Recorded as ``noise_var_`` (OMP itself does not use it).
    batch_size : int, default=4096
        Samples per chunk in ``predict``.

    Attributes
    ----------
    n_nonzero_coefs_ : int
        The ``k`` used.
    validation_errors_ : ndarray of shape (k_max,) or None
        With ``"auto"``, the held-out NMSE (linear) of each ``k = 1 … k_max``.
    A_, operator_, noise_var_, sparsity_, signal_var_, n_features_in_, is_complex_
        As in :class:`~sklearn_unfold.AMPRegressor`.
    """

    _parameter_constraints: dict = {
        **RecoveryEstimatorBase._parameter_constraints,
        "n_nonzero_coefs": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(self, A=None, *, n_nonzero_coefs="auto", validation_fraction=0.1,
                 noise_var="auto", batch_size=4096):
        self.A = A
        self.n_nonzero_coefs = n_nonzero_coefs
        self.validation_fraction = validation_fraction
        self.noise_var = noise_var
        self.batch_size = batch_size

    def _fit_baseline(self, Y, X) -> None:
        A = self._dense_operator()
        k_limit = min(A.shape)
        self.validation_errors_ = None
        if self.n_nonzero_coefs != "auto":
            k = int(self.n_nonzero_coefs)
            if k > k_limit:
                raise ValueError(f"n_nonzero_coefs={k} exceeds min(n_measurements, n_features) "
                                 f"= {k_limit} of A with shape {A.shape}.")
            self.n_nonzero_coefs_ = k
            return
        n_val = min(1000, max(1, int(np.ceil(self.validation_fraction * Y.shape[0]))))
        Yv, Xv = Y[-n_val:], X[-n_val:]
        mean_nnz = float(np.mean(np.sum(X != 0, axis=1)))
        k_max = int(min(k_limit, max(2, np.ceil(2 * mean_nnz))))
        energy = max(float(np.sum(np.abs(Xv) ** 2)), np.finfo(np.float64).tiny)
        errors = np.array([np.sum(np.abs(omp(Yv, A, k) - Xv) ** 2) / energy
                           for k in range(1, k_max + 1)])
        self.validation_errors_ = errors
        self.n_nonzero_coefs_ = int(np.argmin(errors)) + 1

    def _estimate(self, Y: np.ndarray) -> np.ndarray:
        return omp(Y, self._dense_operator(), self.n_nonzero_coefs_)
