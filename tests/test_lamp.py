"""The LAMP network: an unrolled AMP whose untrained forward pass is AMP itself."""

from itertools import islice

import numpy as np
import pytest
import torch

from sklearn_unfold import AMPRegressor
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.denoisers import bg_theta, get_denoiser
from sklearn_unfold.networks import LAMPNetwork
from sklearn_unfold.networks import lamp as lamp_module
from sklearn_unfold.networks.lamp import LAMP_DENOISERS
from sklearn_unfold.operators import as_operator, gaussian_matrix
from sklearn_unfold.solvers import amp_iterates

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARAMETERIZATIONS = ["matrix", "operator"]


@pytest.fixture(scope="module")
def small():
    Y, X, A = make_compressed_sensing("giid", 200, n_features=64, n_measurements=32,
                                      random_state=0)
    return Y, X, A


@pytest.fixture(scope="module")
def per_sample():
    """Eight samples, each measured through its own i.i.d. Gaussian matrix."""
    N, M, n = 64, 32, 8
    rng = np.random.RandomState(3)
    mats = np.stack([gaussian_matrix(M, N, random_state=rng) for _ in range(n)])
    X = (rng.random_sample((n, N)) < 0.1) * rng.standard_normal((n, N))
    Y = np.einsum("imn,in->im", mats, X) + 0.01 * rng.standard_normal((n, M))
    return torch.as_tensor(Y), torch.as_tensor(X), mats


def _op32(A):
    return as_operator(A, dtype=torch.float32)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("denoiser", ["bg", "soft"])
def test_untrained_network_is_amp(small, denoiser, parameterization):
    Y, X, A = small
    threshold = 1.5 if denoiser == "soft" else "auto"
    amp = AMPRegressor(A=A, denoiser=denoiser, threshold=threshold, max_iter=5, tol=0.0).fit(Y, X)
    ref = list(islice(amp.staged_predict(Y), 5))
    net = LAMPNetwork.from_amp(A, denoiser, amp.theta_, 5, parameterization=parameterization,
                               dtype=torch.float64)
    with torch.no_grad():
        outs = net(torch.as_tensor(Y), as_operator(A, dtype=torch.float64))
    assert len(outs) == 5
    for out, expected in zip(outs, ref, strict=True):
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("denoiser", ["bg", "soft"])
def test_operator_parameterisation_is_amp_iterates_on_the_same_operator(small, denoiser):
    """β_t = 1, c_t = 1: the layers are amp_iterates on the operator given at call time."""
    Y, _, A = small
    theta = torch.as_tensor(bg_theta(0.1, 1.0) if denoiser == "bg" else [1.5, 1.0])
    op = as_operator(A, dtype=torch.float64)
    Yt = torch.as_tensor(Y)
    net = LAMPNetwork.from_amp(A, denoiser, theta, 6, parameterization="operator",
                               dtype=torch.float64)
    assert net.parameterization == "operator" and net.operator_agnostic
    assert not hasattr(net, "B") and len(net.beta) == 6
    ref = list(amp_iterates(Yt, op, get_denoiser(denoiser), theta, max_iter=6, tol=0.0))
    with torch.no_grad():
        outs = net(Yt, op)
    assert len(outs) == len(ref) == 6
    for out, x in zip(outs, ref, strict=True):
        torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-14)


