"""ISTA, FISTA, AMP and VAMP as scikit-learn regressors from measurements to signals.

Each estimator is thin: ``fit`` validates and fits what is ``"auto"`` (the operator, the prior,
the noise variance), ``predict`` hands chunks of measurements to the solver in
:mod:`sklearn_unfold.solvers` and converts back to float64 numpy.
"""

from __future__ import annotations

import copy
import sys
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from .._warnings import user_stacklevel
from ..denoisers import as_denoiser, bg_theta, make_denoiser
from ..solvers import IterationReport, amp_iterates, ista_iterates, vamp_iterates
from ..tuning import lasso_alpha_for_prior, soft_threshold_for_prior
from ._base import RecoveryEstimatorBase, fill_a_doc

_DTYPE = torch.float64


class _ClassicalBase(RecoveryEstimatorBase):
    _parameter_constraints: dict = {
        **RecoveryEstimatorBase._parameter_constraints,
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "dtype": [StrOptions({"float64", "float32"})],
    }

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, operator=None):
        """Validate the training pairs and fit what is ``"auto"``.

        The signature is scikit-learn's ``fit(X, y)``, used positionally as ``fit(Y, X)``:
        the measurements are the inputs and the signals the targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_measurements)
            Measurements ``Y``.
        y : array-like of shape (n_samples, n_features) or (n_samples,)
            The signals ``X`` behind them.
        operator : array-like of shape (n_samples, n_measurements, n_features) or \
                LinearOperator, optional
            The operator of each training pair (per-sample metadata; request it with
            ``set_fit_request(operator=True)`` under scikit-learn's metadata routing).

        Returns
        -------
        self : object
        """
        Y, X, op = self._validate_fit_data(X, y, operator)
        if op is not None and getattr(op, "has_adjoint", True) is False:
            # every solver applies Aᴴ: refuse an operator without one now, not in predict
            op.adjoint(torch.zeros((0, op.n_measurements), dtype=_DTYPE))
        self._fit_solver(Y, X)
        # fit does not run the solver: it costs what it says (validation, the prior, the
        # parameters). Until the first predict sets it, n_iter_ is the bound max_iter.
        self._predict_stats = {"n_iter": int(self.max_iter)}
        return self

    def _fit_solver(self, Y, X) -> None:
        """Hook for the method's own fitted parameters."""

    def _tensor(self, Y: np.ndarray) -> torch.Tensor:
        """``Y`` in the dtype the solver iterates in (the operator follows it)."""
        single = getattr(self, "dtype", "float64") == "float32"
        if np.iscomplexobj(Y):
            dtype = np.complex64 if single else np.complex128
        else:
            dtype = np.float32 if single else np.float64
        return torch.from_numpy(np.require(Y, dtype=dtype, requirements=["C", "W"]))

    def _iterate(self, Y: np.ndarray, op, warn: bool = True):
        # no_grad per step, not around the yield: a paused generator must not switch autograd
        # off in the caller's code (interleaved staged_predict calls, a later learned fit).
        report = IterationReport()
        iterates = self._solver_iterates(self._tensor(Y), op, report)
        while True:
            with torch.no_grad():
                x = next(iterates, None)
            if x is None:
                break
            yield x
        if warn:
            self._warn(report)

    #: What the divergence warning advises (ISTA's and message passing's causes differ).
    _divergence_advice = ("returning each one's best finite iterate. Message passing assumes an "
                          "i.i.d.-like A: try VAMPRegressor, damping < 1, or a learned network.")

    def _warn(self, report: IterationReport) -> None:
        name = type(self).__name__
        if report.n_diverged:
            warnings.warn(
                f"{name} diverged on {report.n_diverged} sample(s); {self._divergence_advice}",
                ConvergenceWarning,
                stacklevel=user_stacklevel())
        elif report.n_unconverged:
            warnings.warn(
                f"{name} reached max_iter={self.max_iter} before tol={self.tol} on "
                f"{report.n_unconverged} sample(s); increase max_iter.",
                ConvergenceWarning, stacklevel=user_stacklevel())

    def _report_chunk(self, index: int, n_chunks: int, n_samples: int, steps: int) -> None:
        if self.verbose:
            print(f"[{type(self).__name__}] chunk {index + 1}/{n_chunks}: {n_samples} sample(s), "
                  f"{steps} iteration(s)", file=sys.stderr, flush=True)

    def _set_n_iter(self, n_iter: int) -> None:
        # Kept in a holder created by fit, so that predict does not add keys to __dict__
        # (scikit-learn's check_dict_unchanged) while ``n_iter_`` still reflects the last call.
        self._predict_stats["n_iter"] = n_iter

    @property
    def n_iter_(self) -> int:
        """Iterations run by the last ``predict`` (the largest over samples).

        ``fit`` does not run the solver (it validates the pairs and sets the parameters):
        until the first ``predict``, ``n_iter_`` is the bound ``max_iter``.
        """
        if not hasattr(self, "_predict_stats"):
            raise AttributeError(f"This {type(self).__name__} instance is not fitted yet.")
        return self._predict_stats["n_iter"]


