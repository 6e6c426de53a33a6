"""Scalar state evolution, used to pick analytic parameters (AMP-soft's threshold).

For i.i.d. Gaussian ``A``, AMP's effective noise variance obeys
``τ²_{t+1} = σw² + (N/M)·E[(η(X + τ_t Z; τ_t) − X)²]``, X from the prior, Z ~ N(0, 1).
The expectations are computed by Gauss-Hermite quadrature on each mixture component.
"""

from __future__ import annotations

import numpy as np


def soft_mse(tau2: np.ndarray, lam: np.ndarray, sparsity: float, var: float,
             n_points: int = 80) -> np.ndarray:
    r"""``E[(soft(X + τZ; λτ) − X)²]`` for a Bernoulli-Gaussian ``X`` (broadcast over inputs)."""
    tau = np.sqrt(np.asarray(tau2, dtype=np.float64))[..., None, None]
    lam = np.asarray(lam, dtype=np.float64)[..., None, None]
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_points)
    weights = weights / weights.sum()
    z, x = nodes[:, None], np.sqrt(var) * nodes[None, :]
    w2 = weights[:, None] * weights[None, :]

    def err(xv):
        r = xv + tau * z
        est = np.sign(r) * np.maximum(np.abs(r) - lam * tau, 0.0)
        return (est - xv) ** 2

    inactive = (weights[:, None] * err(np.zeros_like(x[:, :1]))).sum(axis=(-2, -1))
    active = (w2 * err(x)).sum(axis=(-2, -1))
    return (1.0 - sparsity) * inactive + sparsity * active


def soft_state_evolution(lam: np.ndarray, sparsity: float, var: float, noise_var: float,
                         ratio: float, n_iter: int = 200) -> np.ndarray:
    """Fixed point ``τ²_∞`` of soft-threshold AMP's state evolution for each ``λ`` (M/N = ratio)."""
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    tau2 = np.full(lam.shape, noise_var + sparsity * var / ratio)
    for _ in range(n_iter):
        tau2 = noise_var + soft_mse(tau2, lam, sparsity, var) / ratio
    return tau2


def soft_threshold_for_prior(sparsity: float, var: float, noise_var: float, ratio: float,
                             algorithm: str = "amp") -> float:
    """The soft threshold multiplier ``λ`` with the lowest state-evolution fixed point.

    ``ratio`` is ``M/N``. ``algorithm`` is recorded for future algorithm-specific tuning; VAMP
    uses AMP's value, a good proxy since both then approach the same LASSO fixed point.
    """
    grid = np.linspace(0.3, 4.0, 75)
    tau2 = soft_state_evolution(grid, sparsity, var, noise_var, ratio)
    mse = (tau2 - noise_var) * ratio
    fine = np.linspace(max(grid[np.argmin(mse)] - 0.1, 0.05), grid[np.argmin(mse)] + 0.1, 41)
    tau2 = soft_state_evolution(fine, sparsity, var, noise_var, ratio)
    return float(fine[np.argmin(tau2)])


def lasso_alpha_for_prior(sparsity: float, var: float, noise_var: float, ratio: float) -> float:
    r"""The LASSO weight ``α`` whose solution AMP-soft with the best threshold converges to.

    AMP-soft with threshold ``λτ`` has the LASSO fixed point with (Donoho-Maleki-Montanari
    calibration) ``α = λτ (1 − (N/M) P(|X + τZ| > λτ))``, ``τ²`` the state-evolution fixed point.
    """
    lam = soft_threshold_for_prior(sparsity, var, noise_var, ratio)
    tau = float(np.sqrt(soft_state_evolution(lam, sparsity, var, noise_var, ratio)[0]))
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    z, x = nodes[:, None], np.sqrt(var) * nodes[None, :]
    p_in = float((weights * (np.abs(tau * nodes) > lam * tau)).sum())
    p_act = float((weights[:, None] * weights[None, :] * (np.abs(x + tau * z) > lam * tau)).sum())
    active_rate = (1.0 - sparsity) * p_in + sparsity * p_act
    return float(lam * tau * max(1.0 - active_rate / ratio, 1e-3))
