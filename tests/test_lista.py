"""LISTANetwork: analytic initialisation, tying, gradients, support selection, training."""

import pickle

import numpy as np
import pytest
import torch

from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.networks.lista import (
    LISTANetwork,
    analytic_weight,
    pseudo_inverse_weight,
    support_fraction,
)
from sklearn_unfold.solvers import ista_iterates
from sklearn_unfold.steps import support_mask
from sklearn_unfold.tuning import fit_step_threshold

N, M = 64, 32
ALPHA = 0.05


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem():
    Y, X, A = make_compressed_sensing("giid", 300, n_features=N, n_measurements=M,
                                      random_state=0)
    return torch.as_tensor(Y), torch.as_tensor(X), A


def _nmse_db(x_hat, X):
    return float(10 * torch.log10(((x_hat - X) ** 2).sum() / (X**2).sum()))


def _train(net, A, n_steps, lr, seed=0, batch=256):
    """Plain Adam on the final-layer NMSE, fresh Bernoulli-Gaussian signals every step."""
    gen = np.random.default_rng(seed)
    A_t = torch.as_tensor(A, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(n_steps):
        X = torch.as_tensor((gen.random((batch, N)) < 0.1) * gen.standard_normal((batch, N)),
                            dtype=torch.float32)
        Y = X @ A_t.T + 0.0045 * torch.as_tensor(gen.standard_normal((batch, M)),
                                                 dtype=torch.float32)
        loss = ((net(Y)[-1] - X) ** 2).sum() / (X**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("variant", ["lista", "cp"])
def test_init_equals_ista_iterates(problem, variant, tied):
    Y, _, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 6, variant=variant, tied=tied, dtype=torch.float64)
    outs = net(Y)
    ref = [x.clone() for x in ista_iterates(Y, torch.as_tensor(A), ALPHA, max_iter=6, tol=0.0)]
    assert len(outs) == len(ref) == 6
    for out, x in zip(outs, ref, strict=True):
        torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


def test_alista_weight_is_least_coherent(problem):
    _, _, A = problem
    A_t = torch.as_tensor(A)
    W = analytic_weight(A_t)
    gram = W.T @ A_t
    torch.testing.assert_close(torch.diagonal(gram), torch.ones(N, dtype=torch.float64))
    # the normalised matrix itself is feasible, so it cannot be less coherent
    A_norm = A_t / (A_t * A_t).sum(dim=0, keepdim=True)
    off = ~torch.eye(N, dtype=torch.bool)
    assert gram[off].norm() < (A_norm.T @ A_t)[off].norm()
    net = LISTANetwork.from_ista(A, ALPHA, 4, variant="alista", dtype=torch.float64)
    torch.testing.assert_close(net.W_analytic, W.T)
    summary = net.layer_summary()
    assert summary["step"].shape == (4,) and np.all(summary["step"] > 0)
    np.testing.assert_allclose(summary["threshold"], ALPHA * summary["step"])


@pytest.mark.parametrize("variant", ["lista", "cp"])
def test_tied_has_fewer_parameters(problem, variant):
    _, _, A = problem
    n_params = {
        tied: sum(p.numel() for p in LISTANetwork.from_ista(A, ALPHA, 5, variant=variant,
                                                            tied=tied).parameters())
        for tied in (False, True)
    }
    assert n_params[True] < n_params[False]


@pytest.mark.parametrize("support_selection", [False, True])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("variant", ["lista", "cp", "alista"])
def test_gradients_reach_every_parameter(problem, variant, tied, support_selection):
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 4, variant=variant, tied=tied,
                                 support_selection=support_selection)
    loss = sum(((x - X.float()) ** 2).mean() for x in net(Y))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("variant", ["lista", "cp", "alista"])
def test_layer_parameters_partition_the_parameters(problem, variant, tied):
    _, _, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 4, variant=variant, tied=tied)
    seen = [id(p) for t in range(4) for p in net.layer_parameters(t)]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in net.parameters()}
    if tied and variant != "alista":
        assert all(p.numel() == 1 for p in net.layer_parameters(3))
    with pytest.raises(IndexError):
        net.layer_parameters(4)


def test_n_active_and_summary(problem):
    Y, _, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 5, variant="cp", support_selection=True)
    net.n_active = 2
    assert len(net(Y)) == 2
    summary = net.layer_summary()
    assert summary["threshold"].shape == (5,)
    np.testing.assert_allclose(summary["support_frac"], [0.012, 0.024, 0.036, 0.048, 0.06])
    assert support_fraction(20) == pytest.approx(0.13)
    pickle.loads(pickle.dumps(net))
    with pytest.raises(ValueError, match="variant"):
        LISTANetwork.from_ista(A, ALPHA, 3, variant="fista")


