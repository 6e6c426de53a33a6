"""Validation of what the estimators are given: sensing matrices and operators, the form and scale
of the data, and the short summaries that stand in for large arrays in messages."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.validation import check_array

from .._warnings import user_stacklevel
from ..operators import LinearOperator, as_operator
from ..operators.ensembles import OperatorEnsemble

_RIDGE = 1e-8


_F64 = np.finfo(np.float64)


#: The magnitudes the float64 computation handles exactly: squares and sums of squares of
#: entries in this range neither underflow into subnormals nor overflow (a margin of 1e4 on
#: each side of √tiny and √max).
SCALE_RANGE = (float(np.sqrt(_F64.tiny)) * 1e4, float(np.sqrt(_F64.max)) / 1e4)


def _summary(value) -> str:
    """A one-line summary of an array-like or operator parameter: ``<ndarray (32, 64) float64>``."""
    if sp.issparse(value):
        return f"<{value.format} sparse matrix {value.shape} {value.dtype}>"
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"<{type(value).__name__} {tuple(value.shape)} {value.dtype}>"
    if isinstance(value, (list, tuple)) and value and np.ndim(value) >= 2:
        return f"<{type(value).__name__} {np.shape(value)}>"
    return repr(value)


class _Summary:
    """Stands in for a large parameter in ``repr``: prints as its one-line summary."""

    def __init__(self, value):
        self.text = _summary(value)

    def __repr__(self) -> str:
        return self.text


def _is_large(value) -> bool:
    return sp.issparse(value) or (isinstance(value, (np.ndarray, torch.Tensor))
                                  and value.ndim >= 1 and value.size > 1) or (
        isinstance(value, (list, tuple)) and len(value) > 0 and np.ndim(value) >= 2)


def is_complex_operator(A) -> bool:
    """Whether ``A`` (an array, tensor, sparse matrix, operator or ensemble) is complex: the
    problem it defines then has complex measurements and signals."""
    if A is None:
        return False
    if isinstance(A, LinearOperator):
        return A.is_complex
    if isinstance(A, OperatorEnsemble):
        return bool(getattr(A, "is_complex", False))
    if isinstance(A, torch.Tensor):
        return A.is_complex()
    dtype = getattr(A, "dtype", None)
    if dtype is not None:
        try:
            return np.issubdtype(np.dtype(dtype), np.complexfloating)
        except TypeError:
            return False
    try:
        return np.iscomplexobj(np.asarray(A))
    except Exception:  # not array-like: validated (and refused) elsewhere
        return False


def check_complex_data(name: str, arr, *, ensure_2d: bool = True) -> np.ndarray:
    """``arr`` as a C-contiguous complex128 array, checked numeric and finite.

    The complex counterpart of scikit-learn's ``check_array`` for the data of a problem declared
    complex by its operator (``check_array`` refuses complex input).
    """
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().cpu().numpy()
    out = np.asarray(arr)
    if out.dtype == object or not (np.issubdtype(out.dtype, np.number) or out.dtype == bool):
        raise ValueError(f"{name} must be numeric (real or complex); got an array of dtype "
                         f"{out.dtype}.")
    if ensure_2d and out.ndim != 2:
        raise ValueError(f"{name} must be 2-D; got {out.ndim}-D input of shape {out.shape}.")
    out = np.ascontiguousarray(out, dtype=np.complex128)
    _check_finite(name, out)
    return out


def check_sensing_matrix(A, n_measurements: int | None = None, n_features: int | None = None,
                         *, allow_complex: bool = False) -> np.ndarray:
    """Validate a user-given sensing matrix and return it as a float64 array (complex128 when
    ``allow_complex`` and ``A`` is complex).

    Raises a ``ValueError`` that names ``A`` and the shapes seen when it is not 2-D, holds NaN or
    inf, has an all-zero column, or does not match the data's widths.
    """
    if isinstance(A, torch.Tensor):
        A = A.detach().cpu().numpy()
    complex_a = np.iscomplexobj(A)
    if complex_a and not allow_complex:
        raise ValueError(f"A is complex ({np.asarray(A).dtype}): Complex data not supported "
                         "here.")
    if not sp.issparse(A) and np.ndim(A) == 3:
        raise ValueError(
            f"A has shape {np.shape(A)}: a batch of per-sample operators. The constructor's A is "
            "one operator for every sample; pass per-sample operators to fit/predict as "
            "operator=..., or an operator ensemble as A.")
    if not sp.issparse(A) and np.ndim(A) != 2:
        raise ValueError(f"A must be a 2-D array of shape (n_measurements, n_features); got "
                         f"{np.ndim(A)}-D input of shape {np.shape(A)}.")
    if complex_a:
        A = check_complex_data("A", A.toarray() if sp.issparse(A) else A)
    else:
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

    Raises a ``ValueError`` when ``X`` is all zero (nothing to estimate ``A`` from), and warns
    (``UserWarning``) when the pairs cannot determine ``A``: fewer pairs than signal entries, or
    signals spanning fewer than ``N`` dimensions. ``A`` then is determined only on the span of
    the training signals, and the recovery is unreliable.
    """
    n, N = X.shape
    gram = X.T @ X
    diag = float(np.trace(gram)) / max(N, 1)
    if not diag > 0:
        raise ValueError(
            f"X is all zero (shape {X.shape}): with A=None the sensing matrix is estimated from "
            "the training pairs by least squares, which needs signals that are not all zero. "
            "Pass A, or pairs with non-zero signals.")
    if n == 1 and N > 1:
        raise ValueError(
            f"A=None estimates the sensing matrix from the training pairs by least squares, "
            f"which is hopeless from 1 sample (one pair) for {N} signal entries: at least {N} "
            "pairs whose signals X have full rank are needed. Pass A, or more pairs.")
    eig = np.linalg.eigvalsh(gram)
    rank = int(np.sum(eig > eig[-1] * max(n, N) * _F64.eps))
    if rank < N:
        reason = (f"only {n} training pair(s) for {N} signal entries" if n < N else
                  f"the {n} training signals span only {rank} of the {N} dimensions (X has rank "
                  f"{rank}{'; some signal entries are never active' if np.any(np.diag(gram) == 0) else ''})")
        warnings.warn(
            f"A=None: the sensing matrix is estimated from the training pairs by least squares, "
            f"but {reason}: the pairs cannot determine A, and the recovery with the estimated A "
            f"is unreliable. At least {N} pairs whose signals X have rank {N} (one per signal "
            "entry) are needed; pass A if it is known.", UserWarning, stacklevel=user_stacklevel())
    gram[np.diag_indices_from(gram)] += _RIDGE * diag
    return np.linalg.solve(gram, X.T @ Y).T


