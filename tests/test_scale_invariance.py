"""Scale equivariance: the same problem in other units gives the same NMSE.

Scaling the measurements ``Y`` and the signals ``X`` by one factor ``s`` (``A`` fixed) scales
the exact solution of every estimator by ``s``: no absolute floor or clamp may change the
answer. Beyond the float64 range the estimators raise a clear ``ValueError``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sklearn_unfold import AMPRegressor, FISTARegressor, ISTARegressor, VAMPRegressor
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.metrics import nmse_db

CLASSICAL = {
    "ista": lambda A: ISTARegressor(A=A, max_iter=300),
    "fista": lambda A: FISTARegressor(A=A, max_iter=300),
    "amp": lambda A: AMPRegressor(A=A, max_iter=30),
    "vamp": lambda A: VAMPRegressor(A=A, max_iter=20),
}
SCALES = [1e-12, 1e-6, 1e6, 1e12]


@pytest.fixture(scope="module")
def problem():
    Y, X, A = make_compressed_sensing("giid", n_samples=60, n_features=60, n_measurements=30,
                                      random_state=0)
    return Y[:40], X[:40], Y[40:], X[40:], A


def _nmse_at(make, problem, s: float) -> float:
    Ytr, Xtr, Yte, Xte, A = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make(A).fit(Ytr * s, Xtr * s)
        pred = est.predict(Yte * s)
    assert np.all(np.isfinite(pred))
    return nmse_db(Xte * s, pred)


@pytest.fixture(scope="module")
def reference(problem):
    return {name: _nmse_at(make, problem, 1.0) for name, make in CLASSICAL.items()}


@pytest.mark.parametrize("s", SCALES)
@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_nmse_does_not_depend_on_the_units(name, s, problem, reference):
    assert reference[name] < -3.0  # a real recovery, not the trivial zero estimate
    assert abs(_nmse_at(CLASSICAL[name], problem, s) - reference[name]) < 0.1


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_fitted_prior_and_noise_scale_with_the_data(name, problem):
    Ytr, Xtr, _, _, A = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = CLASSICAL[name](A).fit(Ytr, Xtr)
        big = CLASSICAL[name](A).fit(Ytr * 1e-9, Xtr * 1e-9)
    assert big.sparsity_ == pytest.approx(ref.sparsity_, rel=1e-12)
    assert big.signal_var_ == pytest.approx(ref.signal_var_ * 1e-18, rel=1e-9)
    assert big.noise_var_ == pytest.approx(ref.noise_var_ * 1e-18, rel=1e-9)


@pytest.mark.parametrize("s", [1e-200, 1e200])
def test_beyond_the_float64_range_raises_a_clear_error(s, problem):
    Ytr, Xtr, _, _, A = problem
    with pytest.raises(ValueError, match=r"Y has largest magnitude .* outside .* Rescale"):
        VAMPRegressor(A=A).fit(Ytr * s, Xtr * s)
    est = VAMPRegressor(A=A, max_iter=5).fit(Ytr, Xtr)
    with pytest.raises(ValueError, match=r"Y has largest magnitude"):
        est.predict(Ytr * s)


def test_non_finite_recovery_raises_instead_of_returning_nan(problem):
    Ytr, Xtr, Yte, _, A = problem
    est = ISTARegressor(A=A, max_iter=5).fit(Ytr, Xtr)

    def broken(Y, op, warn=True):
        yield np.full((Y.shape[0], A.shape[1]), np.inf)

    est._iterate = broken
    with pytest.raises(ValueError, match=r"non-finite values for 20 sample.*overflowed the "
                                         r"computation's dtype \(float64.*root-mean-square of about"):
        est.predict(Yte)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_data_scale_is_applied_around_the_computation(problem):
    """An estimator with a fitted ``data_scale_`` computes on ``Y / data_scale_``, returns × it."""
    Ytr, Xtr, Yte, _, A = problem
    est = AMPRegressor(A=A, max_iter=10).fit(Ytr, Xtr)
    plain = est.predict(Yte)
    est.data_scale_ = 1e3  # as a learned fit on data in units of 1e3 would: it fits Y / 1e3
    np.testing.assert_allclose(est.predict(Yte * 1e3), plain * 1e3, rtol=1e-9)
    staged = list(est.staged_predict(Yte * 1e3))
    np.testing.assert_allclose(staged[-1], plain * 1e3, rtol=1e-9)


def test_measurements_in_other_units_than_the_training_data_warn(problem):
    Ytr, Xtr, Yte, _, A = problem
    est = AMPRegressor(A=A, max_iter=5).fit(Ytr, Xtr)
    with pytest.warns(UserWarning, match=r"is \d\.\d+e\+30 times that of the training") as rec:
        est.predict(Yte * 1e30)
    assert [w.filename for w in rec if "training data's" in str(w.message)] == [__file__]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        est.predict(Yte * 1e3)  # a modest change of units: no warning
    assert not [w for w in rec if "training data's" in str(w.message)]


# --------------------------------------------------------------------------- learned estimators
@pytest.fixture(scope="module")
def small_problem():
    Y, X, A = make_compressed_sensing("giid", 300, n_features=40, n_measurements=20, random_state=0)
    Yt, Xt, _ = make_compressed_sensing("giid", 100, A=A, n_features=40, n_measurements=20,
                                        random_state=1)
    return Y, X, A, Yt, Xt


@pytest.mark.parametrize("name", ["LISTARegressor", "LAMPRegressor", "LDVAMPRegressor"])
def test_learned_estimators_are_scale_invariant(small_problem, name):
    """Trained on (sY, sX) and tested on sY, the learned networks give the NMSE of s = 1 (they
    train in units where the signals' non-zeros have unit power, ``data_scale_``), from 1e-150
    to 1e12."""
    import sklearn_unfold

    Y, X, A, Yt, Xt = small_problem
    cls = getattr(sklearn_unfold, name)
    params = dict(A=A, n_layers=2, max_epochs=1, training="end_to_end", random_state=0)
    ref = scale1 = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in (1.0, 1e-150, 1e-12, 1e12):
            est = cls(**params).fit(Y * s, X * s)
            assert est.data_scale_ == pytest.approx(np.sqrt(est.signal_var_), rel=1e-12)
            scale1 = est.data_scale_ if scale1 is None else scale1
            assert est.data_scale_ == pytest.approx(s * scale1, rel=1e-9)
            db = nmse_db(Xt * s, est.predict(Yt * s))
            ref = db if ref is None else ref
            assert abs(db - ref) < 0.1, (s, db, ref)
        # measurements far outside the trained range: a clear error, not inf or NaN
        if name != "LISTARegressor":  # LISTA's soft thresholds stay finite (linear growth)
            with pytest.raises(ValueError, match="non-finite.*overflowed"):
                est.predict(Yt * 1e12 * 1e30)