@pytest.mark.parametrize("variant", ["lista", "cp", "alista"])
def test_support_selection_bypasses_threshold(problem, variant):
    """At init, layer 0 with support selection is the plain soft threshold except that the
    ⌈p_0 N⌉ largest entries of its input pass unthresholded."""
    Y, _, A = problem
    plain = LISTANetwork.from_ista(A, 5 * ALPHA, 3, variant=variant, dtype=torch.float64)
    ss = LISTANetwork.from_ista(A, 5 * ALPHA, 3, variant=variant, support_selection=True,
                                dtype=torch.float64)
    x_plain, x_ss = plain(Y)[0], ss(Y)[0]
    B = plain.W[0] if variant == "lista" else (plain.B[0] if variant == "cp"
                                               else plain.steps[0] * plain.W_analytic)
    r = (Y @ B.T).detach()
    k = int(np.ceil(support_fraction(0) * N))
    top = torch.zeros_like(r, dtype=torch.bool).scatter_(1, r.abs().topk(k, dim=1).indices, True)
    torch.testing.assert_close(x_ss[top], r[top])
    torch.testing.assert_close(x_ss[~top], x_plain[~top])
    assert not torch.allclose(x_ss, x_plain)
    # later layers differ too, and the fractions grow
    assert not torch.allclose(ss(Y)[-1], plain(Y)[-1])


def test_support_mask_selects_the_largest_entries_of_each_row():
    r = torch.tensor(np.random.default_rng(3).standard_normal((7, 40)))
    mask = support_mask(r, 0.1)  # ⌈0.1 · 40⌉ = 4 per row
    order = np.argsort(-np.abs(r.numpy()), axis=1)[:, :4]
    expected = np.zeros(r.shape, dtype=bool)
    np.put_along_axis(expected, order, True, axis=1)
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert support_mask(r, 0.0) is None and support_mask(r, 0.001).sum(dim=1).eq(1).all()
    r.requires_grad_(True)
    assert not support_mask(r, 0.1).requires_grad


@pytest.mark.parametrize("variant,support_selection", [("lista", False), ("cp", True),
                                                       ("alista", True)])
def test_training_improves_on_init(problem, variant, support_selection):
    Y, X, A = problem
    torch.manual_seed(0)
    net = LISTANetwork.from_ista(A, ALPHA, 4, variant=variant,
                                 support_selection=support_selection)
    with torch.no_grad():
        before = _nmse_db(net(Y.float())[-1], X.float())
    lr = 1e-2 if variant == "alista" else 1e-3
    _train(net, A, 300, lr)
    with torch.no_grad():
        after = _nmse_db(net(Y.float())[-1], X.float())
    assert after < before - 4.0, (before, after)


def _soft_np(r, theta, gain=1.0):
    return gain * np.sign(r) * np.maximum(np.abs(r) - theta, 0.0)


def _pinv_np(A, ridge=1e-3):
    """Aᵀ(AAᵀ + ρI)⁻¹ with ρ = ridge·tr(AAᵀ)/M, in numpy: (N, M)."""
    G = A @ A.T
    return np.linalg.solve(G + ridge * np.trace(G) / len(G) * np.eye(len(G)), A).T


def test_pseudo_inverse_weight_is_the_regularised_pseudo_inverse(problem):
    _, _, A = problem
    B = pseudo_inverse_weight(torch.as_tensor(A)).numpy()
    np.testing.assert_allclose(B, _pinv_np(A), rtol=1e-10, atol=1e-12)
    exact = pseudo_inverse_weight(torch.as_tensor(A), ridge=0.0).numpy()
    np.testing.assert_allclose(exact, np.linalg.pinv(A), atol=1e-10)
    np.testing.assert_allclose(A @ exact, np.eye(M), atol=1e-10)  # full row rank: A A⁺ = I
    assert pseudo_inverse_weight(torch.as_tensor(A, dtype=torch.float32)).dtype == torch.float32


def _direction_np(net, variant, t, A):
    """The (N, M) back-projection of layer t at the start, in numpy (ALISTA: γ_t W)."""
    if variant == "alista":
        return float(net.steps[t].detach()) * net.W_analytic.numpy()
    return A.T / net.lipschitz


