import warnings

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import r2_score

from sklearn_unfold import AMPRegressor, nmse_db, nmse_scorer
from sklearn_unfold.metrics import complex_r2_score, make_nmse_scorer, nmse


def test_nmse_values():
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert nmse(X, np.zeros_like(X)) == pytest.approx(1.0)
    assert nmse_db(X, 1.1 * X) == pytest.approx(-20.0)


def test_nmse_errors():
    with pytest.raises(ValueError, match=r"same shape; got \(2,\) and \(3,\)"):
        nmse_db(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="all zeros"):
        nmse_db(np.zeros(3), np.ones(3))


def test_scorer_is_negated_nmse_db(giid):
    est = AMPRegressor(A=giid["A"], tol=1e-5).fit(giid["Y"], giid["X"])
    score = nmse_scorer(est, giid["Yt"], giid["Xt"])
    assert score == pytest.approx(-nmse_db(giid["Xt"], est.predict(giid["Yt"])))
    assert score > 40


# --------------------------------------------------------------------------- complex signals
def _legacy_nmse(X_true, X_pred) -> float:
    """The real-only implementation before complex support (float64 casts)."""
    X_true, X_pred = np.asarray(X_true, dtype=np.float64), np.asarray(X_pred, dtype=np.float64)
    return float(np.sum(np.abs(X_pred - X_true) ** 2) / float(np.sum(np.abs(X_true) ** 2)))


def _complex(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_nmse_real_inputs_are_bit_identical_to_before(rng, dtype):
    X = (10 * rng.standard_normal((7, 5))).astype(dtype)
    Xh = (10 * rng.standard_normal((7, 5))).astype(dtype)
    assert nmse(X, Xh) == _legacy_nmse(X, Xh)
    assert nmse(X.tolist(), Xh.tolist()) == _legacy_nmse(X, Xh)
    assert nmse_db(X, Xh) == float(10.0 * np.log10(_legacy_nmse(X, Xh)))


def test_nmse_counts_imaginary_parts(rng):
    X = _complex(rng, 6, 4)
    err = 0.1 * _complex(rng, 6, 4)
    expected = np.sum(np.abs(err) ** 2) / np.sum(np.abs(X) ** 2)
    assert nmse(X, X + err) == pytest.approx(expected, rel=1e-13)
    # the real part alone misses half the signal: the imaginary part is not dropped
    assert nmse(X, X.real) == pytest.approx(np.sum(X.imag**2) / np.sum(np.abs(X) ** 2), rel=1e-13)
    assert nmse(X, X) == 0.0 and nmse_db(X, X) == -3000.0
    # a purely imaginary error of 10 % is -20 dB, like a real one
    assert nmse_db(X, X * 1.1) == pytest.approx(-20.0)
    assert nmse_db(X, X + 0.1j * X) == pytest.approx(-20.0)


def test_nmse_either_argument_complex(rng):
    X = rng.standard_normal((5, 3))
    Xh = X + 0.1j * X  # a real truth, a complex estimate
    assert nmse(X, Xh) == pytest.approx(0.01)
    assert nmse(Xh, X) == pytest.approx(0.01 / 1.01)  # a complex truth, a real estimate
    assert nmse(X.astype(np.complex64), X.astype(np.complex64)) == 0.0
    # torch tensors, complex ones included, are read like arrays
    torch = pytest.importorskip("torch")
    assert nmse(torch.as_tensor(X), torch.as_tensor(Xh)) == pytest.approx(0.01)


def test_nmse_complex_errors():
    with pytest.raises(ValueError, match=r"same shape; got \(2,\) and \(3,\)"):
        nmse(np.ones(2) * 1j, np.ones(3))
    with pytest.raises(ValueError, match="all zeros"):
        nmse(np.zeros(3, dtype=complex), np.ones(3) * 1j)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, complex(1, np.nan), complex(np.inf, 0)])
@pytest.mark.parametrize("which", ["X_true", "X_pred"])
def test_nmse_refuses_non_finite_inputs(bad, which):
    good = np.ones(3, dtype=complex if isinstance(bad, complex) else float)
    broken = good.copy()
    broken[1] = bad
    args = (broken, good) if which == "X_true" else (good, broken)
    with pytest.raises(ValueError, match=rf"{which} contains NaN or infinity"):
        nmse(*args)
    with pytest.raises(ValueError, match=rf"{which} contains NaN or infinity"):
        nmse_db(*args)


class _ComplexEstimator:
    """A fitted stand-in whose ``predict`` returns complex estimates (``Y @ W``)."""

    def __init__(self, W):
        self.W = W

    def fit(self, Y, X):  # pragma: no cover - scorers never fit
        return self

    def predict(self, Y, operator=None):
        return np.asarray(Y) @ self.W


@pytest.mark.parametrize("scorer", [nmse_scorer, make_nmse_scorer()], ids=["shared", "fresh"])
def test_scorer_works_for_complex_predictions(rng, scorer):
    Y = _complex(rng, 20, 4)
    W = _complex(rng, 4, 6)
    X = Y @ W + 0.05 * _complex(rng, 20, 6)
    est = _ComplexEstimator(W)
    score = scorer(est, Y, X)
    assert score == pytest.approx(-nmse_db(X, Y @ W))
    assert score == pytest.approx(-10 * np.log10(np.sum(np.abs(Y @ W - X) ** 2) / np.sum(np.abs(X) ** 2)))
    assert 20 < score < 40
    # dropping the imaginary part of the estimate is penalised (it was silently ignored)
    est_real = _ComplexEstimator(W)
    est_real.predict = lambda Y, operator=None: (np.asarray(Y) @ W).real
    assert scorer(est_real, Y, X) < 5