@fill_a_doc
class ISTARegressor(_ClassicalBase):
    r"""Iterative soft thresholding for the LASSO, ``min_x ½‖y − Ax‖² + α‖x‖₁``.

    .. math:: x_{t+1} = \mathrm{soft}\big(x_t + Aᵀ(y − A x_t)/L;\ α/L\big), \qquad L = ‖A‖₂^2

    The converged estimate is the LASSO solution: it equals
    ``sklearn.linear_model.Lasso(alpha=alpha / M, fit_intercept=False)`` fitted per sample.

    Parameters
    ----------
    %A%
    alpha : "auto" or float, default="auto"
        The ℓ1 weight ``α`` in the objective above (``M`` times scikit-learn's Lasso ``alpha``).
        ``"auto"`` calibrates it to the fitted prior and noise: the ``α`` whose LASSO solution is
        the fixed point of AMP-soft with the state-evolution-optimal threshold
        (:func:`sklearn_unfold.tuning.lasso_alpha_for_prior`).
    max_iter : int, default=5000
        Iteration cap per sample.
    tol : float, default=1e-6
        A sample stops when ``‖x_{t+1} − x_t‖ ≤ tol·‖x_t‖``.
    noise_var : "auto" or float, default="auto"
        Noise variance (recorded as ``noise_var_``; ISTA itself does not use it).
    batch_size : int, default=4096
        Samples per chunk in ``predict``.
    dtype : {"float64", "float32"}, default="float64"
        The precision ``predict`` iterates in (the estimates are returned in float64).
        ``"float32"`` halves the memory and roughly the time of the matrix products, at a
        relative precision of about 1e-7 (the learned networks' default precision); a ``tol``
        near that precision may take more iterations to reach.
    verbose : int, default=0
        ``> 0`` prints a progress line to stderr after each chunk of ``predict`` and
        ``staged_predict`` (the chunk, its samples and the iterations run).

    Attributes
    ----------
    A_ : ndarray of shape (n_measurements, n_features), or the operator or ensemble given
    operator_ : LinearOperator or None
        The float64 operator ``predict`` uses when not given per-sample operators (``None``
        for an ensemble, or when ``fit`` had only the pairs' own operators).
    alpha_ : float
        The ℓ1 weight used.
    lipschitz_ : float or None
        ``L = ‖A_‖₂²`` (``None`` without a fixed operator: each sample's own ``L`` is used).
    n_iter_ : int
        Iterations run by the last ``predict`` (the largest over samples); ``fit`` does not
        run the solver, so until the first ``predict`` it is the bound ``max_iter``.
    sparsity_, signal_var_, noise_var_ : float
        The Bernoulli-Gaussian prior and noise variance fitted to the training pairs.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``Y`` had string column names.

    Examples
    --------
    >>> from sklearn_unfold import ISTARegressor
    >>> from sklearn_unfold.datasets import make_compressed_sensing
    >>> Y, X, A = make_compressed_sensing("giid", n_samples=20, random_state=0)
    >>> est = ISTARegressor(A=A, max_iter=200).fit(Y, X)
    >>> est.predict(Y).shape
    (20, 500)
    """

    _accelerated = False
    _divergence_advice = ("returning each one's last finite iterate. ISTA's step 1/L "
                          "(L = ‖A‖₂²) converges for any A, so a non-finite iterate comes from "
                          "extreme values: check the scale of A and Y.")
    _parameter_constraints: dict = {
        **_ClassicalBase._parameter_constraints,
        "alpha": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, A=None, *, alpha="auto", max_iter=5000, tol=1e-6, noise_var="auto",
                 batch_size=4096, dtype="float64", verbose=0):
        self.A = A
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.noise_var = noise_var
        self.batch_size = batch_size
        self.dtype = dtype
        self.verbose = verbose

    def _fit_solver(self, Y, X) -> None:
        self.lipschitz_ = (float(self.operator_.norm_sq()) if self.operator_ is not None
                           else None)
        if self.alpha == "auto":
            self.alpha_ = lasso_alpha_for_prior(self.sparsity_, self.signal_var_,
                                                self.noise_var_, Y.shape[1] / X.shape[1],
                                                complex_signals=self._is_complex())
        else:
            self.alpha_ = float(self.alpha)

    def _solver_iterates(self, Y, op, report):
        lipschitz = self.lipschitz_ if op is self.operator_ else None
        return ista_iterates(Y, op, self.alpha_, max_iter=self.max_iter, tol=self.tol,
                             accelerated=self._accelerated, lipschitz=lipschitz, report=report)


