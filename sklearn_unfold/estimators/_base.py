"""What every recovery estimator shares: validation, the fitted operator and prior, chunked predict.

An estimator of this package is a regressor from measurements ``Y (n, M)`` to signals
``X (n, N)``: ``fit(Y, X)``, ``predict(Y) -> X̂``. This base class turns ``fit``'s inputs into
validated float64 arrays and the fitted state that the solvers and networks need:

* ``A_`` and ``operator_``: the sensing operator. ``A`` may be a dense matrix (given, checked
  against the data, or estimated from the pairs by ridge-regularised least squares when
  ``A=None``), a ``scipy.sparse`` matrix, a ``scipy.sparse.linalg.LinearOperator``, a
  :class:`~sklearn_unfold.operators.LinearOperator` (a fast transform, say), or an operator
  ensemble (a random family: each sample has its own operator). ``operator_`` is the float64
  :class:`~sklearn_unfold.operators.LinearOperator` that ``predict`` uses when it is not given
  per-sample operators (``None`` for an ensemble);
* per-sample operators: ``fit``, ``predict``, ``staged_predict`` and ``score`` take
  ``operator=`` (one operator per sample: an ``(n, M, N)`` array or a per-sample
  :class:`~sklearn_unfold.operators.LinearOperator`), sample-aligned metadata that
  scikit-learn's metadata routing splits with the samples;
* ``sparsity_``, ``signal_var_``: the Bernoulli-Gaussian prior fitted to ``X``;
* ``noise_var_``: the noise variance, given or estimated from ``Y − X A_ᵀ``.

Subclasses implement ``_fit_solver`` (what ``fit`` does after validation) and ``_iterate``
(a generator of per-iteration / per-layer estimates for one chunk of measurements and its
operator).
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import HasMethods, Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import (
    _check_feature_names,
    _check_n_features,
    check_array,
    check_is_fitted,
    validate_data,
)

from ..datasets import BernoulliGaussianPrior
from ..metrics import complex_r2_score
from ..operators import LinearOperator, as_operator
from ..operators.ensembles import OperatorEnsemble
from ._validation import (
    _F64,
    _check_finite,
    _check_input_form,
    _check_operator_shape,
    _check_scale,
    _is_dense_matrix,
    _is_large,
    _max_abs,
    _reraise_if_swapped,
    _Summary,
    _summary,
    _warn_scale_mismatch,
    check_complex_data,
    check_operator,
    check_sample_operators,
    check_sensing_matrix,
    estimate_sensing_matrix,
    is_complex_operator,
)

#: The ``A`` parameter of every estimator's docstring (its ``%A%`` placeholder).
A_PARAM_DOC = """A : array-like, sparse matrix, LinearOperator, operator ensemble or None, default=None
        The sensing operator: a dense ``(n_measurements, n_features)`` matrix, a ``scipy.sparse``
        matrix, a ``scipy.sparse.linalg.LinearOperator``, a
        :class:`~sklearn_unfold.operators.LinearOperator` (e.g. the matrix-free
        :class:`~sklearn_unfold.operators.PartialDCT`), or an operator ensemble (a random family:
        each sample then has its own operator, passed as ``operator=`` to ``fit`` and ``predict``;
        see :ref:`operators`). ``None`` estimates a dense matrix from the training pairs (ridge
        least squares), unless ``fit`` is given the pairs' own operators."""


def fill_a_doc(cls):
    """Class decorator: put :data:`A_PARAM_DOC` in place of ``%A%`` in the docstring."""
    cls.__doc__ = cls.__doc__.replace("%A%", A_PARAM_DOC)
    return cls


