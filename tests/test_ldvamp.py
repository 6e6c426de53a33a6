"""LDVAMPNetwork: analytic initialisation, tying, gradients, training, ill-conditioned A."""

import pickle

import numpy as np
import pytest
import torch

from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.denoisers import bg_theta, default_theta, get_denoiser
from sklearn_unfold.networks.ldvamp import LDVAMPNetwork
from sklearn_unfold.operators import PartialDCT, as_operator, conditioned_matrix, gaussian_matrix
from sklearn_unfold.solvers import vamp_iterates

N, M = 64, 32
P, V = 0.1, 1.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem():
    Y, X, A, noise_var = make_compressed_sensing("giid", 300, n_features=N, n_measurements=M,
                                                 random_state=0, return_noise_var=True)
    return torch.as_tensor(Y), torch.as_tensor(X), A, noise_var


def _nmse_db(x_hat, X):
    return float(10 * torch.log10(((x_hat - X) ** 2).sum() / (X**2).sum()))


def _train(net, A, noise_var, n_steps, lr, batch=256, seed=0):
    """Plain Adam on the mean per-layer NMSE, fresh Bernoulli-Gaussian signals every step."""
    gen = np.random.default_rng(seed)
    A_t = torch.as_tensor(A, dtype=torch.float32)
    op = as_operator(A_t, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(n_steps):
        X = torch.as_tensor((gen.random((batch, N)) < P) * gen.standard_normal((batch, N)),
                            dtype=torch.float32)
        Y = X @ A_t.T + np.sqrt(noise_var) * torch.as_tensor(gen.standard_normal((batch, M)),
                                                             dtype=torch.float32)
        loss = sum(((x - X) ** 2).sum() for x in net(Y, op)) / (X**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize("denoiser,tied,gains", [
    ("bg", False, False), ("bg", True, True), ("pwlin", False, True), ("spline", True, False),
    ("mlp", False, False),
])
def test_init_equals_vamp_iterates(problem, denoiser, tied, gains):
    Y, _, A, noise_var = problem
    theta = default_theta(denoiser) if denoiser in ("pwlin", "spline") else bg_theta(P, V)
    net = LDVAMPNetwork.from_vamp(A, denoiser, theta, noise_var, P * V, 6, tied=tied,
                                  gains=gains, dtype=torch.float64)
    op = as_operator(A, dtype=torch.float64)
    assert net.operator_agnostic is not gains
    assert net.n_gains == (M if gains else 0)
    assert not any(isinstance(b, torch.Tensor) and b.ndim >= 2 for b in net.buffers())
    outs = net(Y, op)
    fn = get_denoiser("bg" if denoiser == "mlp" else denoiser)
    ref = [x.clone() for x in vamp_iterates(Y, op, fn, torch.as_tensor(theta),
                                            noise_var, P * V, max_iter=6, tol=0.0)]
    assert len(outs) == len(ref) == 6
    for out, x in zip(outs, ref, strict=True):
        torch.testing.assert_close(out.detach(), x, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("denoiser", ["bg", "mlp"])
def test_init_equals_vamp_iterates_with_one_operator_per_sample(denoiser):
    """A batch of per-sample matrices: the untrained network is vamp_iterates on that
    per-sample operator, and each row is the network run on that row alone, through its own
    matrix (the LMMSE stage and the starting precision of each sample come from its matrix)."""
    n, noise_var = 6, 1e-3
    rng = np.random.RandomState(4)
    mats = [gaussian_matrix(M, N, random_state=rng) for _ in range(n)]
    X = torch.as_tensor((rng.random_sample((n, N)) < P) * rng.standard_normal((n, N)))
    Y = torch.as_tensor(np.einsum("imn,in->im", np.stack(mats), X.numpy())
                        + np.sqrt(noise_var) * rng.standard_normal((n, M)))
    op = as_operator(np.stack(mats), dtype=torch.float64)
    assert op.per_sample and len(op) == n
    theta = bg_theta(P, V)
    net = LDVAMPNetwork.from_vamp(mats[0], denoiser, theta, noise_var, P * V, 5,
                                  dtype=torch.float64)
    with torch.no_grad():
        outs = net(Y, op)
        ref = list(vamp_iterates(Y, op, get_denoiser("bg"), torch.as_tensor(theta), noise_var,
                                 P * V, max_iter=5, tol=0.0))
        assert len(outs) == len(ref) == 5
        for out, x in zip(outs, ref, strict=True):
            torch.testing.assert_close(out, x, rtol=1e-9, atol=1e-10)
        for i, A_i in enumerate(mats):
            alone = net(Y[i:i + 1], as_operator(A_i, dtype=torch.float64))
            for out, x in zip(outs, alone, strict=True):
                torch.testing.assert_close(out[i:i + 1], x, rtol=1e-9, atol=1e-10)
        # and the result depends on each sample's own matrix
        shared = net(Y, as_operator(mats[0], dtype=torch.float64))[-1]
    assert not torch.allclose(shared[1:], outs[-1][1:], rtol=1e-3, atol=1e-3)
    assert _nmse_db(outs[-1], X) < -15.0


def test_gains_need_an_operator_with_as_many_singular_values(problem):
    Y, _, A, noise_var = problem
    net = LDVAMPNetwork.from_vamp(A, "bg", bg_theta(P, V), noise_var, P * V, 2, gains=True)
    assert not net.operator_agnostic and net.n_gains == M
    net(Y.float(), as_operator(A, dtype=torch.float32))
    dct = PartialDCT.random(M, N, random_state=0, dtype=torch.float32)
    with pytest.raises(ValueError, match=f"learned {M} per-singular-value gains"):
        net(Y.float(), dct)
    with pytest.raises(ValueError, match=f"learned {M} per-singular-value gains"):
        net(Y.float()[:, :M - 4], as_operator(A[:M - 4], dtype=torch.float32))
    with pytest.raises(ValueError, match="gains=True needs one fixed operator"):
        LDVAMPNetwork.from_vamp(np.stack([A, A]), "bg", bg_theta(P, V), noise_var, P * V, 2,
                                gains=True)


@pytest.mark.parametrize("denoiser,gains", [("bg", True), ("bg", False), ("mlp", False)])
def test_tied_has_fewer_parameters(problem, denoiser, gains):
    _, _, A, noise_var = problem
    n_params = {
        tied: sum(p.numel() for p in LDVAMPNetwork.from_vamp(
            A, denoiser, bg_theta(P, V), noise_var, P * V, 4, tied=tied, gains=gains
        ).parameters())
        for tied in (False, True)
    }
    assert n_params[True] < n_params[False]


@pytest.mark.parametrize("denoiser,tied,gains", [
    ("bg", False, True), ("bg", True, True), ("pwlin", False, False), ("mlp", False, False),
    ("mlp", True, True),
])
def test_gradients_reach_every_parameter(problem, denoiser, tied, gains):
    Y, X, A, noise_var = problem
    theta = default_theta("pwlin") if denoiser == "pwlin" else bg_theta(P, V)
    torch.manual_seed(0)
    net = LDVAMPNetwork.from_vamp(A, denoiser, theta, noise_var, P * V, 3, tied=tied,
                                  gains=gains)
    if denoiser == "mlp":  # move the zero-initialised last MLP layer off zero
        for mlp in (net.layer_denoiser(t).mlp for t in range(net.n_layers)):
            torch.nn.init.normal_(mlp.net[-1].weight, std=0.01)
    op = as_operator(A, dtype=torch.float32)
    loss = sum(((x - X.float()) ** 2).mean() for x in net(Y.float(), op))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("denoiser,tied", [("bg", False), ("mlp", True)])
def test_layer_parameters_and_summary(problem, denoiser, tied):
    _, _, A, noise_var = problem
    net = LDVAMPNetwork.from_vamp(A, denoiser, bg_theta(P, V), noise_var, P * V, 4, tied=tied,
                                  gains=True)
    seen = [id(p) for t in range(4) for p in net.layer_parameters(t)]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in net.parameters()}
    summary = net.layer_summary()
    np.testing.assert_allclose(summary["noise_precision"], 1.0 / noise_var, rtol=1e-5)
    np.testing.assert_allclose(summary["gamma1_scale"], 1.0)
    np.testing.assert_allclose(summary["gamma2_scale"], 1.0)
    assert summary["theta"].shape == (4, 2)
    assert summary["gain"].shape == (4, M)
    net.n_active = 2
    assert len(net(torch.zeros(3, M), as_operator(A, dtype=torch.float32))) == 2
    pickle.loads(pickle.dumps(net))
    with pytest.raises(ValueError, match="denoiser"):
        LDVAMPNetwork.from_vamp(A, "nope", bg_theta(P, V), noise_var, P * V, 2)
    with pytest.raises(ValueError, match="theta"):
        LDVAMPNetwork.from_vamp(A, "pwlin", bg_theta(P, V), noise_var, P * V, 2)


def test_training_improves_on_init(problem):
    """From a mismatched prior (p = 0.3, v = 0.3) 300 Adam steps gain several dB at 4 layers."""
    Y, X, A, noise_var = problem
    op = as_operator(A, dtype=torch.float32)
    net = LDVAMPNetwork.from_vamp(A, "bg", bg_theta(0.3, 0.3), noise_var, P * V, 4, gains=True)
    with torch.no_grad():
        before = _nmse_db(net(Y.float(), op)[-1], X.float())
    _train(net, A, noise_var, 300, 1e-2)
    with torch.no_grad():
        after = _nmse_db(net(Y.float(), op)[-1], X.float())
    assert after < before - 2.0, (before, after)


def test_mlp_training_improves_on_init(problem):
    Y, X, A, noise_var = problem
    op = as_operator(A, dtype=torch.float32)
    torch.manual_seed(0)
    net = LDVAMPNetwork.from_vamp(A, "mlp", bg_theta(0.3, 0.3), noise_var, P * V, 3, tied=True)
    with torch.no_grad():
        before = _nmse_db(net(Y.float(), op)[-1], X.float())
    _train(net, A, noise_var, 80, 1e-3, batch=64)
    with torch.no_grad():
        after = _nmse_db(net(Y.float(), op)[-1], X.float())
    assert after < before - 0.5, (before, after)


@pytest.mark.parametrize("condition_number", [15.0, 1e4])
def test_finite_on_ill_conditioned_matrix(condition_number):
    A = conditioned_matrix(M, N, condition_number, random_state=1)
    Y, X, _, noise_var = make_compressed_sensing("giid", 200, A=A, random_state=2,
                                                 return_noise_var=True)
    Y, X = torch.as_tensor(Y, dtype=torch.float32), torch.as_tensor(X, dtype=torch.float32)
    op = as_operator(A, dtype=torch.float32)
    net = LDVAMPNetwork.from_vamp(A, "bg", bg_theta(P, V), noise_var, P * V, 6, gains=True)
    with torch.no_grad():
        outs = net(Y, op)
    assert all(torch.isfinite(x).all() for x in outs)
    assert _nmse_db(outs[-1], X) < (-8.0 if condition_number < 100 else -3.0)
    _train(net, A, noise_var, 30, 1e-2)
    with torch.no_grad():
        outs = net(Y, op)
    assert all(torch.isfinite(x).all() for x in outs)
    assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize("damping", [0.5, 0.8])
def test_damped_init_equals_damped_vamp_iterates(damping):
    """With damping < 1 the untrained network is damped VAMP, layer by layer."""
    Y, _, A, noise_var = make_compressed_sensing("kappa15", 40, n_features=N, n_measurements=M,
                                                 random_state=0, return_noise_var=True)
    theta = bg_theta(P, V)
    net = LDVAMPNetwork.from_vamp(A, "bg", theta, noise_var, P * V, 7, damping=damping,
                                  dtype=torch.float64)
    Y = torch.as_tensor(Y)
    with torch.no_grad():
        outs = net(Y, as_operator(A))
        ref = list(vamp_iterates(Y, A, get_denoiser("bg"), torch.as_tensor(theta), noise_var,
                                 P * V, max_iter=7, tol=0.0, damping=damping))
    for out, x in zip(outs, ref, strict=True):
        torch.testing.assert_close(out, x, rtol=1e-9, atol=1e-10)
    # one learned damping per layer from the second on, reported (with 1 for the first)
    assert len(net.damping) == 6
    np.testing.assert_array_equal(net.layer_summary()["damping"], [1.0] + [damping] * 6)
    undamped = LDVAMPNetwork.from_vamp(A, "bg", theta, noise_var, P * V, 7)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == sum(p.numel() for p in undamped.parameters()) + 6
    assert "damping" not in undamped.layer_summary()
    with pytest.raises(ValueError, match=r"damping must be in \(0, 1\]; got 1.5"):
        LDVAMPNetwork.from_vamp(A, "bg", theta, noise_var, P * V, 3, damping=1.5)


def test_learned_damping_trains_and_stays_in_range(problem):
    Y, _, A, noise_var = problem
    net = LDVAMPNetwork.from_vamp(A, "bg", bg_theta(P, V), noise_var, P * V, 4, damping=0.9)
    _train(net, A, noise_var, n_steps=30, lr=0.05)
    beta = net.layer_summary()["damping"]
    assert np.all((beta >= 0.05) & (beta <= 1.0))
    assert not np.allclose(beta[1:], 0.9)  # gradients reach the dampings


def test_adaptive_noise_init_equals_adaptive_vamp_iterates():
    """With adaptive_noise the untrained network is adaptive (EM) VAMP, layer by layer, and it
    learns one correction per layer instead of one noise precision."""
    Y, _, A, noise_var = make_compressed_sensing("kappa15", 40, n_features=N, n_measurements=M,
                                                 random_state=0, return_noise_var=True)
    theta = bg_theta(P, V)
    net = LDVAMPNetwork.from_vamp(A, "bg", theta, 30 * noise_var, P * V, 6, damping=0.8,
                                  adaptive_noise=True, dtype=torch.float64)
    Y = torch.as_tensor(Y)
    with torch.no_grad():
        outs = net(Y, as_operator(A))
        ref = list(vamp_iterates(Y, A, get_denoiser("bg"), torch.as_tensor(theta),
                                 30 * noise_var, P * V, max_iter=6, tol=0.0, damping=0.8,
                                 adaptive_noise=True))
    for out, x in zip(outs, ref, strict=True):
        torch.testing.assert_close(out, x, rtol=1e-9, atol=1e-10)
    summary = net.layer_summary()
    assert "noise_precision" not in summary
    np.testing.assert_array_equal(summary["noise_precision_scale"], np.ones(6))
    assert not hasattr(net, "log_gamma_w") and len(net.log_cw) == 6