class FISTARegressor(ISTARegressor):
    r"""FISTA (Beck-Teboulle): ISTA's step taken at an extrapolated point.

    .. math::
        s_t = \tfrac12\big(1 + \sqrt{1 + 4 s_{t-1}^2}\big), \quad
        z_t = x_t + \tfrac{s_{t-1} - 1}{s_t}(x_t - x_{t-1}), \quad
        x_{t+1} = \mathrm{soft}\big(z_t + Aᵀ(y − A z_t)/L;\ α/L\big)

    Same objective, parameters and attributes as :class:`ISTARegressor`; it reaches a given
    accuracy in roughly the square root of ISTA's iteration count.
    """

    _accelerated = True


class _MessagePassingBase(_ClassicalBase):
    _parameter_constraints: dict = {
        **_ClassicalBase._parameter_constraints,
        "denoiser": [StrOptions({"soft", "bg"}), nn.Module],
        "threshold": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "damping": [Interval(Real, 0, 1, closed="right")],
        "sparsity": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="right")],
        "signal_var": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
    }

    def _fit_solver(self, Y, X) -> None:
        if self.sparsity != "auto":
            self.sparsity_ = float(self.sparsity)
        if self.signal_var != "auto":
            self.signal_var_ = float(self.signal_var)
        if isinstance(self.denoiser, nn.Module):  # a fixed plug-in denoiser (D-AMP, D-VAMP)
            self.threshold_ = self.theta_ = None
            self.denoiser_ = copy.deepcopy(self.denoiser).requires_grad_(False).eval()
            return
        if self.denoiser == "bg":
            self.threshold_ = None
            theta = bg_theta(self.sparsity_, self.signal_var_)
        else:
            if self.threshold == "auto":
                self.threshold_ = soft_threshold_for_prior(
                    self.sparsity_, self.signal_var_, self.noise_var_,
                    Y.shape[1] / X.shape[1], algorithm=self._algorithm,
                    complex_signals=self._is_complex())
            else:
                self.threshold_ = float(self.threshold)
            theta = np.array([self.threshold_, 1.0])
        self.theta_ = torch.as_tensor(theta, dtype=_DTYPE)
        self.denoiser_ = make_denoiser(self.denoiser, theta).requires_grad_(False)

    def _fixed_denoiser(self, Y):
        """The denoiser the iterations call, on ``Y``'s device (a model saved by an older
        release holds the shrinkage as a function and its ``theta_``)."""
        den = self.denoiser_
        if not isinstance(den, nn.Module):
            den = as_denoiser(den, self.theta_)
        return den.to(device=Y.device)


