"""LISTANetwork: analytic initialisation, tying, gradients, support selection, training."""

import pickle

import numpy as np
import pytest
import torch

from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.networks.lista import (
    ALISTANetwork,
    LISTACPNetwork,
    LISTANetwork,
    analytic_weight,
    lista_from_ista,
    pseudo_inverse_weight,
    support_fraction,
)
from sklearn_unfold.operators import as_operator, gaussian_matrix
from sklearn_unfold.solvers import ista_iterates

N, M = 64, 32
ALPHA = 0.05


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem():
    Y, X, A = make_compressed_sensing("giid", 300, n_features=N, n_measurements=M,
                                      random_state=0)
    return torch.as_tensor(Y), torch.as_tensor(X), A


def _op(A, dtype=torch.float64):
    return as_operator(A, dtype=dtype)


#: The variants, and ALISTA's operator-independent form (``W = A`` of each sample's operator).
ALL_VARIANTS = ["lista", "cp", "alista", "alista-adjoint"]


def _build(A, variant, *args, **kwargs):
    """``lista_from_ista`` with ``"alista-adjoint"`` for ``variant="alista",
    operator_agnostic=True``."""
    if variant == "alista-adjoint":
        return lista_from_ista(A, *args, variant="alista", operator_agnostic=True, **kwargs)
    return lista_from_ista(A, *args, variant=variant, **kwargs)


@pytest.fixture(scope="module")
def per_sample():
    """40 samples, each measured through its own i.i.d. Gaussian matrix."""
    n = 40
    rng = np.random.RandomState(5)
    mats = np.stack([gaussian_matrix(M, N, random_state=rng) for _ in range(n)])
    X = (rng.random_sample((n, N)) < 0.1) * rng.standard_normal((n, N))
    Y = np.einsum("imn,in->im", mats, X) + 0.0045 * rng.standard_normal((n, M))
    return torch.as_tensor(Y), torch.as_tensor(X), mats


def _nmse_db(x_hat, X):
    return float(10 * torch.log10(((x_hat - X) ** 2).sum() / (X**2).sum()))