def test_operator_parameterisation_serves_one_operator_per_sample(per_sample):
    """With a per-sample batch of matrices each row is AMP on its own matrix: the same as that
    row run alone through its matrix, and as amp_iterates on the per-sample operator."""
    Y, _, mats = per_sample
    theta = torch.as_tensor(bg_theta(0.1, 1.0))
    op = as_operator(np.stack(list(mats)), dtype=torch.float64)
    assert op.per_sample and op.shape == (len(mats), *mats.shape[1:])
    # built from one draw's shape; the parameters depend on no matrix
    net = LAMPNetwork.from_amp(mats[0], "bg", theta, 5, parameterization="operator",
                               dtype=torch.float64)
    with torch.no_grad():
        outs = net(Y, op)
        for i, A_i in enumerate(mats):
            alone = net(Y[i:i + 1], as_operator(A_i, dtype=torch.float64))
            for out, x in zip(outs, alone, strict=True):
                torch.testing.assert_close(out[i:i + 1], x, rtol=1e-10, atol=1e-12)
    ref = list(amp_iterates(Y, op, get_denoiser("bg"), theta, max_iter=5, tol=0.0))
    for out, x in zip(outs, ref, strict=True):
        torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-14)
    # the per-sample estimates are not those of one shared matrix
    with torch.no_grad():
        shared = net(Y, as_operator(mats[0], dtype=torch.float64))[-1]
    assert not torch.allclose(shared[1:], outs[-1][1:])


def test_matrix_parameterisation_starts_at_the_adjoint(small):
    _, _, A = small
    net = LAMPNetwork.from_amp(A, "bg", None, 3, dtype=torch.float64)
    assert net.parameterization == "matrix" and not net.operator_agnostic
    assert not hasattr(net, "beta")
    for B in net.B:
        torch.testing.assert_close(B.detach(), torch.as_tensor(A.T), rtol=0, atol=0)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_every_layer_calls_the_shared_amp_step(small, monkeypatch, parameterization):
    Y, _, A = small
    calls = []
    real = lamp_module.amp_step

    def counting(*args, **kwargs):
        calls.append((kwargs.get("B"), kwargs.get("step")))
        return real(*args, **kwargs)

    monkeypatch.setattr(lamp_module, "amp_step", counting)
    net = LAMPNetwork.from_amp(A, "bg", None, 4, parameterization=parameterization)
    net(torch.as_tensor(Y, dtype=torch.float32), _op32(A))
    assert len(calls) == 4
    if parameterization == "matrix":
        assert all(b is net.B[t] and step == 1.0 for t, (b, step) in enumerate(calls))
    else:  # B_t = β_t Aᴴ: no matrix, the layer's scale as the step
        assert all(b is None and step is net.beta[t] for t, (b, step) in enumerate(calls))