@fill_a_doc
class AMPRegressor(_MessagePassingBase):
    r"""Approximate message passing with a scalar denoiser.

    .. math::
        v_t = y - A\hat x_t + \tfrac{N}{M}\langle η'_{t-1}\rangle v_{t-1},\quad
        σ_t = \|v_t\|/\sqrt M,\quad
        \hat x_{t+1} = η(\hat x_t + Aᵀ v_t;\ σ_t, θ)

    With ``denoiser="bg"`` and the prior fitted to the training signals this is Bayes-optimal
    for i.i.d. Gaussian ``A`` and follows state evolution; with ``"soft"`` and a threshold
    ``λσ_t`` it converges to a LASSO solution. AMP assumes an i.i.d.-like ``A``: on an
    ill-conditioned matrix it diverges, warns (``ConvergenceWarning``) and returns each sample's
    best finite iterate (the one with the smallest ``σ_t``).

    Parameters
    ----------
    %A%
    denoiser : {"bg", "soft"} or torch.nn.Module, default="bg"
        Bernoulli-Gaussian MMSE denoiser, or the soft threshold, matched to the training pairs;
        or any fixed denoiser module (:mod:`sklearn_unfold.denoisers`: ``forward(r, sigma)``
        returns the estimate and its mean divergence), run as it is: a trained
        :class:`~sklearn_unfold.denoisers.ConvDenoiser1d` or
        :class:`~sklearn_unfold.denoisers.DnCNN` makes this D-AMP (Metzler, Maleki and
        Baraniuk, IEEE TIT 2016). ``fit`` keeps a copy of the module in ``denoiser_``.
    threshold : "auto" or float, default="auto"
        Threshold multiplier ``λ`` of the soft denoiser. ``"auto"`` picks the ``λ`` whose
        state-evolution fixed point is lowest for the fitted prior and noise.
    damping : float in (0, 1], default=1.0
        ``x̂ ← β η(·) + (1 − β) x̂``; 1 is undamped.
    max_iter : int, default=100
    tol : float, default=1e-6
    noise_var : "auto" or float, default="auto"
        ``σw²``; ``"auto"`` estimates it from ``Y − X A_ᵀ`` on the training pairs.
    sparsity : "auto" or float, default="auto"
        Prior rate ``p`` of non-zeros; ``"auto"`` fits it to the training signals.
    signal_var : "auto" or float, default="auto"
        Prior variance ``v`` of the non-zeros; ``"auto"`` fits it.
    batch_size : int, default=4096
        Samples per chunk in ``predict``.
    dtype : {"float64", "float32"}, default="float64"
        The precision ``predict`` iterates in (the estimates are returned in float64).
        ``"float32"`` halves the memory and roughly the time of the matrix products, at a
        relative precision of about 1e-7 (the learned networks' default precision); a ``tol``
        near that precision may take more iterations to reach.
    verbose : int, default=0
        ``> 0`` prints a progress line to stderr after each chunk of ``predict``.

    Attributes
    ----------
    A_, sparsity_, signal_var_, noise_var_, n_features_in_, n_iter_
        As in :class:`ISTARegressor`.
    threshold_ : float or None
        The soft threshold multiplier used (``None`` for ``"bg"`` and a module).
    theta_ : tensor or None
        The shrinkage's parameters (``None`` for a module).
    denoiser_ : torch.nn.Module
        The denoiser the iterations run: the matched shrinkage
        (:class:`~sklearn_unfold.denoisers.BernoulliGaussian`,
        :class:`~sklearn_unfold.denoisers.SoftThreshold`) or a copy of the given module.
    """

    _algorithm = "amp"

    def __init__(self, A=None, *, denoiser="bg", threshold="auto", damping=1.0, max_iter=100,
                 tol=1e-6, noise_var="auto", sparsity="auto", signal_var="auto",
                 batch_size=4096, dtype="float64", verbose=0):
        self.A = A
        self.denoiser = denoiser
        self.threshold = threshold
        self.damping = damping
        self.max_iter = max_iter
        self.tol = tol
        self.noise_var = noise_var
        self.sparsity = sparsity
        self.signal_var = signal_var
        self.batch_size = batch_size
        self.dtype = dtype
        self.verbose = verbose

    def _solver_iterates(self, Y, op, report):
        return amp_iterates(Y, op, self._fixed_denoiser(Y), max_iter=self.max_iter,
                            tol=self.tol, damping=self.damping, report=report)