def _train(net, A, n_steps, lr, seed=0, batch=256):
    """Plain Adam on the final-layer NMSE, fresh Bernoulli-Gaussian signals every step."""
    gen = np.random.default_rng(seed)
    A_t = torch.as_tensor(A, dtype=torch.float32)
    op = _op(A_t, torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(n_steps):
        X = torch.as_tensor((gen.random((batch, N)) < 0.1) * gen.standard_normal((batch, N)),
                            dtype=torch.float32)
        Y = X @ A_t.T + 0.0045 * torch.as_tensor(gen.standard_normal((batch, M)),
                                                 dtype=torch.float32)
        loss = ((net(Y, op)[-1] - X) ** 2).sum() / (X**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("variant", ["lista", "cp"])
def test_init_equals_ista_iterates(problem, variant, tied):
    Y, _, A = problem
    net = lista_from_ista(A, ALPHA, 6, variant=variant, tied=tied, dtype=torch.float64)
    assert type(net) is {"lista": LISTANetwork, "cp": LISTACPNetwork}[variant]
    assert net.variant == variant and not net.operator_agnostic
    op = _op(A)
    outs = net(Y, op)
    ref = [x.clone() for x in ista_iterates(Y, op, ALPHA, max_iter=6, tol=0.0)]
    assert len(outs) == len(ref) == 6
    for out, x in zip(outs, ref, strict=True):
        torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


def test_gregor_lista_does_not_use_the_operator(problem):
    """W and S belong to the one A the network was built for: the operator is not read."""
    Y, _, A = problem
    net = lista_from_ista(A, ALPHA, 4, variant="lista", dtype=torch.float64)
    other = gaussian_matrix(M, N, random_state=9)
    with torch.no_grad():
        for a, b in zip(net(Y, _op(A)), net(Y, _op(other)), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("tied", [False, True])
def test_alista_adjoint_is_ista_steps_on_each_samples_own_operator(per_sample, tied):
    """ALISTA with ``W = A`` on a per-sample batch of matrices: layer t is
    ``soft(x + γ_t A_iᵀ(y_i − A_i x); θ_t)`` with sample i's own A_i, computed here in numpy, at
    initialisation (γ = 1/L, L the mean ‖A_i‖₂², θ = αγ) and with per-layer values set apart."""
    Y, _, mats = per_sample
    op = _op(mats)
    net = lista_from_ista(op, ALPHA, 5, variant="alista", operator_agnostic=True, tied=tied,
                          dtype=torch.float64)
    assert type(net) is ALISTANetwork and net.variant == "alista"
    assert net.weight == "adjoint" and net.operator_agnostic and net.W_analytic is None
    L = np.mean([np.linalg.norm(A_i, 2) ** 2 for A_i in mats])
    assert net.lipschitz == pytest.approx(L, rel=1e-9)

    def numpy_layers(steps, thresholds):
        x, outs = np.zeros((len(mats), N)), []
        for g, th in zip(steps, thresholds, strict=True):
            resid = Y.numpy() - np.einsum("imn,in->im", mats, x)
            x = _soft_np(x + g * np.einsum("imn,im->in", mats, resid), th)
            outs.append(x)
        return outs

    summary = net.layer_summary()
    np.testing.assert_allclose(summary["step"], 1.0 / L, rtol=1e-12)
    np.testing.assert_allclose(summary["threshold"], ALPHA / L, rtol=1e-12)
    with torch.no_grad():
        outs = net(Y, op)
        for out, x in zip(outs, numpy_layers(summary["step"], summary["threshold"]), strict=True):
            np.testing.assert_allclose(out.numpy(), x, rtol=0, atol=1e-12)
        for t in range(5):  # distinct per-layer steps and thresholds
            net.steps[t].mul_(1.0 + 0.3 * t)
            net.thresholds[t].mul_(2.0 - 0.2 * t)
        summary = net.layer_summary()
        outs = net(Y, op)
    for out, x in zip(outs, numpy_layers(summary["step"], summary["threshold"]), strict=True):
        np.testing.assert_allclose(out.numpy(), x, rtol=0, atol=1e-12)
    # a float32 network built from one draw's shape and a given L serves the same batch
    net32 = lista_from_ista(mats[0], ALPHA, 5, variant="alista", operator_agnostic=True,
                            lipschitz=L, tied=tied)
    with torch.no_grad():
        out32 = net32(Y.float(), _op(mats, torch.float32))[-1]
    ref = numpy_layers([1.0 / L] * 5, [ALPHA / L] * 5)[-1]
    np.testing.assert_allclose(out32.numpy(), ref, rtol=0, atol=1e-5)


def test_only_alista_has_an_operator_independent_form(problem, per_sample):
    _, _, A = problem
    _, _, mats = per_sample
    for variant in ("lista", "cp"):
        with pytest.raises(ValueError, match="only variant='alista'"):
            lista_from_ista(A, ALPHA, 2, variant=variant, operator_agnostic=True)
        # learned matrices start from one fixed matrix, not from a per-sample batch
        with pytest.raises(ValueError, match="one fixed operator"):
            lista_from_ista(mats, ALPHA, 2, variant=variant)
    with pytest.raises(ValueError, match="one fixed operator"):
        lista_from_ista(mats, ALPHA, 2, variant="alista")
    with pytest.raises(ValueError, match="weight must be"):
        ALISTANetwork.from_ista(A, ALPHA, 2, weight="transpose")


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
    net = lista_from_ista(A, ALPHA, 4, variant="alista", dtype=torch.float64)
    assert type(net) is ALISTANetwork and net.weight == "analytic" and not net.operator_agnostic
    torch.testing.assert_close(net.W_analytic, W.T)
    summary = net.layer_summary()
    assert summary["step"].shape == (4,) and np.all(summary["step"] > 0)
    np.testing.assert_allclose(summary["threshold"], ALPHA * summary["step"])


@pytest.mark.parametrize("variant", ["lista", "cp"])
def test_tied_has_fewer_parameters(problem, variant):
    _, _, A = problem
    n_params = {
        tied: sum(p.numel() for p in lista_from_ista(A, ALPHA, 5, variant=variant,
                                                     tied=tied).parameters())
        for tied in (False, True)
    }
    assert n_params[True] < n_params[False]


@pytest.mark.parametrize("support_selection", [False, True])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_gradients_reach_every_parameter(problem, variant, tied, support_selection):
    Y, X, A = problem
    net = _build(A, variant, ALPHA, 4, tied=tied, support_selection=support_selection)
    loss = sum(((x - X.float()) ** 2).mean() for x in net(Y, _op(A, torch.float32)))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_layer_parameters_partition_the_parameters(problem, variant, tied):
    _, _, A = problem
    net = _build(A, variant, ALPHA, 4, tied=tied)
    seen = [id(p) for t in range(4) for p in net.layer_parameters(t)]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in net.parameters()}
    if variant.startswith("alista"):  # only a step and a threshold per layer
        assert all(len(net.layer_parameters(t)) == 2 for t in range(4))
        assert all(p.numel() == 1 for p in net.parameters())
    if tied and not variant.startswith("alista"):
        assert all(p.numel() == 1 for p in net.layer_parameters(3))
    with pytest.raises(IndexError):
        net.layer_parameters(4)


def test_n_active_and_summary(problem):
    Y, _, A = problem
    net = lista_from_ista(A, ALPHA, 5, variant="cp", support_selection=True)
    net.n_active = 2
    assert len(net(Y, _op(A, torch.float32))) == 2
    summary = net.layer_summary()
    assert summary["threshold"].shape == (5,)
    np.testing.assert_allclose(summary["support_frac"], [0.012, 0.024, 0.036, 0.048, 0.06])
    assert support_fraction(20) == pytest.approx(0.13)
    pickle.loads(pickle.dumps(net))
    with pytest.raises(ValueError, match="variant"):
        lista_from_ista(A, ALPHA, 3, variant="fista")


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_support_selection_bypasses_threshold(problem, variant):
    """At init, layer 0 with support selection is the plain soft threshold except that the
    ⌈p_0 N⌉ largest entries of its input pass unthresholded."""
    Y, _, A = problem
    op = _op(A)
    plain = _build(A, variant, 5 * ALPHA, 3, dtype=torch.float64)
    ss = _build(A, variant, 5 * ALPHA, 3, support_selection=True, dtype=torch.float64)
    x_plain, x_ss = plain(Y, op)[0], ss(Y, op)[0]
    B = {"lista": lambda: plain.W[0], "cp": lambda: plain.B[0],
         "alista": lambda: plain.steps[0] * plain.W_analytic,
         "alista-adjoint": lambda: plain.steps[0] * torch.as_tensor(A).T}[variant]()
    r = (Y @ B.T).detach()
    k = int(np.ceil(support_fraction(0) * N))
    top = torch.zeros_like(r, dtype=torch.bool).scatter_(1, r.abs().topk(k, dim=1).indices, True)
    torch.testing.assert_close(x_ss[top], r[top])
    torch.testing.assert_close(x_ss[~top], x_plain[~top])
    assert not torch.allclose(x_ss, x_plain)
    # later layers differ too, and the fractions grow
    assert not torch.allclose(ss(Y, op)[-1], plain(Y, op)[-1])


@pytest.mark.parametrize("variant,support_selection", [("lista", False), ("cp", True),
                                                       ("alista", True)])
def test_training_improves_on_init(problem, variant, support_selection):
    Y, X, A = problem
    op = _op(A, torch.float32)
    torch.manual_seed(0)
    net = lista_from_ista(A, ALPHA, 4, variant=variant, support_selection=support_selection)
    with torch.no_grad():
        before = _nmse_db(net(Y.float(), op)[-1], X.float())
    lr = 1e-2 if variant == "alista" else 1e-3
    _train(net, A, 300, lr)
    with torch.no_grad():
        after = _nmse_db(net(Y.float(), op)[-1], X.float())
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


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("t", [0, 2])
def test_calibrate_layer_takes_the_fitted_step_exactly(problem, variant, t):
    """After calibration, layer t computes soft(x_t + γ u; θ) with the reported γ, θ, where u is
    the update of the direction it kept, computed here in numpy; and the fit beats the start."""
    Y, X, A = problem
    op = _op(A)
    net = _build(A, variant, ALPHA, 4, dtype=torch.float64)
    with torch.no_grad():
        x = net(Y, op)[t - 1].numpy() if t > 0 else np.zeros(X.shape)
    gamma_start = float(net.steps[t].detach()) if variant.startswith("alista") else 1.0
    fit = net.calibrate_layer(t, Y, X, op)
    if variant == "alista":
        assert fit["direction"] == "analytic"
        u = gamma_start * (Y.numpy() - x @ A.T) @ net.W_analytic.numpy().T
    elif variant == "alista-adjoint":  # W = A: the back-projection is Aᵀ
        assert fit["direction"] == "analytic"
        u = gamma_start * (Y.numpy() - x @ A.T) @ A
    else:
        assert fit["direction"] in ("matched", "pseudo_inverse")
        u = (Y.numpy() - x @ A.T) @ _direction_np(net, A, fit["direction"]).T
    assert fit["layer"] == t + 1 and fit["step"] != 1.0
    assert fit["nmse_db_after"] < fit["nmse_db_before"] - 0.5
    assert float(net.thresholds[t].detach()) == pytest.approx(fit["threshold"])
    with torch.no_grad():
        out = net(Y, op)[t].numpy()
    np.testing.assert_allclose(out, _soft_np(x + fit["step"] * u, fit["threshold"]), atol=1e-9)
    err = 10 * np.log10(((out - X.numpy()) ** 2).sum() / (X.numpy() ** 2).sum())
    assert err == pytest.approx(fit["nmse_db_after"], abs=1e-6)


@pytest.mark.parametrize("t", [0, 2])
def test_calibrate_alista_adjoint_on_per_sample_operators(per_sample, t):
    """The operator-independent ALISTA calibrates on pairs measured through their own
    matrices: layer t then takes soft(x + γ u; θ) with u_i = γ_t A_iᵀ(y_i − A_i x_i)."""
    Y, X, mats = per_sample
    op = _op(mats)
    net = lista_from_ista(op, ALPHA, 4, variant="alista", operator_agnostic=True,
                          dtype=torch.float64)
    with torch.no_grad():
        x = net(Y, op)[t - 1].numpy() if t > 0 else np.zeros(X.shape)
    gamma_start = float(net.steps[t].detach())
    fit = net.calibrate_layer(t, Y, X, op)
    assert fit["direction"] == "analytic" and fit["layer"] == t + 1
    assert fit["nmse_db_after"] < fit["nmse_db_before"] - 0.5
    assert float(net.steps[t].detach()) == pytest.approx(gamma_start * fit["step"])
    u = gamma_start * np.einsum("imn,im->in", mats,
                                Y.numpy() - np.einsum("imn,in->im", mats, x))
    with torch.no_grad():
        out = net(Y, op)[t].numpy()
    np.testing.assert_allclose(out, _soft_np(x + fit["step"] * u, fit["threshold"]), atol=1e-9)


def test_calibration_is_near_a_brute_force_grid_search(problem):
    Y, X, A = problem
    net = lista_from_ista(A, ALPHA, 2, variant="cp", dtype=torch.float64)
    fit = net.calibrate_layer(0, Y, X, _op(A))
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
    net = lista_from_ista(A, ALPHA, 2, variant=variant, dtype=torch.float64)
    fit = net.calibrate_layer(0, Y, X, _op(A))
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
    net = lista_from_ista(A, ALPHA, 3, variant=variant, tied=True, dtype=torch.float64)
    shared = [p for name, p in net.named_parameters() if not name.startswith("thresholds")]
    assert len(shared) == (2 if variant == "lista" else 1)  # (W, S) or B, one of each
    mats = [p.detach().clone() for p in shared]
    fit = net.calibrate_layer(1, Y, X, _op(A))
    assert fit["step"] == 1.0 and fit["nmse_db_after"] <= fit["nmse_db_before"]
    for p, q in zip(shared, mats, strict=True):
        assert torch.equal(p, q)


def test_tied_first_layer_rescales_the_shared_step_for_every_layer(problem):
    """Tied Gregor-LeCun LISTA: the first layer's fitted γ also becomes the step of the later
    layers, x + γ(Aᵀ/L)(y − Ax), through W ← γW and S ← (1−γ)I + γS."""
    Y, X, A = problem
    net = lista_from_ista(A, ALPHA, 3, variant="lista", tied=True, dtype=torch.float64)
    fit = net.calibrate_layer(0, Y, X, _op(A))
    assert fit["step"] != 1.0
    with torch.no_grad():
        x1, x2 = (out.numpy() for out in net(Y, _op(A))[:2])
    B = _direction_np(net, A, fit["direction"])
    r = x1 + fit["step"] * (Y.numpy() - x1 @ A.T) @ B.T
    np.testing.assert_allclose(x2, _soft_np(r, float(net.thresholds[1].detach())), atol=1e-9)