@pytest.mark.parametrize("variant", ["lista", "cp", "alista"])
@pytest.mark.parametrize("t", [0, 2])
def test_calibrate_layer_takes_the_fitted_step_exactly(problem, variant, t):
    """After calibration, layer t computes g·soft(x_t + γ u; θ) with the reported γ, θ, g, where
    u is the update of the reported direction (ISTA's Aᵀ/L, the pseudo-inverse, or ALISTA's),
    computed here in numpy; and the fit beats the start."""
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 4, variant=variant, dtype=torch.float64)
    with torch.no_grad():
        x = net(Y)[t - 1].numpy() if t > 0 else np.zeros(X.shape)
    B = _direction_np(net, variant, t, A)
    fit = net.calibrate_layer(t, Y, X)
    assert fit["layer"] == t + 1 and fit["step"] != 1.0
    assert fit["direction"] == ("analytic" if variant == "alista" else "pseudo_inverse")
    if fit["direction"] == "pseudo_inverse":
        B = _pinv_np(A)
    u = (Y.numpy() - x @ A.T) @ B.T
    assert fit["nmse_db_after"] < fit["nmse_db_before"] - 0.5
    assert float(net.thresholds[t].detach()) == pytest.approx(fit["threshold"])
    assert float(net.gains[t].detach()) == pytest.approx(fit["gain"])
    with torch.no_grad():
        out = net(Y)[t].numpy()
    expected = _soft_np(x + fit["step"] * u, fit["threshold"], fit["gain"])
    np.testing.assert_allclose(out, expected, atol=1e-9)
    err = 10 * np.log10(((out - X.numpy()) ** 2).sum() / (X.numpy() ** 2).sum())
    assert err == pytest.approx(fit["nmse_db_after"], abs=1e-6)


def test_calibration_is_near_a_brute_force_grid_search(problem):
    """Against a 60×60 grid over (γ, θ) in both directions, the gain in closed form."""
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 2, variant="cp", dtype=torch.float64)
    fit = net.calibrate_layer(0, Y, X)
    Xn = X.numpy()
    best = np.inf
    for B in (A.T / net.lipschitz, _pinv_np(A)):
        r0 = Y.numpy() @ B.T
        for g in np.geomspace(0.25, 16, 60):
            for th in np.geomspace(1e-3, 3, 60):
                s = _soft_np(g * r0, th)
                gain = (s * Xn).sum() / max((s * s).sum(), 1e-300)
                best = min(best, ((gain * s - Xn) ** 2).sum() / (Xn**2).sum())
    assert fit["nmse_db_after"] <= 10 * np.log10(best) + 0.02


def test_calibration_keeps_the_better_direction(problem):
    """The reported NMSE is the better of the two directions' fits, each computed on its own."""
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 2, variant="cp", dtype=torch.float64)
    fit = net.calibrate_layer(0, Y, X)
    zero = torch.zeros((Y.shape[0], N), dtype=torch.float64)
    fits = {name: fit_step_threshold(zero, Y @ torch.as_tensor(B).T, X, ALPHA / net.lipschitz,
                                     gain0=1.0)
            for name, B in (("matched", A.T / net.lipschitz), ("pseudo_inverse", _pinv_np(A)))}
    chosen = min(fits, key=lambda k: fits[k]["nmse_db_after"])
    assert fit["direction"] == chosen
    assert fit["nmse_db_after"] == pytest.approx(fits[chosen]["nmse_db_after"], abs=1e-9)
    assert fit["nmse_db_before"] == pytest.approx(fits["matched"]["nmse_db_before"], abs=1e-9)


@pytest.mark.parametrize("variant", ["lista", "cp"])
def test_tied_calibration_fits_the_threshold_and_gain_only(problem, variant):
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 3, variant=variant, tied=True, dtype=torch.float64)
    mats = [p.detach().clone() for p in [*net.W, *net.S, *net.B]]
    fit = net.calibrate_layer(1, Y, X)
    assert fit["step"] == 1.0 and fit["nmse_db_after"] <= fit["nmse_db_before"]
    assert fit["direction"] == "matched"
    for p, q in zip([*net.W, *net.S, *net.B], mats, strict=True):
        assert torch.equal(p, q)


def test_tied_first_layer_rescales_the_shared_step_for_every_layer(problem):
    """Tied Gregor-LeCun LISTA: the first layer's direction and fitted γ also become the step of
    the later layers, x + γB(y − Ax), through W ← γB and S ← I − γBA."""
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 3, variant="lista", tied=True, dtype=torch.float64)
    fit = net.calibrate_layer(0, Y, X)
    assert fit["step"] != 1.0 and fit["direction"] == "pseudo_inverse"
    with torch.no_grad():
        x1, x2 = (out.numpy() for out in net(Y)[:2])
    r = x1 + fit["step"] * (Y.numpy() - x1 @ A.T) @ _pinv_np(A).T
    np.testing.assert_allclose(
        x2, _soft_np(r, float(net.thresholds[1].detach()), float(net.gains[1].detach())),
        atol=1e-9)