class VAMPRegressor(_MessagePassingBase):
    r"""Vector AMP: an LMMSE stage through the SVD of ``A`` alternating with a scalar denoiser.

    .. math::
        \hat x_2 = (γ_w AᵀA + γ_2 I)^{-1}(γ_w Aᵀy + γ_2 r_2),\quad
        γ_1 = γ_2(1-α_2)/α_2,\quad r_1 = (\hat x_2 - α_2 r_2)/(1-α_2) \\
        \hat x_1 = η(r_1;\ γ_1^{-1/2}, θ),\quad
        γ_2 = γ_1(1-α_1)/α_1,\quad r_2 = (\hat x_1 - α_1 r_1)/(1-α_1)

    with ``γw = 1/σw²`` and ``α`` the mean derivative of each stage. Starts from ``r2 = 0`` and
    ``γ2 = 1/m̂``, ``m̂ = (‖y‖² − Mσw²)/‖A‖²_F`` each signal's second moment estimated from its
    measurements; ``predict`` returns the denoiser output ``x̂1``. Unlike AMP it stays
    Bayes-optimal for ill-conditioned (right-rotationally invariant) ``A``.

    Parameters
    ----------
    A, denoiser, threshold, max_iter, tol, noise_var, sparsity, signal_var, batch_size, dtype, verbose
        As in :class:`AMPRegressor` (``max_iter`` defaults to 50).
    damping : float in (0, 1], default=1.0
        Damping of the message ``r2`` and the precision ``γ2``; 1 is undamped.
    adaptive_noise : bool, default=False
        Re-estimate each sample's noise precision at every iteration by expectation
        maximisation (adaptive VAMP; Fletcher et al., NeurIPS 2017), starting from
        ``noise_var_``: measurements whose SNR differs from the training pairs' are recovered
        nearly as if their noise level were known (see
        :func:`~sklearn_unfold.solvers.vamp_iterates`).

    Attributes
    ----------
    A_, sparsity_, signal_var_, noise_var_, n_features_in_, n_iter_, threshold_, theta_
        As in :class:`AMPRegressor`.
    singular_values_ : ndarray or None
        The non-zero singular values of ``operator_`` when it has an SVD (a matrix); ``None``
        for matrix-free and random operators, whose LMMSE stage is computed otherwise.
    """

    _algorithm = "vamp"

    _parameter_constraints: dict = {
        **_MessagePassingBase._parameter_constraints,
        "adaptive_noise": ["boolean"],
    }

    def __init__(self, A=None, *, denoiser="bg", threshold="auto", damping=1.0,
                 adaptive_noise=False, max_iter=50, tol=1e-6, noise_var="auto",
                 sparsity="auto", signal_var="auto", batch_size=4096, dtype="float64",
                 verbose=0):
        self.A = A
        self.denoiser = denoiser
        self.threshold = threshold
        self.damping = damping
        self.adaptive_noise = adaptive_noise
        self.max_iter = max_iter
        self.tol = tol
        self.noise_var = noise_var
        self.sparsity = sparsity
        self.signal_var = signal_var
        self.batch_size = batch_size
        self.dtype = dtype
        self.verbose = verbose

    def _fit_solver(self, Y, X) -> None:
        super()._fit_solver(Y, X)
        svd = self.operator_.svd() if self.operator_ is not None else None
        self.singular_values_ = svd[1].numpy().copy() if svd is not None else None

    def _solver_iterates(self, Y, op, report):
        return vamp_iterates(Y, op, self._fixed_denoiser(Y), None, self.noise_var_,
                             self.sparsity_ * self.signal_var_, max_iter=self.max_iter,
                             tol=self.tol, damping=self.damping,
                             adaptive_noise=self.adaptive_noise, report=report)
