"""The non-iterative baselines: LinearMMSERegressor and OMPRegressor, real and complex."""

import pickle

import numpy as np
import pytest
from sklearn.linear_model import orthogonal_mp

from sklearn_unfold import LinearMMSERegressor, OMPRegressor
from sklearn_unfold.channels import make_ofdm_channel_estimation
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.metrics import nmse_db


@pytest.fixture(scope="module")
def real_problem():
    Y, X, A = make_compressed_sensing("giid", 400, n_features=60, n_measurements=30,
                                      random_state=0)
    return Y, X, A


@pytest.fixture(scope="module")
def ofdm():
    Y, X, A, noise_var = make_ofdm_channel_estimation(
        1200, n_subcarriers=256, n_taps=64, n_pilots=32, snr_db=20.0, random_state=0,
        return_noise_var=True)
    return {"Y": Y[:1000], "X": X[:1000], "Yt": Y[1000:], "Xt": X[1000:], "A": A,
            "noise_var": noise_var}


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_lmmse_is_the_closed_form(real_problem, covariance):
    Y, X, A = real_problem
    est = LinearMMSERegressor(A=A, covariance=covariance, noise_var=1e-3).fit(Y, X)
    R = np.diag(np.mean(X**2, axis=0)) if covariance == "diagonal" else X.T @ X / len(X)
    expected = (R @ A.T @ np.linalg.inv(A @ R @ A.T + 1e-3 * np.eye(30)) @ Y.T).T
    np.testing.assert_allclose(est.predict(Y), expected, rtol=1e-8, atol=1e-10)
    assert est.covariance_.shape == ((60,) if covariance == "diagonal" else (60, 60))


def test_lmmse_complex_uses_the_conjugate_transpose(ofdm):
    est = LinearMMSERegressor(A=ofdm["A"]).fit(ofdm["Y"], ofdm["X"])
    A = ofdm["A"].to_dense().numpy()
    R = np.diag(np.mean(np.abs(ofdm["X"]) ** 2, axis=0))
    G = A @ R @ A.conj().T + est.noise_var_ * np.eye(A.shape[0])
    expected = (R @ A.conj().T @ np.linalg.solve(G, ofdm["Yt"].T)).T
    X_hat = est.predict(ofdm["Yt"])
    assert X_hat.dtype == np.complex128
    np.testing.assert_allclose(X_hat, expected, rtol=1e-8, atol=1e-12)
    # the fitted noise variance is the generator's E|w|² (the pairs' residual)
    assert est.noise_var_ == pytest.approx(ofdm["noise_var"], rel=0.1)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_omp_equals_scikit_learn_on_real_data(real_problem, k):
    Y, X, A = real_problem
    est = OMPRegressor(A=A, n_nonzero_coefs=k).fit(Y, X)
    expected = orthogonal_mp(A, Y[:50].T, n_nonzero_coefs=k).T
    np.testing.assert_allclose(est.predict(Y[:50]), expected, rtol=1e-8, atol=1e-10)


def test_omp_tunes_k_on_held_out_pairs(real_problem):
    Y, X, A = real_problem
    est = OMPRegressor(A=A).fit(Y, X)
    errors = est.validation_errors_
    assert est.n_nonzero_coefs_ == int(np.argmin(errors)) + 1
    # the held-out error of the chosen k, recomputed independently on the same pairs
    Yv, Xv = Y[-40:], X[-40:]
    direct = orthogonal_mp(A, Yv.T, n_nonzero_coefs=est.n_nonzero_coefs_).T
    assert errors.min() == pytest.approx(np.sum((direct - Xv) ** 2) / np.sum(Xv**2), rel=1e-8)


def test_omp_complex_beats_lmmse_on_sparse_channels(ofdm):
    omp = OMPRegressor(A=ofdm["A"]).fit(ofdm["Y"], ofdm["X"])
    lmmse = LinearMMSERegressor(A=ofdm["A"]).fit(ofdm["Y"], ofdm["X"])
    e_omp = nmse_db(ofdm["Xt"], omp.predict(ofdm["Yt"]))
    e_lmmse = nmse_db(ofdm["Xt"], lmmse.predict(ofdm["Yt"]))
    assert omp.predict(ofdm["Yt"][:3]).dtype == np.complex128
    assert e_omp < e_lmmse - 3
    assert np.all(np.count_nonzero(omp.predict(ofdm["Yt"]), axis=1) <= omp.n_nonzero_coefs_)


def test_baselines_refuse_what_they_cannot_serve(real_problem):
    Y, X, A = real_problem
    with pytest.raises(ValueError, match=r"n_nonzero_coefs=31 exceeds min\(n_measurements, "
                                         r"n_features\) = 30"):
        OMPRegressor(A=A, n_nonzero_coefs=31).fit(Y, X)
    with pytest.raises(ValueError, match=r"per-sample operators are not supported"):
        LinearMMSERegressor().fit(Y[:5], X[:5], operator=np.stack([A] * 5))
    with pytest.raises(ValueError, match=r"Y is complex .* Complex data not supported"):
        LinearMMSERegressor(A=A).fit(Y * 1j, X)


@pytest.mark.parametrize("cls", [LinearMMSERegressor, OMPRegressor])
def test_baselines_pickle(cls, ofdm):
    est = cls(A=ofdm["A"]).fit(ofdm["Y"], ofdm["X"])
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(ofdm["Yt"]), est.predict(ofdm["Yt"]))
