"""Complex signals end to end: denoisers, solvers, state evolution, networks and estimators."""

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from sklearn_unfold import (
    AMPRegressor,
    FISTARegressor,
    ISTARegressor,
    LAMPRegressor,
    LDVAMPRegressor,
    LISTARegressor,
    VAMPRegressor,
)
from sklearn_unfold.datasets import BernoulliGaussianPrior, make_compressed_sensing
from sklearn_unfold.denoisers import (
    DENOISER_PARAMS,
    MLPDenoiser,
    bg,
    bg_mse,
    bg_theta,
    default_theta,
    get_denoiser,
)
from sklearn_unfold.metrics import nmse_db, nmse_scorer
from sklearn_unfold.networks import LAMPNetwork, LDVAMPNetwork
from sklearn_unfold.networks.lista import lista_from_ista
from sklearn_unfold.operators import as_operator
from sklearn_unfold.solvers import amp_iterates, ista_iterates, vamp_iterates
from sklearn_unfold.steps import shrink
from sklearn_unfold.tuning import soft_active_rate, soft_mse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cgiid():
    """A complex giid problem at 40 dB (N = 200, M = 100): training and test pairs."""
    Y, X, A, noise_var = make_compressed_sensing("giid", 400, n_features=200,
                                                 n_measurements=100, random_state=0,
                                                 complex_valued=True, return_noise_var=True)
    Yt, Xt, _ = make_compressed_sensing("giid", 200, A=A, random_state=1, complex_valued=True)
    return {"Y": Y, "X": X, "A": A, "Yt": Yt, "Xt": Xt, "noise_var": noise_var}


# --------------------------------------------------------------------------- denoisers
def _complex_divergence_fd(fn, r, sigma, eps=1e-6):
    """½(∂Re η/∂Re r + ∂Im η/∂Im r), averaged over the entries, by central differences."""
    d_re = (fn(r + eps)[0].real - fn(r - eps)[0].real) / (2 * eps)
    d_im = (fn(r + 1j * eps)[0].imag - fn(r - 1j * eps)[0].imag) / (2 * eps)
    return (0.5 * (d_re + d_im)).mean(dim=-1, keepdim=True)


@pytest.mark.parametrize("name", sorted(DENOISER_PARAMS))
def test_complex_divergence_matches_finite_differences(name):
    g = torch.Generator().manual_seed(0)
    r = torch.randn((4, 300), generator=g, dtype=torch.complex128) * 1.5
    sigma = torch.tensor([[0.3], [0.7], [1.0], [2.0]], dtype=torch.float64)
    theta = torch.as_tensor(default_theta(name))
    fn = get_denoiser(name)
    value, dmean = fn(r, sigma, theta)
    assert value.dtype == torch.complex128 and dmean.dtype == torch.float64
    fd = _complex_divergence_fd(lambda z: fn(z, sigma, theta), r, sigma)
    np.testing.assert_allclose(dmean.numpy(), fd.numpy(), rtol=1e-6, atol=1e-8)


def test_complex_mlp_divergence_matches_finite_differences():
    torch.manual_seed(0)
    mlp = MLPDenoiser(8).double()
    for p in mlp.parameters():
        torch.nn.init.normal_(p, std=0.5)
    r = torch.randn((3, 200), dtype=torch.complex128)
    sigma = torch.tensor([[0.5], [1.0], [2.0]], dtype=torch.float64)
    with torch.no_grad():
        value, dmean = mlp(r, sigma)
        fd = _complex_divergence_fd(lambda z: mlp(z, sigma), r, sigma)
    np.testing.assert_allclose(dmean.numpy(), fd.numpy(), rtol=1e-6, atol=1e-8)
    # a gain of the modulus: the phase is kept, so rotating r rotates η(r)
    rot = torch.exp(torch.tensor(0.7j, dtype=torch.complex128))
    with torch.no_grad():
        rotated = mlp(r * rot, sigma)[0]
    np.testing.assert_allclose(rotated.numpy(), (value * rot).numpy(), atol=1e-12)


def test_complex_soft_threshold_shrinks_the_modulus_and_keeps_the_phase():
    r = torch.tensor([[3 + 4j, 0.3 - 0.4j, 0j, -2j]], dtype=torch.complex128)
    out = shrink(r, torch.tensor(1.0, dtype=torch.float64))
    expected = np.array([3 + 4j, 0, 0, -2j]) * np.array([4 / 5, 0, 0, 1 / 2])
    np.testing.assert_allclose(out.numpy()[0], expected, atol=1e-15)
    value, dmean = get_denoiser("soft")(r, torch.ones((1, 1), dtype=torch.float64),
                                        torch.tensor([1.0, 1.0], dtype=torch.float64))
    np.testing.assert_allclose(value.numpy(), out.numpy())
    # η' = 1 − λ/(2|r|) on the entries above the threshold, 0 elsewhere
    assert float(dmean) == pytest.approx(((1 - 1 / 10) + (1 - 1 / 4)) / 4)


