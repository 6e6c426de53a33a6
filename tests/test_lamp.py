"""The LAMP network: an unrolled AMP whose untrained forward pass is AMP itself."""

from itertools import islice

import numpy as np
import pytest
import torch

from sklearn_unfold import AMPRegressor
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.networks import LAMPNetwork
from sklearn_unfold.networks import lamp as lamp_module
from sklearn_unfold.networks.lamp import LAMP_DENOISERS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small():
    Y, X, A = make_compressed_sensing("giid", 200, n_features=64, n_measurements=32,
                                      random_state=0)
    return Y, X, A


@pytest.mark.parametrize("denoiser", ["bg", "soft"])
def test_untrained_network_is_amp(small, denoiser):
    Y, X, A = small
    threshold = 1.5 if denoiser == "soft" else "auto"
    amp = AMPRegressor(A=A, denoiser=denoiser, threshold=threshold, max_iter=5, tol=0.0).fit(Y, X)
    ref = list(islice(amp.staged_predict(Y), 5))
    net = LAMPNetwork.from_amp(A, denoiser, amp.theta_, 5, dtype=torch.float64)
    with torch.no_grad():
        outs = net(torch.as_tensor(Y))
    assert len(outs) == 5
    for out, expected in zip(outs, ref, strict=True):
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9, atol=1e-12)


def test_every_layer_calls_the_shared_amp_step(small, monkeypatch):
    Y, _, A = small
    calls = []
    real = lamp_module.amp_step

    def counting(*args, **kwargs):
        calls.append(kwargs.get("B"))
        return real(*args, **kwargs)

    monkeypatch.setattr(lamp_module, "amp_step", counting)
    net = LAMPNetwork.from_amp(A, "bg", None, 4)
    net(torch.as_tensor(Y, dtype=torch.float32))
    assert len(calls) == 4
    assert all(b is net.B[t] for t, b in enumerate(calls))


def test_tied_has_fewer_parameters_and_shares_B(small):
    _, _, A = small
    untied = LAMPNetwork.from_amp(A, "bg", None, 6)
    tied = LAMPNetwork.from_amp(A, "bg", None, 6, tied=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    M, N = A.shape
    assert count(untied) - count(tied) == 5 * M * N
    assert any(p is tied.B[0] for p in tied.layer_parameters(0))
    assert all(p is not tied.B[0] for t in range(1, 6) for p in tied.layer_parameters(t))


@pytest.mark.parametrize("tied", [False, True])
def test_layer_parameters_partition_the_parameters(small, tied):
    _, _, A = small
    net = LAMPNetwork.from_amp(A, "mlp", None, 3, tied=tied)
    ids = [id(p) for t in range(3) for p in net.layer_parameters(t)]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in net.parameters()}


@pytest.mark.parametrize("denoiser", LAMP_DENOISERS)
def test_every_denoiser_trains_every_layer(small, denoiser):
    Y, X, A = small
    net = LAMPNetwork.from_amp(A, denoiser, None, 3)
    outs = net(torch.as_tensor(Y[:50], dtype=torch.float32))
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


def test_mlp_starts_at_the_bg_shrinkage(small):
    Y, X, A = small
    amp = AMPRegressor(A=A).fit(Y, X)
    bg = LAMPNetwork.from_amp(A, "bg", amp.theta_, 3, dtype=torch.float64)
    mlp = LAMPNetwork.from_amp(A, "mlp", amp.theta_, 3, dtype=torch.float64)
    Yt = torch.as_tensor(Y)
    with torch.no_grad():
        for a, b in zip(bg(Yt), mlp(Yt), strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_n_active_limits_the_depth(small):
    Y, _, A = small
    net = LAMPNetwork.from_amp(A, "bg", None, 5)
    net.n_active = 2
    assert len(net(torch.as_tensor(Y, dtype=torch.float32))) == 2


def test_layer_summary_is_readable(small):
    _, _, A = small
    soft = LAMPNetwork.from_amp(A, "soft", [1.3, 1.0], 4).layer_summary()
    np.testing.assert_allclose(soft["threshold"], 1.3, rtol=1e-6)
    np.testing.assert_allclose(soft["onsager_scale"], 1.0)
    assert soft["theta"].shape == (4, 2)
    bg = LAMPNetwork.from_amp(A, "bg", [1.0, np.log(9.0)], 4).layer_summary()
    np.testing.assert_allclose(bg["sparsity"], 0.1, rtol=1e-5)
    assert set(bg) >= {"var", "logit", "onsager_scale"}


def test_bad_arguments_are_named(small):
    _, _, A = small
    with pytest.raises(ValueError, match="denoiser must be one of"):
        LAMPNetwork.from_amp(A, "nope", None, 2)
    with pytest.raises(ValueError, match="theta of denoiser 'bg' must have 2 entries"):
        LAMPNetwork.from_amp(A, "bg", [1.0, 2.0, 3.0], 2)