def test_tied_has_fewer_parameters_and_shares_B(small):
    _, _, A = small
    untied = LAMPNetwork.from_amp(A, "bg", None, 6)
    tied = LAMPNetwork.from_amp(A, "bg", None, 6, tied=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    M, N = A.shape
    assert count(untied) - count(tied) == 5 * M * N
    assert any(p is tied.B[0] for p in tied.layer_parameters(0))
    assert all(p is not tied.B[0] for t in range(1, 6) for p in tied.layer_parameters(t))


def test_tied_operator_parameterisation_shares_beta(small):
    _, _, A = small
    untied = LAMPNetwork.from_amp(A, "bg", None, 6, parameterization="operator")
    tied = LAMPNetwork.from_amp(A, "bg", None, 6, parameterization="operator", tied=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(untied) - count(tied) == 5
    assert len(tied.beta) == 1 and len(untied.beta) == 6
    assert all(tied.layer_param("beta", t) is tied.beta[0] for t in range(6))
    assert any(p is tied.beta[0] for p in tied.layer_parameters(0))
    assert all(p is not tied.beta[0] for t in range(1, 6) for p in tied.layer_parameters(t))


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("tied", [False, True])
def test_layer_parameters_partition_the_parameters(small, tied, parameterization):
    _, _, A = small
    net = LAMPNetwork.from_amp(A, "mlp", None, 3, tied=tied, parameterization=parameterization)
    ids = [id(p) for t in range(3) for p in net.layer_parameters(t)]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in net.parameters()}


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("denoiser", LAMP_DENOISERS)
def test_every_denoiser_trains_every_layer(small, denoiser, parameterization):
    Y, X, A = small
    net = LAMPNetwork.from_amp(A, denoiser, None, 3, parameterization=parameterization)
    outs = net(torch.as_tensor(Y[:50], dtype=torch.float32), _op32(A))
    target = torch.as_tensor(X[:50], dtype=torch.float32)
    loss = sum(((o - target) ** 2).mean() for o in outs)
    assert torch.isfinite(loss)
    loss.backward()
    # c_t of the last layer only acts on later layers; every other parameter gets a gradient
    for t in range(3):
        for p in net.layer_parameters(t):
            if p is net.onsager_scale[2]:
                continue
            assert p.grad is not None and torch.isfinite(p.grad).all(), (denoiser, t, p.shape)
    assert any(float(p.grad.abs().sum()) > 0 for p in net.layer_parameters(2) if p.grad is not None)
    if parameterization == "operator":
        assert all(float(b.grad.abs()) > 0 for b in net.beta)


def test_operator_parameterisation_trains_through_per_sample_operators(per_sample):
    Y, X, mats = per_sample
    net = LAMPNetwork.from_amp(mats[0], "bg", None, 3, parameterization="operator")
    outs = net(Y.float(), _op32(mats))
    loss = sum(((o - X.float()) ** 2).mean() for o in outs)
    loss.backward()
    for name, p in net.named_parameters():
        if name == "onsager_scale.2":
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_mlp_starts_at_the_bg_shrinkage(small, parameterization):
    Y, X, A = small
    amp = AMPRegressor(A=A).fit(Y, X)
    bg = LAMPNetwork.from_amp(A, "bg", amp.theta_, 3, parameterization=parameterization,
                              dtype=torch.float64)
    mlp = LAMPNetwork.from_amp(A, "mlp", amp.theta_, 3, parameterization=parameterization,
                               dtype=torch.float64)
    Yt, op = torch.as_tensor(Y), as_operator(A, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(bg(Yt, op), mlp(Yt, op), strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_n_active_limits_the_depth(small):
    Y, _, A = small
    net = LAMPNetwork.from_amp(A, "bg", None, 5)
    net.n_active = 2
    assert len(net(torch.as_tensor(Y, dtype=torch.float32), _op32(A))) == 2


def test_layer_summary_is_readable(small):
    _, _, A = small
    soft = LAMPNetwork.from_amp(A, "soft", [1.3, 1.0], 4).layer_summary()
    np.testing.assert_allclose(soft["threshold"], 1.3, rtol=1e-6)
    np.testing.assert_allclose(soft["onsager_scale"], 1.0)
    assert soft["theta"].shape == (4, 2)
    assert "step" not in soft  # the matrix parameterisation has no scales β_t
    bg = LAMPNetwork.from_amp(A, "bg", [1.0, np.log(9.0)], 4).layer_summary()
    np.testing.assert_allclose(bg["sparsity"], 0.1, rtol=1e-5)
    assert set(bg) >= {"var", "logit", "onsager_scale"}
    op_summary = LAMPNetwork.from_amp(A, "bg", None, 4, parameterization="operator",
                                      tied=True).layer_summary()
    np.testing.assert_allclose(op_summary["step"], np.ones(4))


def test_bad_arguments_are_named(small):
    _, _, A = small
    with pytest.raises(ValueError, match="denoiser must be one of"):
        LAMPNetwork.from_amp(A, "nope", None, 2)
    with pytest.raises(ValueError, match="theta of denoiser 'bg' must have 2 entries"):
        LAMPNetwork.from_amp(A, "bg", [1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError, match="parameterization must be one of"):
        LAMPNetwork.from_amp(A, "bg", None, 2, parameterization="scalar")
    with pytest.raises(ValueError, match=r"B0 must have shape \(N, M\)"):
        LAMPNetwork(2, A.shape, "bg", B0=torch.as_tensor(A))


def test_check_operator_names_a_mismatched_operator(small):
    _, _, A = small
    net = LAMPNetwork.from_amp(A, "bg", None, 2, parameterization="operator")
    net.check_operator(_op32(A), 5)
    with pytest.raises(ValueError, match="built for"):
        net.check_operator(_op32(A[:, :40]), 5)
    with pytest.raises(ValueError, match="per-sample operators"):
        net.check_operator(_op32(np.stack([A, A])), 5)