def test_complex_bg_is_the_posterior_mean_with_its_variance_as_divergence():
    """Against Monte-Carlo: E|x − η(r)|² equals bg_mse and the mean of σ²η'(r)."""
    rng = np.random.default_rng(0)
    n, p, v, s2 = 400_000, 0.1, 2.0, 0.05
    prior = BernoulliGaussianPrior(p, v, n, complex_valued=True)
    x = prior.sample(1, random_state=0)[0]
    r = x + np.sqrt(s2 / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    value, dmean = bg(torch.as_tensor(r)[None], torch.tensor([[math.sqrt(s2)]]).double(),
                      torch.as_tensor(bg_theta(p, v)))
    mse = np.mean(np.abs(value[0].numpy() - x) ** 2)
    predicted = bg_mse(s2, p, v, complex_signals=True)[0]
    assert mse == pytest.approx(predicted, rel=0.03)
    assert float(dmean) * s2 == pytest.approx(predicted, rel=0.03)
    assert np.mean(np.abs(x) ** 2) == pytest.approx(p * v, rel=0.05)


def test_complex_soft_state_evolution_formulas_match_monte_carlo():
    rng = np.random.default_rng(1)
    n, p, v, tau2, lam = 1_000_000, 0.1, 1.0, 0.03, 1.3
    x = (rng.random(n) < p) * np.sqrt(v / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    r = x + np.sqrt(tau2 / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    value, dmean = get_denoiser("soft")(torch.as_tensor(r)[None],
                                        torch.tensor([[math.sqrt(tau2)]]).double(),
                                        torch.tensor([lam, 1.0]).double())
    mse = np.mean(np.abs(value[0].numpy() - x) ** 2)
    assert mse == pytest.approx(float(soft_mse(tau2, lam, p, v, complex_signals=True)), rel=0.01)
    assert float(dmean) == pytest.approx(
        float(soft_active_rate(tau2, lam, p, v, complex_signals=True)), rel=0.01)


# --------------------------------------------------------------------------- solvers
def test_complex_amp_follows_its_state_evolution():
    """Complex AMP-bg on a complex giid problem (N = 3000): every iteration within 0.5 dB.

    (At N = 1000 the finite-size lag of the transient reaches about 1 dB, as it does for real
    AMP at that size.)
    """
    Y, X, A, noise_var = make_compressed_sensing("giid", 40, n_features=3000,
                                                 n_measurements=1500, random_state=0,
                                                 complex_valued=True, return_noise_var=True)
    p, v, ratio = 0.1, 1.0, 0.5
    theta = torch.as_tensor(bg_theta(p, v))
    tau2 = noise_var + p * v / ratio
    with torch.no_grad():
        iterates = list(amp_iterates(torch.as_tensor(Y), A, bg, theta, max_iter=12, tol=0.0))
    for x_hat in iterates:
        predicted = 10 * math.log10(bg_mse(tau2, p, v, complex_signals=True)[0] / (p * v))
        assert nmse_db(X, x_hat.numpy()) == pytest.approx(predicted, abs=0.5)
        tau2 = noise_var + bg_mse(tau2, p, v, complex_signals=True)[0] / ratio
    assert nmse_db(X, iterates[-1].numpy()) < -30


def test_complex_ista_solves_the_complex_lasso(cgiid):
    """The fixed point meets the complex LASSO's optimality conditions (subgradient of Σ|x_i|)."""
    Y, A = torch.as_tensor(cgiid["Yt"][:20]), torch.as_tensor(cgiid["A"])
    alpha = 0.02
    with torch.no_grad():
        *_, x = ista_iterates(Y, A, alpha, max_iter=20000, tol=1e-12, accelerated=True)
    grad = (Y - x @ A.T) @ A.conj()  # Aᴴ(y − Ax), row by row
    active = x.abs() > 1e-9
    np.testing.assert_allclose(grad[active].numpy(), (alpha * x / x.abs())[active].numpy(),
                               atol=2e-6)
    assert float(grad[~active].abs().max()) <= alpha * (1 + 1e-6)


def test_complex_vamp_matches_amp_on_giid(cgiid):
    Y, A = torch.as_tensor(cgiid["Yt"]), cgiid["A"]
    theta = torch.as_tensor(bg_theta(0.1, 1.0))
    with torch.no_grad():
        *_, xa = amp_iterates(Y, A, bg, theta, max_iter=30)
        *_, xv = vamp_iterates(Y, A, bg, theta, cgiid["noise_var"], 0.1, max_iter=30)
    assert nmse_db(cgiid["Xt"], xv.numpy()) == pytest.approx(nmse_db(cgiid["Xt"], xa.numpy()),
                                                             abs=0.3)


# --------------------------------------------------------------------------- networks at init
def test_complex_lista_at_init_is_ista(cgiid):
    Y, A = torch.as_tensor(cgiid["Yt"][:50]), cgiid["A"]
    op = as_operator(A)
    L = float(torch.linalg.matrix_norm(torch.as_tensor(A), ord=2) ** 2)
    for variant in ("lista", "cp", "alista"):
        net = lista_from_ista(A, 0.05, 5, variant=variant, dtype=torch.float64)
        with torch.no_grad():
            outs = net(Y, op)
            if variant == "alista":  # ALISTA's analytic weight is its own back-projection
                continue
            ref = list(ista_iterates(Y, A, 0.05, max_iter=5, tol=0.0, lipschitz=L))
        for got, want in zip(outs, ref, strict=True):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12)
        assert outs[-1].dtype == torch.complex128


@pytest.mark.parametrize("parameterization", ["matrix", "operator"])
def test_complex_lamp_at_init_is_amp(cgiid, parameterization):
    Y, A = torch.as_tensor(cgiid["Yt"][:50]), cgiid["A"]
    theta = bg_theta(0.1, 1.0)
    net = LAMPNetwork.from_amp(A, "bg", theta, 6, parameterization=parameterization,
                               dtype=torch.float64)
    with torch.no_grad():
        outs = net(Y, as_operator(A))
        ref = list(amp_iterates(Y, A, bg, torch.as_tensor(theta), max_iter=6, tol=0.0))
    for got, want in zip(outs, ref, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-8, atol=1e-10)


def test_complex_ldvamp_at_init_is_vamp(cgiid):
    Y, A = torch.as_tensor(cgiid["Yt"][:50]), cgiid["A"]
    theta = bg_theta(0.1, 1.0)
    net = LDVAMPNetwork.from_vamp(A, "bg", theta, cgiid["noise_var"], 0.1, 6,
                                  dtype=torch.float64)
    with torch.no_grad():
        outs = net(Y, as_operator(A))
        ref = list(vamp_iterates(Y, A, bg, torch.as_tensor(theta), cgiid["noise_var"], 0.1,
                                 max_iter=6, tol=0.0))
    for got, want in zip(outs, ref, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------- estimators
CLASSICAL = [ISTARegressor, FISTARegressor, AMPRegressor, VAMPRegressor]
LEARNED = [LISTARegressor, LAMPRegressor, LDVAMPRegressor]


def _make(cls, A, **kwargs):
    if cls in LEARNED:
        kwargs = {"n_layers": 4, "max_epochs": 2, "random_state": 0, **kwargs}
    elif cls in (ISTARegressor, FISTARegressor):  # within 0.5 dB of the LASSO solution
        kwargs = {"max_iter": 1500 if cls is ISTARegressor else 300, **kwargs}
    return cls(A=A, **kwargs)


@pytest.mark.parametrize("cls", CLASSICAL + LEARNED, ids=lambda c: c.__name__)
def test_every_estimator_recovers_a_complex_sparse_signal(cls, cgiid):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = _make(cls, cgiid["A"]).fit(cgiid["Y"], cgiid["X"])
        X_hat = est.predict(cgiid["Yt"])
    assert est.is_complex_ and X_hat.dtype == np.complex128
    assert X_hat.shape == cgiid["Xt"].shape
    # the zero estimate is at 0 dB; discarding the imaginary part alone costs 3 dB
    error = nmse_db(cgiid["Xt"], X_hat)
    assert error < -10
    assert nmse_db(cgiid["Xt"], X_hat.real) > -3.5
    # R² with squared moduli, per signal entry, averaged over the entries
    Xt = cgiid["Xt"]
    per_entry = 1 - (np.sum(np.abs(X_hat - Xt) ** 2, axis=0)
                     / np.sum(np.abs(Xt - Xt.mean(axis=0)) ** 2, axis=0))
    r2 = est.score(cgiid["Yt"], Xt)
    assert r2 == pytest.approx(per_entry.mean(), rel=1e-10)
    assert 0.8 < r2 <= 1.0


@pytest.mark.parametrize("cls", CLASSICAL + LEARNED, ids=lambda c: c.__name__)
def test_complex_input_is_refused_where_the_problem_is_real(cls, cgiid):
    Y, X, A = make_compressed_sensing("giid", 40, n_features=30, n_measurements=15,
                                      random_state=0)
    with pytest.raises(ValueError, match=r"Y is complex \(complex128\): Complex data not "
                                         r"supported for a real problem"):
        _make(cls, A).fit(Y + 1j, X)
    with pytest.raises(ValueError, match=r"X is complex.*Complex data not supported"):
        _make(cls, A).fit(Y, X * 1j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = _make(cls, A, **({"max_epochs": 0.1} if cls in LEARNED else {})).fit(Y, X)
    assert not est.is_complex_
    with pytest.raises(ValueError, match=r"Complex data not supported"):
        est.predict(Y * (1 + 1j))


def test_complex_problem_refuses_bad_complex_input(cgiid):
    est = AMPRegressor(A=cgiid["A"])
    Y = cgiid["Y"].copy()
    Y[3, 4] = np.nan + 1j
    with pytest.raises(ValueError, match=r"Y contains NaN or inf: 1 NaN"):
        est.fit(Y, cgiid["X"])
    with pytest.raises(ValueError, match=r"X has 199 columns \(signal entries\) but A has "
                                         r"shape \(100, 200\)"):
        est.fit(cgiid["Y"], cgiid["X"][:, :199])
    est.fit(cgiid["Y"], cgiid["X"])
    with pytest.raises(ValueError, match=r"Y has shape \(5, 99\): 99 measurement columns"):
        est.predict(cgiid["Yt"][:5, :99])


def test_real_data_on_a_complex_problem_is_cast(cgiid):
    """Real measurements of a complex problem are complex numbers with zero imaginary part."""
    est = VAMPRegressor(A=cgiid["A"], max_iter=20).fit(cgiid["Y"], cgiid["X"])
    Y = cgiid["Yt"][:10]
    np.testing.assert_allclose(est.predict(Y.real), est.predict(Y.real + 0j))


def test_complex_estimators_clone_pickle_and_grid_search(cgiid):
    est = LAMPRegressor(A=cgiid["A"], n_layers=3, max_epochs=1, random_state=0)
    search = GridSearchCV(est, {"n_layers": [2, 3]}, cv=2, scoring=nmse_scorer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(cgiid["Y"], cgiid["X"])
    assert search.best_params_["n_layers"] in (2, 3)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.cv_results_["mean_test_score"].max() > 10  # a negated NMSE in dB
    best = search.best_estimator_
    again = pickle.loads(pickle.dumps(best))
    np.testing.assert_array_equal(again.predict(cgiid["Yt"]), best.predict(cgiid["Yt"]))
    cloned = clone(best)
    assert not hasattr(cloned, "is_complex_")
    np.testing.assert_array_equal(cloned.get_params()["A"], cgiid["A"])


def test_complex_prior_fit_and_sample():
    prior = BernoulliGaussianPrior(0.2, 3.0, 400, complex_valued=True)
    X = prior.sample(500, random_state=0)
    assert X.dtype == np.complex128
    fitted = BernoulliGaussianPrior().fit(X)
    assert fitted.complex_valued
    assert fitted.sparsity == pytest.approx(0.2, rel=0.02)
    assert fitted.var == pytest.approx(3.0, rel=0.02)
    # real and imaginary parts share the support and the power
    assert np.mean(X.real**2) == pytest.approx(np.mean(X.imag**2), rel=0.05)
    g = torch.Generator().manual_seed(0)
    T = prior.sample_tensor(500, generator=g, dtype=torch.float32)
    assert T.dtype == torch.complex64
    assert float((T.abs() ** 2).mean()) == pytest.approx(0.6, rel=0.05)


def test_complex_alista_weight_is_normalised_and_least_coherent(cgiid):
    from sklearn_unfold.networks.lista import analytic_weight, pseudo_inverse_weight

    A = torch.as_tensor(cgiid["A"])
    W = analytic_weight(A)
    gram = W.mH @ A
    np.testing.assert_allclose(torch.diagonal(gram).numpy(), np.ones(A.shape[1]), atol=1e-10)
    # a small perturbation that keeps the normalisation never lowers the coherence
    off = (gram - torch.diag(torch.diagonal(gram))).abs().square().sum()
    g = torch.Generator().manual_seed(0)
    D = 1e-3 * torch.randn(W.shape, generator=g, dtype=torch.complex128)
    W2 = W + D
    W2 = W2 / (W2.conj() * A).sum(dim=0, keepdim=True).conj()
    gram2 = W2.mH @ A
    assert float((gram2 - torch.diag(torch.diagonal(gram2))).abs().square().sum()) >= float(off)
    # the pseudo-inverse back-projection: A A⁺ ≈ I on the row space
    B = pseudo_inverse_weight(A, ridge=1e-12)
    np.testing.assert_allclose((A @ B).numpy(), np.eye(A.shape[0]), atol=1e-8)
