"""Scalar state evolution of soft-threshold AMP, used to pick analytic parameters.

For i.i.d. Gaussian ``A``, AMP's effective noise variance obeys
``τ²_{t+1} = σw² + (N/M)·E[(soft(X + τ_t Z; λτ_t) − X)²]``, ``X`` from the prior, ``Z ~ N(0, 1)``.
For a Bernoulli-Gaussian ``X`` the expectation has a closed form: with ``r ~ N(0, s²)``,
``a = θ/s`` and ``Q`` the Gaussian tail,

.. math::
    E[\\mathrm{soft}(r;θ)^2] = 2\\left[(s^2 + θ^2) Q(a) − θ s φ(a)\\right], \\qquad
    E[r\\,\\mathrm{soft}(r;θ)] = 2 s^2 Q(a),

and ``E[x | r] = v r / (v + τ²)`` on the active part.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import ndtr

_SQRT_2PI = np.sqrt(2.0 * np.pi)


def _tail(a):
    return ndtr(-a)


def _pdf(a):
    return np.exp(-0.5 * a * a) / _SQRT_2PI


def _soft_second_moment(s2, theta):
    s = np.sqrt(s2)
    a = theta / s
    return 2.0 * ((s2 + theta**2) * _tail(a) - theta * s * _pdf(a))


def soft_mse(tau2, lam, sparsity: float, var: float) -> np.ndarray:
    r"""``E[(soft(X + τZ; λτ) − X)²]`` for ``X ~ (1−p) δ0 + p N(0, v)`` (closed form, broadcast)."""
    tau2 = np.asarray(tau2, dtype=np.float64)
    theta = np.asarray(lam, dtype=np.float64) * np.sqrt(tau2)
    inactive = _soft_second_moment(tau2, theta)
    s2 = var + tau2
    active = _soft_second_moment(s2, theta) - 4.0 * var * _tail(theta / np.sqrt(s2)) + var
    return (1.0 - sparsity) * inactive + sparsity * active


def soft_active_rate(tau2, lam, sparsity: float, var: float) -> np.ndarray:
    """``P(|X + τZ| > λτ)``: the expected fraction of non-zeros in the soft-threshold output."""
    tau2 = np.asarray(tau2, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    return (1.0 - sparsity) * 2.0 * _tail(lam) + sparsity * 2.0 * _tail(
        lam * np.sqrt(tau2) / np.sqrt(var + tau2))


def soft_state_evolution(lam, sparsity: float, var: float, noise_var: float, ratio: float,
                         n_iter: int = 500, rtol: float = 1e-10) -> np.ndarray:
    """Fixed point ``τ²_∞`` of soft-threshold AMP's state evolution for each ``λ`` (``ratio = M/N``)."""
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    tau2 = np.full(lam.shape, noise_var + sparsity * var / ratio)
    for _ in range(n_iter):
        new = noise_var + soft_mse(tau2, lam, sparsity, var) / ratio
        done = np.all(np.abs(new - tau2) <= rtol * new)
        tau2 = new
        if done:
            break
    return tau2


def soft_threshold_for_prior(sparsity: float, var: float, noise_var: float, ratio: float,
                             algorithm: str = "amp") -> float:
    """The soft threshold multiplier ``λ`` with the lowest state-evolution fixed point.

    ``ratio`` is ``M/N``. VAMP (``algorithm="vamp"``) uses AMP's value: both then approach the
    same LASSO fixed point.
    """
    grid = np.linspace(0.2, 4.0, 39)
    best = float(grid[np.argmin(soft_state_evolution(grid, sparsity, var, noise_var, ratio))])
    res = minimize_scalar(
        lambda lam: float(soft_state_evolution(lam, sparsity, var, noise_var, ratio)[0]),
        bounds=(max(best - 0.1, 0.05), best + 0.1), method="bounded",
        options={"xatol": 1e-4})
    return float(res.x)


def lasso_alpha_for_prior(sparsity: float, var: float, noise_var: float, ratio: float) -> float:
    r"""The LASSO weight ``α`` whose solution AMP-soft with the best threshold converges to.

    AMP-soft with threshold ``λτ`` has the LASSO fixed point with (Donoho-Maleki-Montanari
    calibration) ``α = λτ (1 − (N/M) P(|X + τZ| > λτ))``, ``τ²`` the state-evolution fixed point.
    """
    lam = soft_threshold_for_prior(sparsity, var, noise_var, ratio)
    tau2 = float(soft_state_evolution(lam, sparsity, var, noise_var, ratio)[0])
    rate = float(soft_active_rate(tau2, lam, sparsity, var))
    return float(lam * np.sqrt(tau2) * max(1.0 - rate / ratio, 1e-3))
