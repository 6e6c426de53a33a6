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

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ..datasets import BernoulliGaussianPrior
from ..operators import LinearOperator, as_operator
from ..operators.ensembles import OperatorEnsemble

_RIDGE = 1e-8


def check_sensing_matrix(A, n_measurements: int | None = None, n_features: int | None = None
                         ) -> np.ndarray:
    """Validate a user-given sensing matrix and return it as a float64 array.

    Raises a ``ValueError`` that names ``A`` and the shapes seen when it is not 2-D, holds NaN or
    inf, has an all-zero column, or does not match the data's widths.
    """
    if isinstance(A, torch.Tensor):
        A = A.detach().cpu().numpy()
    if np.iscomplexobj(A):
        raise ValueError(f"A is complex ({np.asarray(A).dtype}): Complex data not supported; "
                         "complex-valued operators are not supported yet.")
    if not sp.issparse(A) and np.ndim(A) == 3:
        raise ValueError(
            f"A has shape {np.shape(A)}: a batch of per-sample operators. The constructor's A is "
            "one operator for every sample; pass per-sample operators to fit/predict as "
            "operator=..., or an operator ensemble as A.")
    if not sp.issparse(A) and np.ndim(A) != 2:
        raise ValueError(f"A must be a 2-D array of shape (n_measurements, n_features); got "
                         f"{np.ndim(A)}-D input of shape {np.shape(A)}.")
    A = check_array(A, dtype=np.float64, input_name="A", ensure_min_samples=1,
                    ensure_all_finite=False)
    _check_finite("A", A)
    if n_measurements is not None and A.shape[0] != n_measurements:
        raise ValueError(
            f"Y has {n_measurements} columns (measurements) but A has shape {A.shape}: "
            f"A must have {n_measurements} rows."
        )
    if n_features is not None and A.shape[1] != n_features:
        raise ValueError(
            f"X has {n_features} columns (signal entries) but A has shape {A.shape}: "
            f"A must have {n_features} columns."
        )
    zero_cols = np.flatnonzero(~np.any(A != 0, axis=0))
    if zero_cols.size:
        raise ValueError(
            f"A has {zero_cols.size} all-zero column(s) (first: {zero_cols[:5].tolist()}); "
            "those signal entries are unobservable."
        )
    return A


