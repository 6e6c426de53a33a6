"""Bad input: every estimator says clearly what is wrong, naming the argument and what it saw.

The estimators under test are every recovery estimator that :mod:`sklearn_unfold` exports, so
the learned ones join as soon as they are importable. Each bad input is one row of a table
below; the test asserts the exception type and a message naming the argument (``Y``, ``X``,
``A`` or the parameter) and the values or shapes seen. ``N_BAD_INPUTS`` counts the distinct bad
inputs tried; the inputs that must work (a single sample, int / bool arrays, DataFrames) are
checked for a correct result instead.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

import sklearn_unfold
from sklearn_unfold.estimators._base import RecoveryEstimatorBase

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

M, N, N_SAMPLES = 10, 20, 16

#: Small settings that keep every estimator fast; only the parameters an estimator has are set.
FAST_PARAMS = {
    "max_iter": 5, "n_layers": 2, "max_epochs": 1, "batch_size": 32, "training": "end_to_end",
    "alpha": 0.05, "random_state": 0, "device": "cpu",
}


def estimator_classes() -> list[type]:
    """Every recovery estimator class exported by :mod:`sklearn_unfold`."""
    classes = [getattr(sklearn_unfold, name) for name in sklearn_unfold.__all__]
    return [c for c in classes if isinstance(c, type) and issubclass(c, RecoveryEstimatorBase)]


CLASSES = estimator_classes()


def make_estimator(cls: type, **overrides):
    """An instance of ``cls`` with the fast settings (and ``overrides``) it accepts."""
    names = cls().get_params(deep=False)
    params = {k: v for k, v in FAST_PARAMS.items() if k in names}
    params.update(overrides)
    return cls(**params)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, N)) / np.sqrt(M)
    X = rng.standard_normal((N_SAMPLES, N)) * (rng.random((N_SAMPLES, N)) < 0.2)
    Y = X @ A.T + 0.01 * rng.standard_normal((N_SAMPLES, M))
    return Y, X, A


_FITTED: dict[type, object] = {}


def fitted(cls: type, data):
    """One fitted estimator per class, shared by the predict-time tests (fit is the slow part)."""
    if cls not in _FITTED:
        Y, X, A = data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITTED[cls] = make_estimator(cls, A=A).fit(Y, X)
    return _FITTED[cls]


def _with(arr: np.ndarray, value, index=(0, 0)) -> np.ndarray:
    out = np.array(arr, dtype=np.result_type(arr, type(value)))
    out[index] = value
    return out


def _nonfinite_msg(name: str, n_nan: int, n_inf: int, shape) -> str:
    return (rf"{name} contains NaN or inf: {n_nan} NaN and {n_inf} inf value\(s\) in an array "
            rf"of shape {re.escape(str(shape))}")


# --------------------------------------------------------------------------- fit(Y, X)
# id -> (make the bad (Y, X) from the good ones, exception type, message pattern)
FIT_CASES = {
    "Y-nan": (lambda Y, X: (_with(Y, np.nan), X), ValueError, _nonfinite_msg("Y", 1, 0, (16, 10))),
    "Y-inf": (lambda Y, X: (_with(Y, np.inf, (3, 4)), X), ValueError,
              _nonfinite_msg("Y", 0, 1, (16, 10)) + r" \(first at index \(3, 4\)\)"),
    "Y-neg-inf": (lambda Y, X: (_with(Y, -np.inf), X), ValueError,
                  _nonfinite_msg("Y", 0, 1, (16, 10))),
    "X-nan": (lambda Y, X: (Y, _with(X, np.nan)), ValueError, _nonfinite_msg("X", 1, 0, (16, 20))),
    "X-inf": (lambda Y, X: (Y, _with(X, np.inf)), ValueError, _nonfinite_msg("X", 0, 1, (16, 20))),
    "Y-width-vs-A-rows": (lambda Y, X: (Y[:, :5], X), ValueError,
                          r"Y has 5 columns \(measurements\) but A has shape \(10, 20\)"),
    "X-width-vs-A-cols": (lambda Y, X: (Y, X[:, :7]), ValueError,
                          r"X has 7 columns \(signal entries\) but A has shape \(10, 20\)"),
    "Y-1d": (lambda Y, X: (Y[:, 0], X), ValueError,
             r"Y must be 2-D.*got 1-D input of shape \(16,\)"),
    "Y-3d": (lambda Y, X: (Y[:, :, None], X), ValueError,
             r"Y must be 2-D.*got 3-D input of shape \(16, 10, 1\)"),
    "X-3d": (lambda Y, X: (Y, X[:, :, None]), ValueError,
             r"X must be 2-D.*got 3-D input of shape \(16, 20, 1\)"),
    "zero-samples": (lambda Y, X: (Y[:0], X[:0]), ValueError,
                     r"Y has 0 sample\(s\) \(shape=\(0, 10\)\) while a minimum of 1"),
    "zero-measurements": (lambda Y, X: (Y[:, :0], X), ValueError,
                          r"Y has 0 feature\(s\) \(shape=\(16, 0\)\)"),
    "n-samples-differ": (lambda Y, X: (Y, X[:15]), ValueError,
                         r"Y has 16 samples \(shape \(16, 10\)\) but X has 15 "
                         r"\(shape \(15, 20\)\)"),
    "Y-complex": (lambda Y, X: (Y + 1j, X), ValueError,
                  r"Y is complex \(complex128\): Complex data not supported"),
    "X-complex": (lambda Y, X: (Y, X.astype(np.complex64)), ValueError,
                  r"X is complex \(complex64\): Complex data not supported"),
    "Y-sparse": (lambda Y, X: (sp.csr_matrix(Y), X), TypeError,
                 r"Y is a scipy sparse csr matrix of shape \(16, 10\): sparse input is not"),
    "X-sparse": (lambda Y, X: (Y, sp.csc_matrix(X)), TypeError,
                 r"X is a scipy sparse csc matrix of shape \(16, 20\): sparse input is not"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_fit_rejects_bad_data(cls, case, data):
    Y, X, A = data
    bad, exc, match = FIT_CASES[case]
    Yb, Xb = bad(Y, X)
    with pytest.raises(exc, match=match):
        make_estimator(cls, A=A).fit(Yb, Xb)


# --------------------------------------------------------------------------- predict(Y)
PREDICT_CASES = {
    "Y-nan": (lambda Y: _with(Y, np.nan, (2, 1)), ValueError,
              _nonfinite_msg("Y", 1, 0, (16, 10)) + r" \(first at index \(2, 1\)\)"),
    "Y-inf": (lambda Y: _with(Y, np.inf), ValueError, _nonfinite_msg("Y", 0, 1, (16, 10))),
    "width-differs-from-fit": (lambda Y: Y[:, :7], ValueError,
                               r"Y has shape \(16, 7\): 7 measurement columns, but \w+ was "
                               r"fitted with 10"),
    "Y-1d": (lambda Y: Y[0], ValueError,
             r"Y must be 2-D.*got 1-D input of shape \(10,\)\. Reshape your data"),
    "zero-samples": (lambda Y: Y[:0], ValueError, r"Y has 0 sample\(s\) \(shape=\(0, 10\)\)"),
    "Y-complex": (lambda Y: Y * (1 + 1j), ValueError,
                  r"Y is complex \(complex128\): Complex data not supported"),
    "Y-sparse": (lambda Y: sp.coo_matrix(Y), TypeError,
                 r"Y is a scipy sparse coo matrix of shape \(16, 10\)"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_predict_rejects_bad_data(cls, case, data):
    est = fitted(cls, data)
    bad, exc, match = PREDICT_CASES[case]
    with pytest.raises(exc, match=match):
        est.predict(bad(data[0]))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_predict_rejects_renamed_dataframe_columns(cls, data):
    pd = pytest.importorskip("pandas")
    Y, X, A = data
    cols = [f"y{i}" for i in range(M)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make_estimator(cls, A=A).fit(pd.DataFrame(Y, columns=cols), X)
    renamed = pd.DataFrame(Y, columns=["z0", *cols[1:]])
    with pytest.raises(ValueError, match=r"(?s)Feature names unseen at fit time:\n- z0.*- y0"):
        est.predict(renamed)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_predict_before_fit(cls, data):
    with pytest.raises(NotFittedError, match=rf"This {cls.__name__} instance is not fitted yet"):
        make_estimator(cls, A=data[2]).predict(data[0])


# --------------------------------------------------------------------------- the operator A
def _zero_column(A):
    A = A.copy()
    A[:, 3] = 0.0
    return A


A_CASES = {
    "A-nan": (lambda A: _with(A, np.nan, (1, 2)), ValueError,
              _nonfinite_msg("A", 1, 0, (10, 20)) + r" \(first at index \(1, 2\)\)"),
    "A-inf": (lambda A: _with(A, -np.inf), ValueError, _nonfinite_msg("A", 0, 1, (10, 20))),
    "A-zero-column": (_zero_column, ValueError,
                      r"A has 1 all-zero column\(s\) \(first: \[3\]\); those signal entries"),
    "A-1d": (lambda A: A[0], ValueError, r"A must be a 2-D array.*got 1-D input of shape \(20,\)"),
    "A-sparse-wrong-shape": (lambda A: sp.csr_matrix(A[:, :-1]), ValueError,
                             r"A has shape \(10, 19\) but the data have 10 measurement\(s\)"),
    "A-per-sample": (lambda A: np.stack([A, A]), ValueError,
                     r"A has shape \(2, 10, 20\): a batch of per-sample operators"),
    "A-object": (lambda A: object(), Exception, r"A"),
}


@pytest.mark.parametrize("case", list(A_CASES))
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_bad_sensing_matrix(cls, case, data):
    Y, X, A = data
    bad, exc, match = A_CASES[case]
    with pytest.raises(exc, match=match):
        make_estimator(cls, A=bad(A)).fit(Y, X)


# --------------------------------------------------------------------------- parameters
PARAM_CASES = [
    ("max_iter", 0), ("max_iter", -3), ("n_layers", 0), ("n_layers", -1),
    ("denoiser", "gaussian"), ("noise_var", 0.0), ("noise_var", -1.5), ("noise_var", "high"),
    ("batch_size", 0),
]


@pytest.mark.parametrize("param, value", PARAM_CASES, ids=[f"{p}={v}" for p, v in PARAM_CASES])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_bad_parameter(cls, param, value, data):
    if param not in cls().get_params(deep=False):
        pytest.skip(f"{cls.__name__} has no {param!r} parameter")
    Y, X, A = data
    est = make_estimator(cls, A=A, **{param: value})
    match = rf"The '{param}' parameter of {cls.__name__} must be .* Got {re.escape(repr(value))}"
    with pytest.raises(InvalidParameterError, match=match):
        est.fit(Y, X)


def test_every_estimator_has_a_depth_parameter():
    """The ``max_iter`` / ``n_layers`` rows above apply to every iterative estimator (the
    non-iterative baselines have none)."""
    baselines = {"LinearMMSERegressor", "OMPRegressor"}
    for cls in CLASSES:
        names = cls().get_params(deep=False)
        assert ("max_iter" in names or "n_layers" in names) != (cls.__name__ in baselines), \
            cls.__name__


#: Distinct bad inputs tried (each on every estimator it applies to).
N_BAD_INPUTS = len(FIT_CASES) + len(PREDICT_CASES) + len(A_CASES) + len(PARAM_CASES) + 2


def test_count_of_bad_inputs():
    assert N_BAD_INPUTS == 42


# --------------------------------------------------------------------------- inputs that work
def _fit_predict(cls, A, Y_fit, X_fit, Y_pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_estimator(cls, A=A).fit(Y_fit, X_fit).predict(Y_pred)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_single_sample_works(cls, data):
    Y, X, A = data
    est = fitted(cls, data)
    out = est.predict(Y[:1])
    assert out.shape == (1, N) and out.dtype == np.float64 and np.isfinite(out).all()
    # a one-row batch gives the row's prediction (to float32 rounding for float32 networks)
    tol = 1e-5 if getattr(est, "dtype", "float64") == "float32" else 1e-10
    np.testing.assert_allclose(out, est.predict(Y)[:1], rtol=tol, atol=tol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = make_estimator(cls, A=A).fit(Y[:1], X[:1])
    assert one.predict(Y[:1]).shape == (1, N)


@pytest.mark.parametrize("kind", ["int64", "int32", "bool"])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_integer_and_boolean_arrays_are_converted(cls, kind, data):
    Y, X, A = data
    Yk = (np.round(Y * 20) if kind != "bool" else Y > 0).astype(kind)
    Xk = (np.round(X * 5) if kind != "bool" else X != 0).astype(kind)
    out = _fit_predict(cls, A, Yk, Xk, Yk)
    ref = _fit_predict(cls, A, Yk.astype(np.float64), Xk.astype(np.float64),
                       Yk.astype(np.float64))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_dataframes_work_and_record_feature_names(cls, data):
    pd = pytest.importorskip("pandas")
    Y, X, A = data
    cols = [f"m{i}" for i in range(M)]
    Ydf, Xdf = pd.DataFrame(Y, columns=cols), pd.DataFrame(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make_estimator(cls, A=A).fit(Ydf, Xdf)
    np.testing.assert_array_equal(est.feature_names_in_, np.array(cols, dtype=object))
    assert est.n_features_in_ == M
    out = est.predict(Ydf)
    assert isinstance(out, np.ndarray) and out.shape == (N_SAMPLES, N)
    np.testing.assert_array_equal(out, _fit_predict(cls, A, Y, X, Y))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_refit_after_refused_A(cls, data):
    """Refusing bad input leaves the estimator's parameters untouched (clone-able, refittable)."""
    Y, X, A = data
    est = make_estimator(cls, A=_zero_column(A))
    with pytest.raises(ValueError):
        est.fit(Y, X)
    est.set_params(A=A)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert clone(est).fit(Y, X).predict(Y).shape == (N_SAMPLES, N)


