import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklearn_unfold import AMPRegressor, nmse_db
from sklearn_unfold.datasets import make_compressed_sensing


def _bg_posterior_mean(r, s2, p, v):
    """Independent numpy Bernoulli-Gaussian posterior mean (no code shared with the package)."""
    slab = p * np.exp(-r**2 / (2 * (v + s2))) / np.sqrt(v + s2)
    spike = (1 - p) * np.exp(-r**2 / (2 * s2)) / np.sqrt(s2)
    return slab / (slab + spike) * v / (v + s2) * r


def _state_evolution(n_iter, noise_var, p, v, ratio, n_mc=400_000, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random(n_mc) < p) * rng.standard_normal(n_mc) * math.sqrt(v)
    z = rng.standard_normal(n_mc)
    tau2 = noise_var + p * v / ratio
    out = []
    for _ in range(n_iter):
        mse = np.mean((_bg_posterior_mean(x + math.sqrt(tau2) * z, tau2, p, v) - x) ** 2)
        out.append(10 * np.log10(mse / (p * v)))
        tau2 = noise_var + mse / ratio
    return np.array(out)


def test_amp_bg_follows_state_evolution():
    """State evolution is exact as N grows; at N = 4000 AMP tracks it within 1 dB per iteration.

    (At the reference size N = 500 finite-size effects delay AMP by a few iterations mid-way.)
    """
    Y, X, A, noise_var = make_compressed_sensing(
        "giid", 40, n_features=4000, n_measurements=2000, random_state=0, return_noise_var=True)
    est = AMPRegressor(A=A, max_iter=20, tol=0).fit(Y, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        curve = np.array([nmse_db(X, x) for x in est.staged_predict(Y)])
    se = _state_evolution(20, noise_var, 0.1, 1.0, 0.5)
    assert len(curve) == 20
    assert np.max(np.abs(curve - se)) <= 1.0


def test_amp_bg_reaches_minus_45_db_on_giid_by_20_iterations(giid):
    est = AMPRegressor(A=giid["A"], max_iter=20, tol=0).fit(giid["Y"], giid["X"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert nmse_db(giid["Xt"], est.predict(giid["Yt"])) <= -45.0


def test_amp_fits_the_prior_and_noise(giid):
    est = AMPRegressor(A=giid["A"]).fit(giid["Y"], giid["X"])
    assert est.sparsity_ == pytest.approx(0.1, rel=0.05)
    assert est.signal_var_ == pytest.approx(1.0, rel=0.1)
    assert est.noise_var_ == pytest.approx(giid["noise_var"], rel=0.05)


def test_amp_soft_tuned_reaches_lasso_floor_fast(giid):
    est = AMPRegressor(A=giid["A"], denoiser="soft", max_iter=60, tol=0).fit(giid["Y"], giid["X"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        curve = [nmse_db(giid["Xt"], x) for x in est.staged_predict(giid["Yt"])]
    assert -37.5 <= curve[-1] <= -36.0
    first = next(i + 1 for i, v in enumerate(curve) if v <= -35.0)
    assert 25 * 0.7 <= first <= 25 * 1.3
    assert 0.8 < est.threshold_ < 1.6


def test_amp_diverges_on_ill_conditioned_matrix_with_warning_and_no_nan(kappa15):
    est = AMPRegressor(A=kappa15["A"], max_iter=50).fit(kappa15["Y"], kappa15["X"])
    with pytest.warns(ConvergenceWarning, match="diverged"):
        X_hat = est.predict(kappa15["Yt"])
    assert np.isfinite(X_hat).all()
    # each sample is frozen at its best iterate: no worse than the zero estimate
    assert nmse_db(kappa15["Xt"], X_hat) < 1.0


def test_damping_changes_the_iterates(giid):
    Y, X = giid["Y"][:20], giid["X"][:20]
    a = AMPRegressor(A=giid["A"], max_iter=5, tol=0).fit(Y, X)
    b = AMPRegressor(A=giid["A"], max_iter=5, tol=0, damping=0.5).fit(Y, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert not np.allclose(a.predict(Y), b.predict(Y))


def test_results_do_not_depend_on_batch_composition(giid):
    est = AMPRegressor(A=giid["A"], tol=1e-5, batch_size=7).fit(giid["Y"], giid["X"])
    full = est.predict(giid["Yt"][:30])
    part = est.predict(giid["Yt"][10:20])
    np.testing.assert_allclose(part, full[10:20], rtol=1e-9, atol=1e-12)


def test_staged_predict_memory_is_bounded_by_the_chunk(giid):
    """staged_predict chunks like predict: the solver sees chunks, numpy holds one stage."""
    import tracemalloc

    from sklearn_unfold import AMPRegressor

    Y = np.tile(giid["Yt"], (4, 1))[:800]
    est = AMPRegressor(A=giid["A"], max_iter=3, tol=0, batch_size=100).fit(giid["Y"], giid["X"])
    rows = []
    solver = est._solver_iterates
    est._solver_iterates = lambda Yc, op, report: rows.append(Yc.shape[0]) or solver(Yc, op, report)
    tracemalloc.start()
    for _ in est.staged_predict(Y):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rows == [100] * 8  # one solver per chunk, resumed stage after stage
    out = Y.shape[0] * giid["A"].shape[1] * 8  # one stage's output, float64
    assert peak < 2.5 * out  # the yielded stage (+ the chunks of Y): not every stage
    del est._solver_iterates
    np.testing.assert_allclose(list(est.staged_predict(Y))[-1], est.predict(Y), rtol=1e-12)


@pytest.mark.parametrize("denoiser", ["bg", "soft"])
def test_float32_iterates_agree_with_float64(giid, denoiser):
    ref = AMPRegressor(A=giid["A"], denoiser=denoiser, max_iter=30).fit(giid["Y"], giid["X"])
    est = AMPRegressor(A=giid["A"], denoiser=denoiser, max_iter=30, dtype="float32")
    est.fit(giid["Y"], giid["X"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a, b = ref.predict(giid["Yt"]), est.predict(giid["Yt"])
    assert b.dtype == np.float64
    assert abs(nmse_db(giid["Xt"], b) - nmse_db(giid["Xt"], a)) < 0.01
