"""The estimators with operators other than one dense matrix: sparse, scipy and matrix-free
operators, per-sample operators as routed metadata, and operator ensembles."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso
from sklearn.model_selection import GridSearchCV, cross_val_score

from sklearn_unfold import (
    AMPRegressor,
    FISTARegressor,
    ISTARegressor,
    LAMPRegressor,
    LDVAMPRegressor,
    LISTARegressor,
    VAMPRegressor,
    nmse_db,
    nmse_scorer,
)
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.operators import (
    ConditionedEnsemble,
    GaussianEnsemble,
    PartialDCT,
    partial_dct_matrix,
)
from sklearn_unfold.persistence import load, save

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, M = 64, 32
FAST = {"max_epochs": 1, "n_iter_no_change": 2, "batch_size": 100, "random_state": 0}


@pytest.fixture
def routing():
    sklearn.set_config(enable_metadata_routing=True)
    yield
    sklearn.set_config(enable_metadata_routing=False)


@pytest.fixture(scope="module")
def fresh():
    """Pairs with one Gaussian matrix per sample (train and test)."""
    ens = GaussianEnsemble(M, N)
    kw = {"n_features": N, "n_measurements": M}
    Y, X, ops, noise_var = make_compressed_sensing("giid", 600, ensemble=ens, random_state=0,
                                                   return_noise_var=True, **kw)
    Yt, Xt, opt = make_compressed_sensing("giid", 300, ensemble=ens, random_state=1, **kw)
    return {"ens": ens, "Y": Y, "X": X, "ops": ops, "Yt": Yt, "Xt": Xt, "opt": opt,
            "noise_var": noise_var}


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


# ------------------------------------------------------------------ shared operators
@pytest.mark.parametrize("cls", [ISTARegressor, AMPRegressor, VAMPRegressor])
@pytest.mark.parametrize("form", ["sparse", "scipy", "matrix-free"])
def test_structured_operator_gives_the_dense_answer(cls, form):
    rows = np.sort(np.random.RandomState(0).choice(N, M, replace=False))
    A = partial_dct_matrix(M, N, random_state=0)
    op = {"sparse": sp.csr_matrix(A), "scipy": spla.aslinearoperator(A),
          "matrix-free": PartialDCT(rows, N)}[form]
    Y, X, _ = make_compressed_sensing("dct", 40, A=A, random_state=2)
    kw = {"max_iter": 30, "tol": 0}
    dense = _quiet(cls(A=A, **kw).fit(Y, X).predict, Y)
    other = _quiet(cls(A=op, **kw).fit(Y, X).predict, Y)
    np.testing.assert_allclose(other, dense, rtol=1e-6, atol=1e-8)


def test_scipy_operator_without_adjoint_is_refused_clearly():
    A = np.random.RandomState(0).standard_normal((M, N))
    op = spla.LinearOperator((M, N), matvec=lambda x: A @ x, dtype=np.float64)
    Y = np.random.RandomState(1).standard_normal((10, M))
    X = np.random.RandomState(2).standard_normal((10, N))
    with pytest.raises(ValueError, match=r"defines no adjoint \(rmatvec"):
        _quiet(AMPRegressor(A=op, max_iter=3).fit, Y, X)


def test_matrix_free_vamp_never_forms_the_matrix(monkeypatch):
    op = PartialDCT.random(512, 1024, random_state=0)

    def boom(self):
        raise AssertionError("to_dense called")

    monkeypatch.setattr(PartialDCT, "to_dense", boom)
    rng = np.random.RandomState(0)
    X = (rng.rand(8, 1024) < 0.1) * rng.standard_normal((8, 1024))
    Y = op.forward(torch.from_numpy(X)).numpy() + 1e-3 * rng.standard_normal((8, 512))
    est = _quiet(VAMPRegressor(A=op, max_iter=20, noise_var=1e-6).fit, Y, X)
    assert est.singular_values_ is None
    assert nmse_db(X, _quiet(est.predict, Y)) < -30


# ------------------------------------------------------------------ per-sample operators
@pytest.mark.parametrize("cls", [ISTARegressor, FISTARegressor, AMPRegressor, VAMPRegressor])
def test_rows_stopping_at_different_iterations_equal_each_row_alone(cls, fresh):
    max_iter = 3000 if cls in (ISTARegressor, FISTARegressor) else 60
    est = cls(A=fresh["ens"], noise_var=fresh["noise_var"], max_iter=max_iter, tol=1e-4)
    est.fit(fresh["Y"], fresh["X"], operator=fresh["ops"])
    Y, ops = fresh["Yt"][:12], fresh["opt"][:12]
    together = _quiet(est.predict, Y, operator=ops)
    per_row_iters = []
    for i in range(12):
        alone = _quiet(est.predict, Y[i:i + 1], operator=ops[i:i + 1])
        per_row_iters.append(est.n_iter_)
        np.testing.assert_allclose(alone[0], together[i], rtol=1e-10, atol=1e-12)
    assert len(set(per_row_iters)) > 1  # the rows really stopped at different iterations


def test_ista_on_each_samples_own_matrix_is_that_samples_lasso(fresh):
    alpha = 0.05
    est = ISTARegressor(A=fresh["ens"], alpha=alpha, noise_var=fresh["noise_var"],
                        max_iter=20000, tol=1e-10)
    est.fit(fresh["Y"], fresh["X"], operator=fresh["ops"])
    A = fresh["opt"].to_dense().numpy()
    out = est.predict(fresh["Yt"][:4], operator=A[:4])
    for i in range(4):
        ref = Lasso(alpha=alpha / M, fit_intercept=False, tol=1e-12, max_iter=100000).fit(
            A[i], fresh["Yt"][i]).coef_
        np.testing.assert_allclose(out[i], ref, atol=2e-5)


def test_per_sample_operator_errors(fresh):
    est = AMPRegressor(A=fresh["ens"], noise_var=fresh["noise_var"]).fit(
        fresh["Y"], fresh["X"], operator=fresh["ops"])
    with pytest.raises(ValueError, match=r"pass the operator of each sample"):
        est.predict(fresh["Yt"])
    with pytest.raises(ValueError, match=r"holds 300 per-sample operators .* batch has 5"):
        est.predict(fresh["Yt"][:5], operator=fresh["opt"])
    with pytest.raises(ValueError, match=r"operator has shape \(3, 32, 63\)"):
        est.predict(fresh["Yt"][:3], operator=np.ones((3, M, N - 1)))
    with pytest.raises(ValueError, match=r"operator must hold one matrix per sample"):
        est.predict(fresh["Yt"][:3], operator=np.ones((M, N, 2, 2)))
    with pytest.raises(ValueError, match=r"operator contains NaN"):
        est.predict(fresh["Yt"][:3], operator=np.full((3, M, N), np.nan))
    with pytest.raises(ValueError, match=r"Complex data not supported"):
        est.predict(fresh["Yt"][:3], operator=np.ones((3, M, N)) * 1j)
    with pytest.raises(TypeError, match=r"not an ensemble"):
        est.predict(fresh["Yt"][:3], operator=fresh["ens"])
    with pytest.raises(ValueError, match=r"noise_var='auto' .* needs the training pairs' operators"):
        AMPRegressor(A=fresh["ens"]).fit(fresh["Y"], fresh["X"])
    with pytest.raises(ValueError, match=r"pass one or the other"):
        AMPRegressor(A=np.ones((M, N))).fit(fresh["Y"], fresh["X"], operator=fresh["ops"])
    with pytest.raises(ValueError, match=r"gains=True learns one gain per singular value"):
        LDVAMPRegressor(A=fresh["ens"], gains=True, noise_var=fresh["noise_var"], **FAST).fit(
            fresh["Y"], fresh["X"], operator=fresh["ops"])


def test_grid_search_and_cross_validation_route_operators(fresh, routing):
    Y, X, ops = fresh["Y"][:300], fresh["X"][:300], fresh["ops"][:300]
    search = GridSearchCV(LAMPRegressor(A=fresh["ens"], n_layers=2, **FAST),
                          {"n_layers": [1, 3]}, cv=3, scoring=nmse_scorer)
    search.fit(Y, X, operator=ops)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and scores[1] > scores[0] + 3  # -NMSE: 3 layers better
    assert search.best_params_ == {"n_layers": 3}
    best = search.best_estimator_
    amp = AMPRegressor(A=fresh["ens"], max_iter=3, tol=0, noise_var=best.noise_var_).fit(
        Y, X, operator=ops)
    r2_amp = _quiet(amp.score, fresh["Yt"], fresh["Xt"], operator=fresh["opt"])
    assert best.score(fresh["Yt"], fresh["Xt"], operator=fresh["opt"]) > r2_amp - 0.01
    r2 = cross_val_score(AMPRegressor(A=fresh["ens"], noise_var=fresh["noise_var"]), Y, X,
                         params={"operator": ops}, cv=3)
    assert np.all(r2 > 0.9)


def test_ensemble_training_beats_training_on_one_matrix(fresh):
    """The common mistake: on fresh matrices, LAMP trained on one matrix collapses."""
    kw = {"n_features": N, "n_measurements": M}
    Y0, X0, A0 = make_compressed_sensing("giid", 600, random_state=0, **kw)
    fixed = LAMPRegressor(A=A0, n_layers=4, **FAST).fit(Y0, X0)
    assert fixed.parameterization_ == "matrix"
    over = LAMPRegressor(A=fresh["ens"], n_layers=4, **FAST).fit(
        fresh["Y"], fresh["X"], operator=fresh["ops"])
    assert over.parameterization_ == "operator"
    amp = AMPRegressor(A=fresh["ens"], max_iter=4, tol=0, noise_var=over.noise_var_).fit(
        fresh["Y"], fresh["X"], operator=fresh["ops"])
    Yt, Xt, opt = fresh["Yt"], fresh["Xt"], fresh["opt"]
    db_fixed = nmse_db(Xt, fixed.predict(Yt, operator=opt))
    db_over = nmse_db(Xt, over.predict(Yt, operator=opt))
    db_amp = nmse_db(Xt, _quiet(amp.predict, Yt, operator=opt))
    assert db_over < db_fixed - 5
    assert db_over <= db_amp + 0.2


@pytest.mark.parametrize("cls", [LISTARegressor, LDVAMPRegressor])
def test_other_networks_train_over_an_ensemble(cls):
    ens = ConditionedEnsemble(M, N, 5.0) if cls is LDVAMPRegressor else GaussianEnsemble(M, N)
    kw = {"n_features": N, "n_measurements": M}
    Y, X, ops, nv = make_compressed_sensing("giid", 400, ensemble=ens, random_state=0,
                                            return_noise_var=True, **kw)
    Yt, Xt, opt = make_compressed_sensing("giid", 200, ensemble=ens, random_state=1, **kw)
    est = cls(A=ens, n_layers=3, noise_var=nv, **FAST).fit(Y, X, operator=ops)
    assert est.parameterization_ == "operator"
    assert est.module_.operator_agnostic
    curve = [nmse_db(Xt, Xh) for Xh in est.staged_predict(Yt, operator=opt)]
    assert len(curve) == 3 and curve[-1] < curve[0] - 2


def test_ensemble_without_pair_operators_validates_on_fresh_draws(fresh):
    est = LAMPRegressor(A=fresh["ens"], n_layers=2, noise_var=fresh["noise_var"], **FAST)
    est.fit(fresh["Y"], fresh["X"])  # the pairs' own operators are not needed
    amp = AMPRegressor(A=fresh["ens"], max_iter=2, tol=0, noise_var=fresh["noise_var"]).fit(
        fresh["Y"], fresh["X"], operator=fresh["ops"])
    db_amp = nmse_db(fresh["Xt"], _quiet(amp.predict, fresh["Yt"], operator=fresh["opt"]))
    # it starts at AMP and keeps its best checkpoint on fresh validation draws: never worse
    assert nmse_db(fresh["Xt"], est.predict(fresh["Yt"], operator=fresh["opt"])) < db_amp + 0.05
    assert all(np.isfinite(r["val_nmse_db"]) for r in est.history_)


# ------------------------------------------------------------------ warm start
def test_warm_start_with_a_changed_operator_warns_and_starts_over():
    kw = {"n_features": N, "n_measurements": M}
    Y, X, A = make_compressed_sensing("giid", 300, random_state=0, **kw)
    Y2, X2, A2 = make_compressed_sensing("giid", 300, random_state=5, **kw)
    est = LAMPRegressor(A=A, n_layers=2, warm_start=True, **FAST).fit(Y, X)
    n_records = len(est.history_)
    est.set_params(A=A2)
    with pytest.warns(UserWarning, match=r"warm_start=True, but the previous fit .* operator"):
        est.fit(Y2, X2)
    assert len(est.history_) == n_records  # a fresh history: nothing was reused
    # unchanged operator: no warning, the history continues
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        est.set_params(n_layers=3).fit(Y2, X2)
    assert len(est.history_) > n_records


# ------------------------------------------------------------------ persistence
def test_ensemble_fitted_network_round_trips(fresh, tmp_path):
    est = LAMPRegressor(A=fresh["ens"], n_layers=2, noise_var=fresh["noise_var"], **FAST).fit(
        fresh["Y"], fresh["X"], operator=fresh["ops"])
    ref = est.predict(fresh["Yt"], operator=fresh["opt"])
    save(est, tmp_path / "m.sfu")
    for other in (load(tmp_path / "m.sfu"), pickle.loads(pickle.dumps(est))):
        np.testing.assert_array_equal(other.predict(fresh["Yt"], operator=fresh["opt"]), ref)


def test_matrix_free_fitted_solver_round_trips(tmp_path):
    op = PartialDCT.random(M, N, random_state=0)
    Y, X, _ = make_compressed_sensing("dct", 50, A=op.to_dense().numpy(), random_state=1)
    est = _quiet(VAMPRegressor(A=op, max_iter=10).fit, Y, X)
    save(est, tmp_path / "v.sfu")
    np.testing.assert_array_equal(_quiet(load(tmp_path / "v.sfu").predict, Y),
                                  _quiet(est.predict, Y))
