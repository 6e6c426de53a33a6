import math

import numpy as np
import pytest
import torch

from sklearn_unfold.denoisers import (
    DENOISER_PARAMS,
    MLPDenoiser,
    bg,
    bg_mse,
    bg_posterior_prob,
    bg_theta,
    default_theta,
    get_denoiser,
)

NAMES = sorted(DENOISER_PARAMS)


def _inputs(seed=0, n=4, N=300):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, N, generator=g, dtype=torch.float64) * 2.0
    sigma = torch.rand(n, 1, generator=g, dtype=torch.float64) * 0.5 + 0.2
    return r, sigma


@pytest.mark.parametrize("name", NAMES)
def test_value_shapes(name):
    r, sigma = _inputs()
    value, dmean = get_denoiser(name)(r, sigma, torch.as_tensor(default_theta(name)))
    assert value.shape == r.shape
    assert dmean.shape == (r.shape[0], 1)
    assert torch.isfinite(value).all() and torch.isfinite(dmean).all()


@pytest.mark.parametrize("name", NAMES)
def test_mean_derivative_matches_autograd(name):
    r, sigma = _inputs(1)
    r.requires_grad_(True)
    theta = torch.as_tensor(default_theta(name))
    value, dmean = get_denoiser(name)(r, sigma, theta)
    (grad,) = torch.autograd.grad(value.sum(), r)
    torch.testing.assert_close(dmean, grad.mean(dim=1, keepdim=True), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["bg", "expo", "spline"])
def test_mean_derivative_matches_finite_differences(name):
    r, sigma = _inputs(2)
    theta = torch.as_tensor(default_theta(name))
    fn = get_denoiser(name)
    eps = 1e-6
    fd = (fn(r + eps, sigma, theta)[0] - fn(r - eps, sigma, theta)[0]) / (2 * eps)
    torch.testing.assert_close(fn(r, sigma, theta)[1], fd.mean(dim=1, keepdim=True),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_in_theta(name):
    r, sigma = _inputs(3)
    theta = torch.as_tensor(default_theta(name)).requires_grad_(True)
    value, dmean = get_denoiser(name)(r, sigma, theta)
    (value.square().sum() + dmean.sum()).backward()
    assert torch.isfinite(theta.grad).all()
    assert theta.grad.abs().sum() > 0


def test_soft_threshold_values():
    r = torch.tensor([[-3.0, -0.5, 0.0, 0.5, 3.0]], dtype=torch.float64)
    value, dmean = get_denoiser("soft")(r, torch.ones(1, 1, dtype=torch.float64),
                                        torch.tensor([1.0, 1.0], dtype=torch.float64))
    np.testing.assert_allclose(value.numpy(), [[-2.0, 0.0, 0.0, 0.0, 2.0]])
    np.testing.assert_allclose(dmean.numpy(), [[0.4]])


def test_bg_is_posterior_mean():
    """Compare with the posterior mean computed by direct numerical integration over x."""
    p, v, s2 = 0.1, 1.0, 0.05
    r = np.linspace(-2, 2, 41)
    xs = np.linspace(-8, 8, 200001)
    dx = xs[1] - xs[0]
    slab = np.exp(-xs**2 / (2 * v)) / math.sqrt(2 * math.pi * v)
    lik = np.exp(-(r[:, None] - xs[None, :]) ** 2 / (2 * s2))
    num = p * (lik * slab * xs).sum(1) * dx
    den = p * (lik * slab).sum(1) * dx + (1 - p) * np.exp(-r**2 / (2 * s2))
    expected = num / den
    value, _ = bg(torch.as_tensor(r)[None, :], torch.tensor([[math.sqrt(s2)]], dtype=torch.float64),
                  torch.as_tensor(bg_theta(p, v)))
    np.testing.assert_allclose(value[0].numpy(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("s2", [1e-3, 0.02, 0.3])
def test_bg_mse_matches_monte_carlo(s2):
    p, v = 0.1, 1.0
    rng = np.random.default_rng(0)
    n = 2_000_000
    x = (rng.random(n) < p) * rng.standard_normal(n) * math.sqrt(v)
    r = x + math.sqrt(s2) * rng.standard_normal(n)
    est, _ = bg(torch.as_tensor(r)[None, :], torch.tensor([[math.sqrt(s2)]], dtype=torch.float64),
                torch.as_tensor(bg_theta(p, v)))
    mc = np.mean((est[0].numpy() - x) ** 2)
    assert bg_mse(s2, p, v)[0] == pytest.approx(mc, rel=0.02)


def test_bg_stable_at_tiny_noise():
    r, _ = _inputs(4)
    value, dmean = bg(r, torch.full((4, 1), 1e-6, dtype=torch.float64),
                      torch.as_tensor(bg_theta(0.1, 1.0)))
    assert torch.isfinite(value).all() and torch.isfinite(dmean).all()


def test_mlp_denoiser_divergence_matches_finite_differences():
    torch.manual_seed(0)
    den = MLPDenoiser(hidden=8).double()
    for p in den.parameters():  # move away from the identity initialisation
        torch.nn.init.normal_(p, std=0.5)
    den.eval()
    r, sigma = _inputs(5)
    value, dmean = den(r, sigma)
    eps = 1e-6
    fd = (den(r + eps, sigma)[0] - den(r - eps, sigma)[0]) / (2 * eps)
    torch.testing.assert_close(dmean, fd.mean(dim=1, keepdim=True), rtol=1e-5, atol=1e-7)


def test_unknown_denoiser_raises():
    with pytest.raises(ValueError, match="denoiser must be one of .* got 'nope'"):
        get_denoiser("nope")
    with pytest.raises(ValueError, match="has no parameter 'zz'"):
        default_theta("soft", zz=1.0)


def test_mlp_denoiser_backpropagates_in_eval_mode():
    """A model left in eval mode can still be fine-tuned: the output keeps its graph."""
    mlp = MLPDenoiser(hidden=4).eval()
    with torch.no_grad():
        mlp.net[-1].weight.fill_(0.1)
    r = torch.randn(3, 8)
    sigma = torch.full((3, 1), 0.5)
    value, dmean = mlp(r, sigma)
    (value.sum() + dmean.sum()).backward()
    assert mlp.net[0].weight.grad is not None and mlp.net[0].weight.grad.abs().sum() > 0
    with torch.no_grad():  # inference: no graph is kept
        value, dmean = mlp(r, sigma)
    assert not value.requires_grad and not dmean.requires_grad


def test_bg_posterior_prob_matches_the_closed_form():
    """π(r) = 1 / (1 + (1−p)/p · √((v+σ²)/σ²) · exp(−r²/2 · (1/σ² − 1/(v+σ²)))), in float64."""
    r = torch.linspace(-3.0, 3.0, 41, dtype=torch.float64)[None, :]
    sigma = torch.tensor([[0.3]], dtype=torch.float64)
    var, p = 1.3, 0.15
    logit = torch.tensor(math.log((1 - p) / p), dtype=torch.float64)
    s2 = 0.09
    expected = 1.0 / (1.0 + (1 - p) / p * math.sqrt((var + s2) / s2)
                      * np.exp(-r.numpy() ** 2 / 2 * (1 / s2 - 1 / (var + s2))))
    got = bg_posterior_prob(r, sigma, torch.tensor(var, dtype=torch.float64), logit)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
