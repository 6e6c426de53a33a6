"""Picking shrinkage parameters: the state-evolution formulas and the one-step data fit."""

import numpy as np
import pytest
import torch

from sklearn_unfold.tuning import (
    fit_step_threshold,
    soft_mse,
    soft_state_evolution,
    soft_threshold_for_prior,
)


def test_soft_mse_matches_monte_carlo():
    rng = np.random.default_rng(0)
    n, p, v, tau2, lam = 2_000_000, 0.1, 1.0, 0.05, 1.3
    x = (rng.random(n) < p) * rng.normal(0.0, np.sqrt(v), n)
    r = x + np.sqrt(tau2) * rng.standard_normal(n)
    theta = lam * np.sqrt(tau2)
    mc = np.mean((np.sign(r) * np.maximum(np.abs(r) - theta, 0.0) - x) ** 2)
    assert float(soft_mse(tau2, lam, p, v)) == pytest.approx(mc, rel=5e-3)


def test_state_evolution_returns_its_fixed_point_and_the_best_threshold():
    p, v, noise, ratio = 0.1, 1.0, 1e-4 * 0.2, 0.5
    lam = soft_threshold_for_prior(p, v, noise, ratio)
    tau2 = float(soft_state_evolution(lam, p, v, noise, ratio)[0])
    assert tau2 == pytest.approx(noise + float(soft_mse(tau2, lam, p, v)) / ratio, rel=1e-8)
    for other in (lam - 0.2, lam + 0.2):
        assert float(soft_state_evolution(other, p, v, noise, ratio)[0]) > tau2


def _soft(r, theta):
    return torch.sign(r) * torch.clamp(r.abs() - theta, min=0.0)


def test_fit_step_threshold_recovers_a_planted_step_and_threshold():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 50, generator=g, dtype=torch.float64)
    u = torch.randn(400, 50, generator=g, dtype=torch.float64)
    target = _soft(x + 2.5 * u, 0.7)
    fit = fit_step_threshold(x, u, target, theta0=0.05)
    assert fit["step"] == pytest.approx(2.5, rel=0.02)
    assert fit["threshold"] == pytest.approx(0.7, rel=0.03)
    assert fit["nmse_db_after"] < -30 < fit["nmse_db_before"]


def test_fit_step_threshold_without_the_step_fits_the_threshold_alone():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 40, generator=g, dtype=torch.float64)
    u = torch.randn(300, 40, generator=g, dtype=torch.float64)
    target = _soft(x + u, 0.4)
    fit = fit_step_threshold(x, u, target, theta0=2.0, tune_step=False)
    assert fit["step"] == 1.0
    assert fit["threshold"] == pytest.approx(0.4, rel=0.03)


def test_fit_step_threshold_stays_bounded_where_the_objective_is_flat():
    """All-zero targets: any threshold above every |x + γu| is optimal. The search must stop at
    a finite threshold (an unbounded one overflowed float32) and never do worse than its start."""
    g = torch.Generator().manual_seed(2)
    u = torch.randn(50, 20, generator=g)
    fit = fit_step_threshold(torch.zeros(50, 20), u, torch.zeros(50, 20), 0.1,
                             support_frac=0.1)
    assert np.isfinite(fit["threshold"])
    assert fit["threshold"] <= 2 * 64 * float(u.abs().max()) + 1.0
    assert fit["nmse_db_after"] <= fit["nmse_db_before"]