class RecoveryEstimatorBase(RegressorMixin, BaseEstimator):
    """Shared machinery of the classical and learned recovery estimators (not public)."""

    # The per-sample operators are requested by default: under scikit-learn's metadata routing,
    # GridSearchCV, cross_validate and Pipeline pass ``operator=`` to fit, predict and score,
    # split with the samples, without a set_*_request call.
    __metadata_request__fit = {"operator": True}
    __metadata_request__predict = {"operator": True}
    __metadata_request__score = {"operator": True}

    _parameter_constraints: dict = {
        "A": ["array-like", "sparse matrix", HasMethods(["forward", "adjoint"]),
              HasMethods(["matvec"]), HasMethods(["sample"]), None],
        "noise_var": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    # ---------------------------------------------------------------- repr and parameters
    def __repr__(self, N_CHAR_MAX: int = 700) -> str:
        """scikit-learn's ``repr``, with array parameters (``A``) shown as a one-line summary."""
        params = self.get_params(deep=False)
        large = {k: v for k, v in params.items() if _is_large(v)}
        if not large:
            return super().__repr__(N_CHAR_MAX)
        shown = copy.copy(self)
        for key, value in large.items():
            setattr(shown, key, _Summary(value))
        return BaseEstimator.__repr__(shown, N_CHAR_MAX)

    def _validate_params(self) -> None:
        """scikit-learn's parameter validation, without printing a whole array in the error."""
        try:
            super()._validate_params()
        except InvalidParameterError as exc:
            message = str(exc)
            for value in self.get_params(deep=False).values():
                if _is_large(value):
                    message = message.replace(repr(value), _summary(value))
            if message == str(exc):
                raise
            raise InvalidParameterError(message) from None

    # ---------------------------------------------------------------- tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    # ---------------------------------------------------------------- fit helpers
    def _validate_fit_data(self, Y, X, operator=None
                           ) -> tuple[np.ndarray, np.ndarray, LinearOperator | None]:
        """Validate ``fit(Y, X)`` and set ``A_``, ``operator_``, the prior and ``noise_var_``.

        ``operator`` holds the training pairs' own operators (per-sample metadata). Returns
        ``(Y, X, op)`` with ``op`` the operators of the pairs (per-sample, or the fixed
        ``operator_``; ``None`` for an ensemble without them).
        """
        if X is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: "
                "fit(Y, X) needs the signals X behind the measurements Y."
            )
        self.is_complex_ = is_complex_operator(self.A) or is_complex_operator(operator)
        _check_input_form(self, Y=Y, X=X, allow_complex=self.is_complex_)
        if self.is_complex_:
            Y, X = self._validate_complex_data(Y, X, reset=True)
        else:
            X = check_array(X, dtype=np.float64, ensure_2d=False, ensure_all_finite=False,
                            input_name="X")
            _check_finite("X", X)
            Y, X = validate_data(
                self, Y, X, multi_output=True, y_numeric=True, dtype=np.float64,
                ensure_all_finite=False,
            )
            _check_finite("Y", Y)
            X = X.astype(np.float64, copy=False)
        self._target_1d = X.ndim == 1
        X2 = X.reshape(-1, 1) if X.ndim == 1 else X
        n, M, N = Y.shape[0], Y.shape[1], X2.shape[1]
        _check_scale("Y", Y)
        _check_scale("X", X2)
        try:
            fit_op = check_sample_operators(operator, n, M, N, allow_complex=self.is_complex_)
        except ValueError as exc:
            _reraise_if_swapped(exc, getattr(operator, "shape", np.shape(operator)), M, N)
            raise
        if fit_op is not None and self.A is not None and not isinstance(self.A, OperatorEnsemble):
            raise ValueError(
                "fit got per-sample operators (operator=...) and a fixed A as well; pass one or "
                "the other (A may be an operator ensemble, which the per-sample operators were "
                "drawn from).")
        if isinstance(self.A, OperatorEnsemble):
            _check_operator_shape("A", self.A.shape, M, N)
            self.A_, self.operator_ = self.A, None
        elif self.A is None and fit_op is not None:
            self.A_, self.operator_ = None, None
        elif self.A is None:
            self.A_ = estimate_sensing_matrix(Y, X2)
            self.operator_ = as_operator(self.A_)
        elif _is_dense_matrix(self.A):
            try:
                self.A_ = check_sensing_matrix(self.A, M, N, allow_complex=self.is_complex_)
            except ValueError as exc:
                _reraise_if_swapped(exc, np.shape(self.A), M, N)
                raise
            self.operator_ = as_operator(self.A_)
        else:
            try:
                self.operator_ = check_operator(self.A, M, N, allow_complex=self.is_complex_)
            except ValueError as exc:
                _reraise_if_swapped(exc, getattr(self.A, "shape", ()), M, N)
                raise
            self.A_ = self.A if isinstance(self.A, LinearOperator) else self.operator_
        fit_op = fit_op if fit_op is not None else self.operator_
        self._n_signal = N
        # The prior is fitted to X divided by its largest magnitude, then scaled back: no
        # absolute floor of the fit (1e-12 on the variance) can bite, whatever X's units.
        x_scale = _max_abs(X2) or 1.0
        prior = BernoulliGaussianPrior().fit(X2 / x_scale)
        self.sparsity_ = prior.sparsity
        self.signal_var_ = prior.var * x_scale * x_scale
        if self.noise_var == "auto":
            if fit_op is None:
                raise ValueError(
                    "noise_var='auto' estimates the noise from Y − A X, which needs the training "
                    "pairs' operators: A is an operator ensemble, so pass the operators the pairs "
                    "were measured with (fit(Y, X, operator=...)) or set noise_var.")
            X_t = torch.from_numpy(np.require(X2, requirements=["C", "W"]))
            resid = Y - fit_op.forward(X_t).numpy()
            # a floor relative to the measurements' power (noiseless pairs estimate ~0); for
            # complex data the variance is E|w|² (circularly-symmetric noise)
            floor = max(1e-10 * float(np.mean(np.abs(Y) ** 2)), float(_F64.tiny))
            self.noise_var_ = max(float(np.mean(np.abs(resid) ** 2)), floor)
        else:
            self.noise_var_ = float(self.noise_var)
        return Y, X2, fit_op

    def _validate_complex_data(self, Y, X=None, *, reset: bool):
        """Validate the data of a complex problem: complex128 arrays, finite, with scikit-learn's
        ``n_features_in_`` / ``feature_names_in_`` bookkeeping (``validate_data`` refuses
        complex input, as its estimator checks require of a default, real estimator)."""
        names_source = Y
        Y = check_complex_data("Y", Y)
        _check_n_features(self, Y, reset=reset)
        _check_feature_names(self, names_source, reset=reset)
        if X is None:
            return Y
        X = check_complex_data("X", X, ensure_2d=False)
        if X.ndim not in (1, 2):
            raise ValueError(f"X must be 2-D, of shape (n_samples, n_features), or 1-D; got "
                             f"{X.ndim}-D input of shape {X.shape}.")
        return Y, X

    def _n_signal_features(self) -> int:
        """``N``, the length of the signals (columns of the training ``X``)."""
        return self._n_signal

    # ---------------------------------------------------------------- predict helpers
    def _validate_predict_data(self, Y, operator=None) -> tuple[np.ndarray, LinearOperator]:
        """Validate ``Y`` and find the operator of each sample (given, or the fitted one)."""
        check_is_fitted(self)
        complex_problem = self._is_complex()
        _check_input_form(self, Y=Y, allow_complex=complex_problem)
        if complex_problem:
            Y = self._validate_complex_data(Y, reset=False)
        else:
            Y = validate_data(self, Y, reset=False, dtype=np.float64, ensure_all_finite=False)
            _check_finite("Y", Y)
        _check_scale("Y", Y)
        _warn_scale_mismatch(Y, self._typical_rms())
        op = check_sample_operators(operator, Y.shape[0], Y.shape[1], self._n_signal_features(),
                                    allow_complex=complex_problem)
        if op is None:
            op = self.operator_
        if op is None:
            raise ValueError(
                f"{type(self).__name__} was fitted without one fixed operator (A is an operator "
                "ensemble, or the training pairs came with their own operators): pass the "
                "operator of each sample, predict(Y, operator=...).")
        return Y, op

    def _is_complex(self) -> bool:
        """Whether the fitted problem is complex (declared by its operator at ``fit``)."""
        return bool(getattr(self, "is_complex_", False))

    def _output_dtype(self) -> type:
        """What ``predict`` returns: float64, or complex128 for a complex problem."""
        return np.complex128 if self._is_complex() else np.float64

    def _format_output(self, X_hat: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(X_hat, torch.Tensor):
            X_hat = X_hat.detach().cpu().numpy()
        X_hat = np.array(X_hat, dtype=self._output_dtype(), copy=True)
        return X_hat.ravel() if self._target_1d else X_hat

    def _chunks(self, Y: np.ndarray, op: LinearOperator):
        step = int(self.batch_size)
        for start in range(0, Y.shape[0], step):
            sl = slice(start, start + step)
            yield Y[sl], op.take(sl)

    def _data_scale(self) -> float | None:
        """The fitted ``data_scale_`` of an estimator that computes in normalised units, or None.

        When it is set, ``predict``, ``staged_predict`` and ``score`` feed ``Y / data_scale_`` to
        the solver or network and multiply every output by ``data_scale_``.
        """
        scale = getattr(self, "data_scale_", None)
        return None if scale is None else float(scale)

    def _write_block(self, out: np.ndarray, start: int, x, Y: np.ndarray, scale: float | None
                     ) -> int:
        """Write one chunk's estimate ``x`` into ``out[start:]`` (scaled back), checking it is finite.

        Returns the number of rows written.
        """
        dtype = str(x.dtype).replace("torch.", "")
        block = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        dest = out[start:start + block.shape[0]]
        with np.errstate(over="ignore", invalid="ignore"):
            if scale is None:
                dest[...] = block  # one pass, casting to float64
            else:
                dest[...] = block  # to float64 first: a float32 product could underflow
                dest *= scale
        total = np.sum(dest)  # one reduction: finite iff every entry is
        if not np.isfinite(total) and not np.isfinite(dest).all():
            n_bad = int((~np.isfinite(dest).reshape(dest.shape[0], -1).all(axis=1)).sum())
            seen = f"the largest |Y| seen is {_max_abs(Y):.3g}"
            train = self._typical_rms()
            if scale is not None:
                seen += f", {_max_abs(Y) / scale:.3g} times the training data's scale " \
                        f"data_scale_ = {scale:.3g}"
            elif train:
                seen += f"; the training data's measurements have a root-mean-square of about " \
                        f"{train:.3g}"
            raise ValueError(
                f"{type(self).__name__} recovered non-finite values for {n_bad} sample(s): the "
                f"measurements overflowed the computation's dtype ({dtype}; {seen}). Pass "
                "measurements in the units of the training data, or refit on data of this "
                "scale.")
        return block.shape[0]

    def _typical_rms(self) -> float | None:
        """The root-mean-square the measurements have in the units the estimator computes in.

        ``1`` for an estimator with ``data_scale_`` (it computes on ``Y / data_scale_``);
        otherwise ``√(p v ‖A‖²_F / M + σw²)`` from the fitted prior and noise (no stored copy of
        the training data); ``None`` without one fixed operator.
        """
        scale = self._data_scale()
        if scale is not None:
            return scale
        op = getattr(self, "operator_", None)
        if op is None or not hasattr(self, "signal_var_"):
            return None
        power = self.sparsity_ * self.signal_var_ * float(op.frobenius_sq()) / op.n_measurements
        return float(np.sqrt(power + self.noise_var_))

    def _report_chunk(self, index: int, n_chunks: int, n_samples: int, steps: int) -> None:
        """Hook: a progress line after each chunk (the classical estimators' ``verbose``)."""

    def predict(self, X, operator=None) -> np.ndarray:
        """Recover the signals from measurements.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_measurements)
            Measurements ``Y`` (scikit-learn's ``X``).
        operator : array-like of shape (n_samples, n_measurements, n_features) or \
                LinearOperator, optional
            The operator of each sample (per-sample metadata, routed by scikit-learn's
            metadata routing); the fitted ``operator_`` when omitted.

        Returns
        -------
        X_hat : ndarray of shape (n_samples, n_features), float64
            (``(n_samples,)`` when the training targets were 1-D; complex128 for a complex
            problem).

        Raises
        ------
        ValueError
            When the recovery is not finite (measurements so large or small that the
            computation's dtype overflowed): never returns NaN or inf silently.
        """
        Y, op = self._validate_predict_data(X, operator)
        scale = self._data_scale()
        out, start, n_iter = None, 0, 0
        iterate = self._chunk_iterator()
        n_chunks = -(-Y.shape[0] // int(self.batch_size))
        for index, (chunk, chunk_op) in enumerate(self._chunks(Y, op)):
            last, steps = None, 0
            for steps, x in enumerate(iterate(chunk if scale is None else chunk / scale,  # noqa: B007 (the last value is used after the loop)
                                              chunk_op), start=1):
                last = x
            if out is None:  # preallocate, so the output is never held twice (bounded memory)
                out = np.empty((Y.shape[0],) + tuple(last.shape[1:]), dtype=self._output_dtype())
            start += self._write_block(out, start, last, Y, scale)
            n_iter = max(n_iter, steps)
            self._report_chunk(index, n_chunks, chunk.shape[0], steps)
        self._set_n_iter(n_iter)
        return out.ravel() if self._target_1d else out

    def staged_predict(self, X, operator=None):
        """Yield the estimate after each iteration (classical) or layer (learned).

        The last value yielded equals :meth:`predict` ``(Y)``. Plots of NMSE against
        iterations or depth are one call: ``[nmse_db(X, Xt) for Xt in est.staged_predict(Y)]``.

        The samples are processed in chunks of ``batch_size``, like :meth:`predict`: every
        stage advances each chunk's solver by one iteration (the solvers resume where they
        stopped) and yields the concatenation, so beyond the yielded estimate only the
        chunks' solver states and one chunk's working memory are held, not every stage of
        every chunk. A chunk whose samples have all stopped keeps its last estimate.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_measurements)
            Measurements ``Y`` (scikit-learn's ``X``).
        operator : array-like or LinearOperator, optional
            The operator of each sample (see :meth:`predict`).

        Yields
        ------
        X_hat : ndarray of shape (n_samples, n_features)
        """
        Y, op = self._validate_predict_data(X, operator)
        scale = self._data_scale()
        iterate = self._chunk_iterator()
        gens, lasts, steps = [], [], []
        for chunk, chunk_op in self._chunks(Y, op):
            gens.append(iterate(chunk if scale is None else chunk / scale, chunk_op))
            lasts.append(None)
            steps.append(0)
        while True:
            advanced = False
            for i, gen in enumerate(gens):
                if gen is None:
                    continue
                x = next(gen, None)
                if x is None:
                    gens[i] = None
                    self._report_chunk(i, len(gens), lasts[i].shape[0], steps[i])
                else:
                    lasts[i], steps[i], advanced = x, steps[i] + 1, True
            if not advanced:
                return
            out = np.empty((Y.shape[0],) + tuple(lasts[0].shape[1:]), dtype=self._output_dtype())
            start = 0
            for x in lasts:
                start += self._write_block(out, start, x, Y, scale)
            yield out.ravel() if self._target_1d else out

    def score(self, X, y, sample_weight=None, operator=None) -> float:
        """The coefficient of determination ``R²`` of ``predict(X)`` against the signals ``y``.

        For a complex problem the squared errors are ``|·|²``
        (:func:`~sklearn_unfold.metrics.complex_r2_score`, which equals scikit-learn's
        ``r2_score`` on real data).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_measurements)
            Measurements ``Y``.
        y : array-like of shape (n_samples, n_features) or (n_samples,)
            The true signals.
        sample_weight : array-like of shape (n_samples,), optional
        operator : array-like or LinearOperator, optional
            The operator of each sample (see :meth:`predict`).

        Returns
        -------
        score : float
        """
        X_hat = self.predict(X, operator=operator)
        if self._is_complex():
            return float(complex_r2_score(check_complex_data("y", y, ensure_2d=False), X_hat,
                                          sample_weight=sample_weight))
        return float(r2_score(y, X_hat, sample_weight=sample_weight))

    def _chunk_iterator(self):
        """``(chunk, op) -> iterates``, made once per ``predict`` call (per-call preparation)."""
        return self._iterate

    def _set_n_iter(self, n_iter: int) -> None:
        """Hook: classical solvers record ``n_iter_``; learned networks have a fixed depth."""
