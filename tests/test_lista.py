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


def _soft_np(r, theta):
    return np.sign(r) * np.maximum(np.abs(r) - theta, 0.0)


def _pinv_np(A, ridge=1e-3):
    """Aᵀ(AAᵀ + ρI)⁻¹ with ρ = ridge·tr(AAᵀ)/M, by numpy's least squares (not torch.solve)."""
    G = A @ A.T
    G = G + ridge * np.trace(G) / G.shape[0] * np.eye(G.shape[0])
    return np.linalg.lstsq(G, A, rcond=None)[0].T


def _direction_np(net, A, direction):
    """The back-projection (N, M) of a layer's direction at the start, computed in numpy."""
    return _pinv_np(A) if direction == "pseudo_inverse" else A.T / net.lipschitz


def test_pseudo_inverse_weight_matches_numpy(problem):
    _, _, A = problem
    B = pseudo_inverse_weight(torch.as_tensor(A)).numpy()
    np.testing.assert_allclose(B, _pinv_np(A), atol=1e-10)
    # A⁺ projects onto the row space: A A⁺ ≈ I (up to the small ridge).
    np.testing.assert_allclose(A @ B, np.eye(M), atol=2e-2)


@pytest.mark.parametrize("variant", ["lista", "cp", "alista"])
@pytest.mark.parametrize("t", [0, 2])
def test_calibrate_layer_takes_the_fitted_step_exactly(problem, variant, t):
    """After calibration, layer t computes soft(x_t + γ u; θ) with the reported γ, θ, where u is
    the update of the direction it kept, computed here in numpy; and the fit beats the start."""
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 4, variant=variant, dtype=torch.float64)
    with torch.no_grad():
        x = net(Y)[t - 1].numpy() if t > 0 else np.zeros(X.shape)
    gamma_start = float(net.steps[t].detach()) if variant == "alista" else 1.0
    fit = net.calibrate_layer(t, Y, X)
    if variant == "alista":
        assert fit["direction"] == "analytic"
        u = gamma_start * (Y.numpy() - x @ A.T) @ net.W_analytic.numpy().T
    else:
        assert fit["direction"] in ("matched", "pseudo_inverse")
        u = (Y.numpy() - x @ A.T) @ _direction_np(net, A, fit["direction"]).T
    assert fit["layer"] == t + 1 and fit["step"] != 1.0
    assert fit["nmse_db_after"] < fit["nmse_db_before"] - 0.5
    assert float(net.thresholds[t].detach()) == pytest.approx(fit["threshold"])
    with torch.no_grad():
        out = net(Y)[t].numpy()
    np.testing.assert_allclose(out, _soft_np(x + fit["step"] * u, fit["threshold"]), atol=1e-9)
    err = 10 * np.log10(((out - X.numpy()) ** 2).sum() / (X.numpy() ** 2).sum())
    assert err == pytest.approx(fit["nmse_db_after"], abs=1e-6)


def test_calibration_is_near_a_brute_force_grid_search(problem):
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 2, variant="cp", dtype=torch.float64)
    fit = net.calibrate_layer(0, Y, X)
    r0 = Y.numpy() @ A / net.lipschitz
    Xn = X.numpy()
    best = min(((_soft_np(g * r0, th) - Xn) ** 2).sum() / (Xn**2).sum()
               for g in np.geomspace(0.5, 16, 60) for th in np.geomspace(1e-3, 3, 60))
    assert fit["nmse_db_after"] <= 10 * np.log10(best) + 0.02


@pytest.mark.parametrize("variant", ["lista", "cp"])
def test_calibration_keeps_the_better_direction(problem, variant):
    """Each direction's best (γ, θ) on a brute-force grid, in numpy: the fit reports the one
    with the lower NMSE, and is within 0.02 dB of that direction's grid optimum."""
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 2, variant=variant, dtype=torch.float64)
    fit = net.calibrate_layer(0, Y, X)
    Xn = X.numpy()
    grid = {}
    for direction in ("matched", "pseudo_inverse"):
        r0 = Y.numpy() @ _direction_np(net, A, direction).T
        grid[direction] = 10 * np.log10(min(
            ((_soft_np(g * r0, th) - Xn) ** 2).sum() / (Xn**2).sum()
            for g in np.geomspace(0.25, 16, 60) for th in np.geomspace(1e-3, 3, 60)))
    winner = min(grid, key=grid.get)
    assert fit["direction"] == winner, (fit, grid)
    assert fit["nmse_db_after"] <= grid[winner] + 0.02


@pytest.mark.parametrize("variant", ["lista", "cp"])
def test_tied_calibration_fits_the_threshold_only(problem, variant):
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 3, variant=variant, tied=True, dtype=torch.float64)
    mats = [p.detach().clone() for p in [*net.W, *net.S, *net.B]]
    fit = net.calibrate_layer(1, Y, X)
    assert fit["step"] == 1.0 and fit["nmse_db_after"] <= fit["nmse_db_before"]
    for p, q in zip([*net.W, *net.S, *net.B], mats, strict=True):
        assert torch.equal(p, q)


def test_tied_first_layer_rescales_the_shared_step_for_every_layer(problem):
    """Tied Gregor-LeCun LISTA: the first layer's fitted γ also becomes the step of the later
    layers, x + γ(Aᵀ/L)(y − Ax), through W ← γW and S ← (1−γ)I + γS."""
    Y, X, A = problem
    net = LISTANetwork.from_ista(A, ALPHA, 3, variant="lista", tied=True, dtype=torch.float64)
    fit = net.calibrate_layer(0, Y, X)
    assert fit["step"] != 1.0
    with torch.no_grad():
        x1, x2 = (out.numpy() for out in net(Y)[:2])
    B = _direction_np(net, A, fit["direction"])
    r = x1 + fit["step"] * (Y.numpy() - x1 @ A.T) @ B.T
    np.testing.assert_allclose(x2, _soft_np(r, float(net.thresholds[1].detach())), atol=1e-9)
