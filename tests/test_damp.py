"""Plug-in D-AMP: AMP with a fixed non-separable denoiser follows its state evolution.

For a denoiser ``D`` that sees the whole signal, AMP's Onsager term needs ``div D / M``; with it
the effective observation ``r_t = x̂_t + Aᵀv_t`` stays ``x + √τ_t z`` on an i.i.d. Gaussian
``A``, and the error follows

    τ_0 = σ_w² + (N/M) E[x²],    τ_{t+1} = σ_w² + (N/M) E‖D(x + √τ_t z) − x‖²/N

(Metzler, Maleki and Baraniuk, "From denoising to compressed sensing", IEEE TIT 2016). Here
``D`` is the Bernoulli-Gaussian posterior mean followed by a fixed 3-tap smoothing, and its
divergence comes from one Monte-Carlo probe (:func:`~sklearn_unfold.denoisers.mc_divergence`).
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_unfold import AMPRegressor
from sklearn_unfold.denoisers import bg, bg_theta, jacobian_divergence, mc_divergence

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

N, M = 2000, 1000
SPARSITY, VAR = 0.1, 1.0
SNR_DB = 35.0
SMOOTH = 0.05  # weight of each neighbour in the smoothing
N_ITER = 12
F64 = torch.float64


class SmoothedBG(nn.Module):
    """``D(r) = S η_BG(r; σ)``, ``S`` the fixed smoothing ``(c, 1 − 2c, c)`` (zero-padded ends).

    Not separable: ``∂D_{i±1}/∂r_i = c η'(r_i)``. Its ``dmean`` is the one-probe Monte-Carlo
    estimate of the divergence; ``onsager=False`` reports zero instead (AMP without its Onsager
    correction).
    """

    def __init__(self, onsager: bool = True):
        super().__init__()
        self.onsager = onsager
        self.register_buffer("theta", torch.as_tensor(bg_theta(SPARSITY, VAR)))

    def estimate(self, r, sigma):
        u = bg(r, sigma, self.theta.to(r.dtype))[0]
        out = (1.0 - 2.0 * SMOOTH) * u
        out[:, 1:] += SMOOTH * u[:, :-1]
        out[:, :-1] += SMOOTH * u[:, 1:]
        return out

    def forward(self, r, sigma):
        value = self.estimate(r, sigma)
        if not self.onsager:
            return value, torch.zeros_like(sigma)
        return value, mc_divergence(lambda z: self.estimate(z, sigma), r, value)


def _bg_signals(rng, n):
    return (rng.random((n, N)) < SPARSITY) * rng.standard_normal((n, N)) * math.sqrt(VAR)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, N)) / math.sqrt(M)  # unit-norm columns on average
    X = _bg_signals(rng, 12)
    noise_var = (N / M) * SPARSITY * VAR * 10 ** (-SNR_DB / 10)  # E‖Ax‖²/M = (N/M)E[x²]
    Y = X @ A.T + math.sqrt(noise_var) * rng.standard_normal((X.shape[0], M))
    return Y, X, A, noise_var


@pytest.fixture(scope="module")
def state_evolution(problem):
    """The NMSE the state evolution predicts at each iteration, by Monte Carlo on fresh signals."""
    _, _, _, noise_var = problem
    rng = np.random.default_rng(1)
    gen = torch.Generator().manual_seed(1)
    den = SmoothedBG()
    X = torch.as_tensor(_bg_signals(rng, 64))  # its Monte-Carlo error is about 0.1 dB
    tau = noise_var + (N / M) * SPARSITY * VAR
    nmse = []
    for _ in range(N_ITER):
        R = X + math.sqrt(tau) * torch.randn(X.shape, generator=gen, dtype=F64)
        sigma = torch.full((X.shape[0], 1), math.sqrt(tau), dtype=F64)
        err = float((den.estimate(R, sigma) - X).square().sum())
        nmse.append(err / float(X.square().sum()))
        tau = noise_var + (N / M) * err / X.numel()
    return np.array(nmse)


def _empirical_nmse_db(problem, denoiser):
    Y, X, A, _ = problem
    est = AMPRegressor(A=A, denoiser=denoiser, max_iter=N_ITER, tol=0.0).fit(Y, X)
    torch.manual_seed(0)  # the probes
    return np.array([10 * np.log10(np.sum((x - X) ** 2) / np.sum(X**2))
                     for x in est.staged_predict(Y)])


def test_the_denoiser_is_non_separable_with_a_probed_divergence():
    g = torch.Generator().manual_seed(2)
    den = SmoothedBG()
    r = torch.randn(3, N, generator=g, dtype=F64) * 0.6
    r[:, ::10] *= 5.0  # some clearly active entries
    sigma = torch.full((3, 1), 0.3, dtype=F64)
    # the Jacobian has its neighbours' entries: ∂D_{i+1}/∂r_i = c η'(r_i)
    short = r[:1, :12].clone()
    jac = torch.autograd.functional.jacobian(lambda z: den.estimate(z, sigma[:1]), short)[0, :, 0]
    eta_prime = torch.autograd.functional.jacobian(
        lambda z: bg(z, sigma[:1], den.theta)[0], short)[0, :, 0].diagonal()
    torch.testing.assert_close(jac.diagonal(1), SMOOTH * eta_prime[1:], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(jac.diagonal(-1), SMOOTH * eta_prime[:-1], rtol=1e-12, atol=1e-14)
    assert float(jac.diagonal(1).abs().max()) > 1e-2
    # dmean is one Monte-Carlo probe: exactly what mc_divergence gives with the same draw ...
    torch.manual_seed(3)
    value, dmean = den(r, sigma)
    torch.manual_seed(3)
    probe = torch.randn_like(r)
    eps = r.abs().amax(dim=-1, keepdim=True) / 1000.0
    by_hand = ((probe * (den.estimate(r + eps * probe, sigma) - value)).sum(-1, keepdim=True)
               / (eps * N))
    torch.testing.assert_close(dmean, by_hand, rtol=1e-8, atol=1e-12)
    # ... an estimate of the exact divergence (1 − 2c)⟨η'⟩, not the exact value
    # (S's diagonal is 1 − 2c: checked against autograd on a short signal)
    exact = (1 - 2 * SMOOTH) * bg(r, sigma, den.theta)[1]
    torch.testing.assert_close(jacobian_divergence(lambda z: den.estimate(z, sigma[:1]), short),
                               (1 - 2 * SMOOTH) * bg(short, sigma[:1], den.theta)[1],
                               rtol=1e-10, atol=1e-12)
    assert float(((dmean - exact) / exact).abs().max()) < 0.2
    assert not torch.allclose(dmean, exact, rtol=1e-4, atol=0)


def test_damp_follows_its_state_evolution(problem, state_evolution):
    empirical = _empirical_nmse_db(problem, SmoothedBG())
    predicted = 10 * np.log10(state_evolution)
    assert len(empirical) == N_ITER
    gap = np.abs(empirical - predicted)
    assert np.all(gap < 1.0), np.round(empirical - predicted, 2)
    # a trajectory worth following: from about -4 dB to the floor over 10 dB lower
    assert predicted[0] > -6.0 and predicted[-1] < predicted[0] - 10.0


def test_without_the_onsager_divergence_the_state_evolution_fails(problem, state_evolution):
    """The same iterations with the divergence set to zero leave the state evolution by more
    than the tolerance above: the 1 dB test tells the Onsager term's divergence apart."""
    empirical = _empirical_nmse_db(problem, SmoothedBG(onsager=False))
    predicted = 10 * np.log10(state_evolution[:len(empirical)])
    assert len(empirical) >= 3
    assert np.max(np.abs(empirical - predicted)) > 1.0
    # and it is worse than D-AMP at the end of what it ran
    assert empirical[-1] > predicted[-1] + 1.0