def _max_abs(arr: np.ndarray) -> float:
    """``max |arr|`` in two reductions, without a temporary of the input's size (0 when empty;
    the largest modulus of a complex array)."""
    if arr.size == 0:
        return 0.0
    if np.iscomplexobj(arr):
        return float(np.abs(arr).max())
    return float(max(arr.max(), -arr.min()))


def _rms(arr: np.ndarray) -> float:
    """Root-mean-square of the entries, computed on the array divided by its largest magnitude."""
    peak = _max_abs(arr)
    if peak == 0.0:
        return 0.0
    return peak * float(np.sqrt(np.mean(np.abs(arr / peak) ** 2)))


def _check_scale(name: str, arr: np.ndarray) -> None:
    """Reject data whose magnitudes lie outside :data:`SCALE_RANGE` (the float64 arithmetic's)."""
    peak = _max_abs(arr)
    low, high = SCALE_RANGE
    if peak != 0.0 and not low <= peak <= high:
        raise ValueError(
            f"{name} has largest magnitude {peak:.3g}, outside [{low:.1e}, {high:.1e}], the "
            f"range in which the float64 computation's squares and norms neither underflow nor "
            f"overflow. Rescale the data: the estimators are scale-equivariant, so multiplying "
            "the measurements Y and the signals X by one common factor (and dividing the "
            "predictions by it) gives the same recovery.")


def _warn_scale_mismatch(Y: np.ndarray, typical_rms: float | None, factor: float = 1e6) -> None:
    """Warn when ``predict``'s measurements are ``factor`` times larger or smaller than fit's.

    The fitted prior and noise variance are in the training data's units: measurements in
    other units give a finite but meaningless recovery, which must not pass silently.
    """
    rms = _rms(Y)
    if not typical_rms or rms == 0.0:
        return
    ratio = rms / typical_rms
    if not 1.0 / factor <= ratio <= factor:
        warnings.warn(
            f"The measurements' root-mean-square ({rms:.3g}) is {ratio:.3g} times that of the "
            f"training data's measurements (about {typical_rms:.3g}): the fitted prior and noise "
            "variance are in the training data's units, so the recovery is unreliable. Pass Y "
            "in the units of the training data (the estimators are scale-equivariant: refit on "
            "rescaled pairs).", UserWarning, stacklevel=user_stacklevel())