# --------------------------------------------------------------------------- complex_r2_score
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(30,), (30, 1), (30, 4)], ids=["1d", "1col", "4col"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_complex_r2_equals_sklearn_exactly_on_real_inputs(rng, weighted, shape, dtype):
    y = rng.standard_normal(shape).astype(dtype)
    y_hat = (y + 0.3 * rng.standard_normal(shape)).astype(dtype)
    w = rng.random(shape[0]) + 0.1 if weighted else None
    assert complex_r2_score(y, y_hat, sample_weight=w) == r2_score(y, y_hat, sample_weight=w)
    assert complex_r2_score(y.tolist(), y_hat.tolist(), w) == r2_score(y.tolist(), y_hat.tolist(),
                                                                       sample_weight=w)
    assert type(complex_r2_score(y, y_hat, w)) is float


@pytest.mark.parametrize("weighted", [False, True])
def test_complex_r2_constant_targets_follow_sklearn(rng, weighted):
    """Per output: denominator 0 and numerator 0 -> 1.0; denominator 0, numerator > 0 -> 0.0
    (``force_finite=True``); then the uniform mean. (Integer weights: the weighted mean of a
    constant column is then exactly that constant, for sklearn as here.)"""
    w = rng.integers(1, 5, 10).astype(np.float64) if weighted else None
    y = np.column_stack([np.full(10, 2.0), np.full(10, -1.0), rng.standard_normal(10)])
    y_hat = y.copy()
    y_hat[3, 1] += 0.5  # constant column 1 mispredicted; column 0 exact; column 2 exact
    assert r2_score(y, y_hat, sample_weight=w) == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert complex_r2_score(y, y_hat, w) == r2_score(y, y_hat, sample_weight=w)
    # the same conventions with complex targets
    yc = y + 1j * np.column_stack([np.full(10, 3.0), np.full(10, 0.5), rng.standard_normal(10)])
    yc_hat = yc.copy()
    yc_hat[3, 1] += 0.5j
    assert complex_r2_score(yc, yc_hat, w) == pytest.approx(2.0 / 3)
    assert complex_r2_score(yc, yc, w) == 1.0
    assert complex_r2_score(yc[:, 0], yc_hat[:, 0] + 1e-3, w) == 0.0


def _r2_by_definition(y, y_hat, w=None):
    y, y_hat = np.asarray(y).reshape(len(y), -1), np.asarray(y_hat).reshape(len(y), -1)
    w = np.ones(len(y)) if w is None else np.asarray(w)
    mean = (w[:, None] * y).sum(0) / w.sum()
    num = (w[:, None] * np.abs(y - y_hat) ** 2).sum(0)
    den = (w[:, None] * np.abs(y - mean) ** 2).sum(0)
    return float(np.mean(1 - num / den))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(25,), (25, 3)], ids=["1d", "3col"])
def test_complex_r2_matches_its_definition(rng, weighted, shape):
    y = _complex(rng, *shape) + (1 + 2j)  # a non-zero mean, which the score removes
    y_hat = y + 0.4 * _complex(rng, *shape)
    w = rng.random(shape[0]) + 0.1 if weighted else None
    assert complex_r2_score(y, y_hat, w) == pytest.approx(_r2_by_definition(y, y_hat, w), rel=1e-12)
    # complex R² of one output = variance-weighted real R² of its (real, imaginary) parts
    for j in range(1 if len(shape) == 1 else shape[1]):
        col, col_hat = (y, y_hat) if len(shape) == 1 else (y[:, j], y_hat[:, j])
        stacked = r2_score(np.c_[col.real, col.imag], np.c_[col_hat.real, col_hat.imag],
                           sample_weight=w, multioutput="variance_weighted")
        assert complex_r2_score(col, col_hat, w) == pytest.approx(stacked, rel=1e-12)
    # real targets with complex predictions: the imaginary part is an error
    assert complex_r2_score(y.real, y.real + 0.0j) == 1.0
    assert complex_r2_score(y.real, y.real + 1j * y.imag.std()) < 1.0


def test_complex_r2_complex64_inputs(rng):
    y = _complex(rng, 40, 2).astype(np.complex64)
    y_hat = (y + 0.1 * _complex(rng, 40, 2)).astype(np.complex64)
    assert complex_r2_score(y, y_hat) == pytest.approx(_r2_by_definition(y.astype(complex), y_hat),
                                                       rel=1e-12)


def test_complex_r2_fewer_than_two_samples_is_nan_with_a_warning():
    for y in ([1.5], [1.5 + 1j]):
        with pytest.warns(UndefinedMetricWarning, match="less than two samples"):
            assert np.isnan(complex_r2_score(y, [0.5]))


def test_complex_r2_errors(rng):
    y = _complex(rng, 6, 2)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        complex_r2_score(y, y[:5])
    with pytest.raises(ValueError, match=r"different numbers of outputs \(2!=3\)"):
        complex_r2_score(y, _complex(rng, 6, 3))
    with pytest.raises(ValueError, match="must be 1-D or 2-D"):
        complex_r2_score(y[:, :, None], y[:, :, None])
    bad = y.copy()
    bad[0, 0] = complex(np.nan, 0)
    with pytest.raises(ValueError, match="y_pred contains NaN or infinity"):
        complex_r2_score(y, bad)
    with pytest.raises(ValueError, match="y_true contains NaN or infinity"):
        complex_r2_score(bad, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        complex_r2_score(y, y, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        complex_r2_score(y, y, sample_weight=[1, 1, 1, 1, 1, np.nan])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain score raises no warning
        assert complex_r2_score(y, y) == 1.0