# ------------------------------------------------------------------ few pairs, swapped, repr
CLASSICAL = [c for c in CLASSES if c.__name__ in
             {"ISTARegressor", "FISTARegressor", "AMPRegressor", "VAMPRegressor"}]


@pytest.mark.parametrize("cls", CLASSICAL, ids=lambda c: c.__name__)
def test_estimated_A_from_too_few_pairs_warns_with_the_pairs_needed(cls, data):
    Y, X, _ = data  # 16 pairs for N = 20 signal entries
    with pytest.warns(UserWarning, match=r"estimated from the training pairs.*only 16 training "
                                         r"pair\(s\) for 20 signal entries.*At least 20 pairs") as rec:
        make_estimator(cls).fit(Y, X)
    assert any(w.filename == __file__ for w in rec if "estimated" in str(w.message))


@pytest.mark.parametrize("cls", CLASSICAL, ids=lambda c: c.__name__)
def test_estimated_A_from_rank_deficient_signals_warns(cls):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((M, N))
    X = rng.standard_normal((40, 5)) @ rng.standard_normal((5, N))  # rank 5 < 20
    with pytest.warns(UserWarning, match=r"span only 5 of the 20 dimensions"):
        make_estimator(cls).fit(X @ A.T, X)


@pytest.mark.parametrize("cls", CLASSICAL, ids=lambda c: c.__name__)
def test_estimated_A_from_all_zero_signals_raises(cls, data):
    Y, X, _ = data
    with pytest.raises(ValueError, match=r"X is all zero .*estimated from the training pairs"):
        make_estimator(cls).fit(Y, np.zeros_like(X))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_swapped_arguments_are_named_in_the_error(cls, data):
    Y, X, A = data
    with pytest.raises(ValueError, match=r"may be swapped.*fit\(Y, X\)"):
        make_estimator(cls, A=A).fit(X, Y)