def _reraise_if_swapped(exc: ValueError, shape, M: int, N: int) -> None:
    """Re-raise a shape error with a hint when the operator fits the data with Y and X swapped."""
    shape = tuple(shape) if shape is not None else ()
    if M != N and len(shape) >= 2 and tuple(shape[-2:]) == (N, M):
        raise ValueError(
            f"{exc} The arguments may be swapped: the operator has shape {shape}, which fits "
            f"measurements with {shape[-2]} columns and signals with {shape[-1]}; fit takes the "
            f"measurements Y first and the signals X second, fit(Y, X), and got a first argument "
            f"with {M} columns and a second with {N}.") from None


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


def check_operator(A, n_measurements: int, n_features: int, name: str = "A", *,
                   allow_complex: bool = False) -> LinearOperator:
    """Validate a user-given shared operator (sparse, scipy or package operator) as float64
    (complex128 for a complex operator, when ``allow_complex``)."""
    op = as_operator(A, dtype=torch.float64, name=name)
    if op.per_sample:
        raise ValueError(
            f"{name} has shape {op.shape}: a batch of per-sample operators. The constructor's A "
            "is one operator for every sample; pass per-sample operators to fit/predict as "
            "operator=..., or an operator ensemble as A.")
    if op.is_complex and not allow_complex:
        raise ValueError(f"{name} is complex ({op.dtype}): Complex data not supported here.")
    _check_operator_shape(name, op.shape, n_measurements, n_features)
    return op


def check_sample_operators(operator, n_samples: int, n_measurements: int, n_features: int,
                           *, allow_complex: bool = False) -> LinearOperator | None:
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
        if np.iscomplexobj(arr) and not allow_complex:
            raise ValueError(f"operator is complex ({arr.dtype}): Complex data not supported: "
                             "this estimator was fitted to a real problem (a complex problem is "
                             "declared by a complex A, or complex operators passed to fit).")
        arr = np.asarray(arr, dtype=np.complex128 if np.iscomplexobj(arr) else np.float64)
        _check_finite("operator", arr)
        operator = arr
    op = as_operator(operator, dtype=torch.float64, name="operator")
    if op.is_complex and not allow_complex:
        raise ValueError(f"operator is complex ({op.dtype}): Complex data not supported: this "
                         "estimator was fitted to a real problem (a complex problem is declared "
                         "by a complex A, or complex operators passed to fit).")
    _check_operator_shape("operator", op.shape, n_measurements, n_features)
    op.check_batch(n_samples)
    return op


def _reject_complex(**arrays) -> None:
    for name, arr in arrays.items():
        dtype = getattr(arr, "dtype", None)
        if isinstance(dtype, torch.dtype):
            dtype = np.dtype(np.complex128) if dtype.is_complex else None
        if isinstance(dtype, np.dtype) and np.issubdtype(dtype, np.complexfloating):
            raise ValueError(
                f"{name} is complex ({dtype}): Complex data not supported for a real problem. "
                "A problem is complex when its sensing operator is: pass a complex A (a complex "
                "matrix, operator or operator ensemble), or complex operators to fit."
            )


def _shape(arr) -> tuple[int, ...]:
    """Shape of an array-like without converting arrays and frames (lists are converted)."""
    shape = getattr(arr, "shape", None)
    return tuple(shape) if shape is not None else np.asarray(arr).shape


def _check_input_form(est, Y, X=None, *, allow_complex: bool = False) -> None:
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
    if not allow_complex:
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
        n_signal = getattr(est, "_n_signal", None)
        hint = (f" It has the width of the signals ({n_signal} entries): predict takes the "
                "measurements Y, not the signals; in fit the order may have been swapped "
                "(fit takes the measurements Y first and the signals X second)."
                if shape_y[1] == n_signal else "")
        raise ValueError(
            f"Y has shape {shape_y}: {shape_y[1]} measurement columns, but {cls} was fitted with "
            f"{est.n_features_in_} (in scikit-learn's naming: X has {shape_y[1]} features, but "
            f"{cls} is expecting {est.n_features_in_} features as input).{hint}"
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