def estimate_sensing_matrix(Y: np.ndarray, X: np.ndarray) -> np.ndarray:
    r"""Ridge least-squares estimate of ``A`` from pairs: ``Aᵀ = (XᵀX + λI)⁻¹ XᵀY``.

    ``λ`` is ``1e-8`` times the mean diagonal of ``XᵀX``, enough to keep the solve well posed
    when a signal entry is never active in the training set.
    """
    gram = X.T @ X
    lam = _RIDGE * max(float(np.trace(gram)) / max(gram.shape[0], 1), 1e-300)
    gram[np.diag_indices_from(gram)] += lam
    return np.linalg.solve(gram, X.T @ Y).T


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
        _check_input_form(self, Y=Y, X=X)
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
        fit_op = check_sample_operators(operator, n, M, N)
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
            self.A_ = check_sensing_matrix(self.A, M, N)
            self.operator_ = as_operator(self.A_)
        else:
            self.operator_ = check_operator(self.A, M, N)
            self.A_ = self.A if isinstance(self.A, LinearOperator) else self.operator_
        fit_op = fit_op if fit_op is not None else self.operator_
        self._n_signal = N
        prior = BernoulliGaussianPrior().fit(X2)
        self.sparsity_ = prior.sparsity
        self.signal_var_ = prior.var
        if self.noise_var == "auto":
            if fit_op is None:
                raise ValueError(
                    "noise_var='auto' estimates the noise from Y − A X, which needs the training "
                    "pairs' operators: A is an operator ensemble, so pass the operators the pairs "
                    "were measured with (fit(Y, X, operator=...)) or set noise_var.")
            X_t = torch.from_numpy(np.require(X2, requirements=["C", "W"]))
            resid = Y - fit_op.forward(X_t).numpy()
            floor = 1e-10 * max(float(np.mean(Y**2)), 1e-300)
            self.noise_var_ = max(float(np.mean(resid**2)), floor)
        else:
            self.noise_var_ = float(self.noise_var)
        return Y, X2, fit_op

    def _n_signal_features(self) -> int:
        """``N``, the length of the signals (columns of the training ``X``)."""
        return self._n_signal

    # ---------------------------------------------------------------- predict helpers
    def _validate_predict_data(self, Y, operator=None) -> tuple[np.ndarray, LinearOperator]:
        """Validate ``Y`` and find the operator of each sample (given, or the fitted one)."""
        check_is_fitted(self)
        _check_input_form(self, Y=Y)
        Y = validate_data(self, Y, reset=False, dtype=np.float64, ensure_all_finite=False)
        _check_finite("Y", Y)
        op = check_sample_operators(operator, Y.shape[0], Y.shape[1], self._n_signal_features())
        if op is None:
            op = self.operator_
        if op is None:
            raise ValueError(
                f"{type(self).__name__} was fitted without one fixed operator (A is an operator "
                "ensemble, or the training pairs came with their own operators): pass the "
                "operator of each sample, predict(Y, operator=...).")
        return Y, op

    def _format_output(self, X_hat: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(X_hat, torch.Tensor):
            X_hat = X_hat.detach().cpu().numpy()
        X_hat = np.array(X_hat, dtype=np.float64, copy=True)
        return X_hat.ravel() if self._target_1d else X_hat

    def _chunks(self, Y: np.ndarray, op: LinearOperator):
        step = int(self.batch_size)
        for start in range(0, Y.shape[0], step):
            sl = slice(start, start + step)
            yield Y[sl], op.take(sl)

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
            (``(n_samples,)`` when the training targets were 1-D).
        """
        Y, op = self._validate_predict_data(X, operator)
        out, start, n_iter = None, 0, 0
        iterate = self._chunk_iterator()
        for chunk, chunk_op in self._chunks(Y, op):
            last, steps = None, 0
            for steps, x in enumerate(iterate(chunk, chunk_op), start=1):  # noqa: B007 (the last value is used after the loop)
                last = x
            block = last.detach().cpu().numpy() if isinstance(last, torch.Tensor) else last
            if out is None:  # preallocate, so the output is never held twice (bounded memory)
                out = np.empty((Y.shape[0],) + block.shape[1:], dtype=np.float64)
            out[start:start + block.shape[0]] = block  # one pass, casting to float64
            start += block.shape[0]
            n_iter = max(n_iter, steps)
        self._set_n_iter(n_iter)
        return out.ravel() if self._target_1d else out

    def staged_predict(self, X, operator=None):
        """Yield the estimate after each iteration (classical) or layer (learned).

        The last value yielded equals :meth:`predict` ``(Y)``. Plots of NMSE against
        iterations or depth are one call: ``[nmse_db(X, Xt) for Xt in est.staged_predict(Y)]``.

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
        for x in self._chunk_iterator()(Y, op):
            yield self._format_output(x)

    def score(self, X, y, sample_weight=None, operator=None) -> float:
        """The coefficient of determination ``R²`` of ``predict(X)`` against the signals ``y``.

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
        return float(r2_score(y, self.predict(X, operator=operator),
                              sample_weight=sample_weight))

    def _chunk_iterator(self):
        """``(chunk, op) -> iterates``, made once per ``predict`` call (per-call preparation)."""
        return self._iterate

    def _set_n_iter(self, n_iter: int) -> None:
        """Hook: classical solvers record ``n_iter_``; learned networks have a fixed depth."""


def _is_dense_matrix(A) -> bool:
    if isinstance(A, (LinearOperator, OperatorEnsemble)) or sp.issparse(A):
        return False
    if isinstance(A, torch.Tensor):
        return True
    return (hasattr(A, "__array__") and not hasattr(A, "matvec")) or isinstance(A, (list, tuple))


def _check_operator_shape(name: str, shape, M: int, N: int) -> None:
    if tuple(shape[-2:]) != (M, N):
        raise ValueError(
            f"{name} has shape {tuple(shape)} but the data have {M} measurement(s) per sample "
            f"(columns of Y) and {N} signal entries (columns of X): {name} must map R^{N} to "
            f"R^{M}, i.e. have shape ({M}, {N}) per sample.")


def check_operator(A, n_measurements: int, n_features: int, name: str = "A") -> LinearOperator:
    """Validate a user-given shared operator (sparse, scipy or package operator) as float64."""
    op = as_operator(A, dtype=torch.float64, name=name)
    if op.per_sample:
        raise ValueError(
            f"{name} has shape {op.shape}: a batch of per-sample operators. The constructor's A "
            "is one operator for every sample; pass per-sample operators to fit/predict as "
            "operator=..., or an operator ensemble as A.")
    if op.is_complex:
        raise ValueError(f"{name} is complex ({op.dtype}): Complex data not supported; the "
                         "estimators recover real signals from real measurements (wrap a complex "
                         "operator in sklearn_unfold.operators.RealView).")
    _check_operator_shape(name, op.shape, n_measurements, n_features)
    return op


def check_sample_operators(operator, n_samples: int, n_measurements: int, n_features: int
                           ) -> LinearOperator | None:
    """Validate per-sample operators given as metadata: one per sample, of the data's shape.

    Accepts an ``(n, M, N)`` array or tensor, or a :class:`LinearOperator` (per-sample, or
    shared: then it serves every sample). Returns a float64 operator, or ``None``.
    """
    if operator is None:
        return None
    if isinstance(operator, OperatorEnsemble):
        raise TypeError("operator must hold the operators of the samples (an (n, M, N) array or "
                        "a per-sample LinearOperator), not an ensemble; draw them with "
                        "ensemble.sample(n, random_state).")
    if not isinstance(operator, LinearOperator) and not sp.issparse(operator) and not hasattr(
            operator, "matvec"):
        arr = operator.detach().cpu().numpy() if isinstance(operator, torch.Tensor) else \
            np.asarray(operator)
        if arr.ndim != 3:
            raise ValueError(
                f"operator must hold one matrix per sample, shape (n_samples, n_measurements, "
                f"n_features) = ({n_samples}, {n_measurements}, {n_features}); got "
                f"{arr.ndim}-D input of shape {arr.shape}.")
        if np.iscomplexobj(arr):
            raise ValueError(f"operator is complex ({arr.dtype}): Complex data not supported.")
        arr = np.asarray(arr, dtype=np.float64)
        _check_finite("operator", arr)
        operator = arr
    op = as_operator(operator, dtype=torch.float64, name="operator")
    if op.is_complex:
        raise ValueError(f"operator is complex ({op.dtype}): Complex data not supported; wrap it "
                         "in sklearn_unfold.operators.RealView.")
    _check_operator_shape("operator", op.shape, n_measurements, n_features)
    op.check_batch(n_samples)
    return op


def _reject_complex(**arrays) -> None:
    for name, arr in arrays.items():
        dtype = getattr(arr, "dtype", None)
        if isinstance(dtype, np.dtype) and np.issubdtype(dtype, np.complexfloating):
            raise ValueError(
                f"{name} is complex ({dtype}): Complex data not supported; "
                "complex-valued signals and measurements are not supported yet."
            )


def _shape(arr) -> tuple[int, ...]:
    """Shape of an array-like without converting arrays and frames (lists are converted)."""
    shape = getattr(arr, "shape", None)
    return tuple(shape) if shape is not None else np.asarray(arr).shape


def _check_input_form(est, Y, X=None) -> None:
    """Reject sparse, complex, wrongly shaped or empty ``Y`` / ``X`` with messages naming them.

    scikit-learn's own validation calls the measurements "X" and the signals "y"; these checks
    run first so that the messages use this package's names. Where a scikit-learn estimator
    check matches a phrase ("Reshape your data", "0 feature(s) (shape=...) while a minimum of",
    "X has k features, but ... is expecting m features as input"), the message keeps it.
    """
    arrays = {"Y": Y} if X is None else {"Y": Y, "X": X}
    for name, arr in arrays.items():
        if sp.issparse(arr):
            raise TypeError(
                f"{name} is a scipy sparse {arr.format} matrix of shape {arr.shape}: sparse input "
                f"is not supported; pass a dense array ({name}.toarray())."
            )
    _reject_complex(**arrays)
    cls = type(est).__name__
    shape_y = _shape(Y)
    if len(shape_y) != 2:
        raise ValueError(
            f"Y must be 2-D, of shape (n_samples, n_measurements); got {len(shape_y)}-D input of "
            f"shape {shape_y}. Reshape your data: Y.reshape(1, -1) for a single sample."
        )
    if shape_y[0] == 0:
        raise ValueError(
            f"Y has 0 sample(s) (shape={shape_y}) while a minimum of 1 is required by {cls}."
        )
    if shape_y[1] == 0:
        raise ValueError(
            f"Y has 0 feature(s) (shape={shape_y}) while a minimum of 1 is required."
        )
    if X is not None:
        shape_x = _shape(X)
        if len(shape_x) not in (1, 2):
            raise ValueError(
                f"X must be 2-D, of shape (n_samples, n_features), or 1-D; got "
                f"{len(shape_x)}-D input of shape {shape_x}."
            )
        if shape_x[0] != shape_y[0]:
            raise ValueError(
                f"Y has {shape_y[0]} samples (shape {shape_y}) but X has {shape_x[0]} "
                f"(shape {shape_x}); fit needs one signal row of X per measurement row of Y."
            )
    elif hasattr(est, "n_features_in_") and shape_y[1] != est.n_features_in_:
        raise ValueError(
            f"Y has shape {shape_y}: {shape_y[1]} measurement columns, but {cls} was fitted with "
            f"{est.n_features_in_} (in scikit-learn's naming: X has {shape_y[1]} features, but "
            f"{cls} is expecting {est.n_features_in_} features as input)."
        )


def _check_finite(name: str, arr: np.ndarray) -> None:
    """Raise a ``ValueError`` naming ``name`` and counting its NaN / inf entries.

    The common, all-finite case costs one reduction (no temporary of the input's size).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum()
    if np.isfinite(total):
        return
    bad = ~np.isfinite(arr)
    if not bad.any():  # the sum overflowed, the entries are finite
        return
    n_nan = int(np.isnan(arr).sum())
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"{name} contains NaN or inf: {n_nan} NaN and {int(bad.sum()) - n_nan} inf value(s) "
        f"in an array of shape {arr.shape} (first at index {first})."
    )