@pytest.mark.parametrize("cls", CLASSICAL, ids=lambda c: c.__name__)
def test_signals_passed_to_predict_are_named_in_the_error(cls, data):
    Y, X, A = data
    est = make_estimator(cls, A=A).fit(Y, X)
    with pytest.raises(ValueError, match=r"width of the signals \(20 entries\).*not the signals"):
        est.predict(X)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_repr_and_parameter_errors_summarise_the_matrix(cls):
    A = np.random.default_rng(0).standard_normal((32, 64))
    est = cls(A=A)
    assert "A=<ndarray (32, 64) float64>" in repr(est) and len(repr(est)) < 300
    with pytest.raises(ValueError, match=r"Invalid parameter") as info:
        est.set_params(not_a_parameter=1)
    assert "<ndarray (32, 64) float64>" in str(info.value) and len(str(info.value)) < 600
    bad = cls(A=A.astype(object).reshape(32, 64, 1)[:, :, 0].tolist(), batch_size=-1)
    with pytest.raises(InvalidParameterError, match="batch_size") as info:
        bad.fit(np.zeros((4, 32)), np.zeros((4, 64)))
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_invalid_array_parameter_error_does_not_dump_the_array(cls):
    value = np.random.default_rng(0).standard_normal((32, 64))
    with pytest.raises(InvalidParameterError, match=r"noise_var.*Got <ndarray \(32, 64\) float64>"
                       ) as info:
        cls(noise_var=value).fit(np.zeros((4, 32)), np.zeros((4, 64)))
    assert len(str(info.value)) < 600
