"""Picking shrinkage parameters: AMP's scalar state evolution, and a data fit for one step.

**State evolution** (the analytic thresholds of the classical solvers). For i.i.d. Gaussian
``A``, AMP's effective noise variance obeys
``τ²_{t+1} = σw² + (N/M)·E[(soft(X + τ_t Z; λτ_t) − X)²]``, ``X`` from the prior, ``Z ~ N(0, 1)``.
For a Bernoulli-Gaussian ``X`` the expectation has a closed form: with ``r ~ N(0, s²)``,
``a = θ/s`` and ``Q`` the Gaussian tail,

.. math::
    E[\\mathrm{soft}(r;θ)^2] = 2\\left[(s^2 + θ^2) Q(a) − θ s φ(a)\\right], \\qquad
    E[r\\,\\mathrm{soft}(r;θ)] = 2 s^2 Q(a),

and ``E[x | r] = v r / (v + τ²)`` on the active part.

For complex signals (``Z ~ CN(0, 1)``, circularly-symmetric non-zeros, the complex soft
threshold that shrinks the modulus) the modulus ``m = |r|`` of ``r ~ CN(0, s²)`` is Rayleigh
and, with ``e = exp(−θ²/s²)`` and ``c = θ√π s·erfc(θ/s)``,

.. math::
    E[(m − θ)_+^2] = s^2 e − c, \\qquad E[m (m − θ)_+] = s^2 e − c/2, \\qquad
    E\\big[(1 − \\tfrac{θ}{2m}) 1\\{m > θ\\}\\big] = e − \\tfrac{c}{2 s^2}.

**A data fit** (:func:`fit_step_threshold`): the step and threshold of one shrinkage step that
fit training pairs best, which learned ISTA uses to start each new layer.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar
from scipy.special import erfc, ndtr
from torch import Tensor

from .steps import shrink

_SQRT_2PI = np.sqrt(2.0 * np.pi)


def _tail(a):
    return ndtr(-a)


def _pdf(a):
    return np.exp(-0.5 * a * a) / _SQRT_2PI


def _soft_second_moment(s2, theta):
    s = np.sqrt(s2)
    a = theta / s
    return 2.0 * ((s2 + theta**2) * _tail(a) - theta * s * _pdf(a))


def _complex_moments(s2, theta):
    """``(E[(m−θ)₊²], E[m(m−θ)₊], E[(1 − θ/(2m))1{m>θ}])`` for the modulus of ``CN(0, s²)``."""
    s = np.sqrt(s2)
    e = np.exp(-theta**2 / s2)
    c = theta * np.sqrt(np.pi) * s * erfc(theta / s)
    return s2 * e - c, s2 * e - 0.5 * c, e - 0.5 * c / s2


def soft_mse(tau2, lam, sparsity: float, var: float, *, complex_signals: bool = False
             ) -> np.ndarray:
    r"""``E[|soft(X + τZ; λτ) − X|²]`` for ``X ~ (1−p) δ0 + p N(0, v)`` (closed form, broadcast).

    With ``complex_signals=True``: ``X ~ (1−p) δ0 + p CN(0, v)``, ``Z ~ CN(0, 1)`` and the
    complex soft threshold; the active part uses ``E[x | r] = v r/(v + τ²)``, so that
    ``E|η − x|² = E|η|² − 2\frac{v}{v+τ^2}E[|r|(|r| − θ)_+] + v``.
    """
    tau2 = np.asarray(tau2, dtype=np.float64)
    theta = np.asarray(lam, dtype=np.float64) * np.sqrt(tau2)
    if complex_signals:
        inactive = _complex_moments(tau2, theta)[0]
        s2 = var + tau2
        sq, cross, _ = _complex_moments(s2, theta)
        return (1.0 - sparsity) * inactive + sparsity * (sq - 2.0 * var / s2 * cross + var)
    inactive = _soft_second_moment(tau2, theta)
    s2 = var + tau2
    active = _soft_second_moment(s2, theta) - 4.0 * var * _tail(theta / np.sqrt(s2)) + var
    return (1.0 - sparsity) * inactive + sparsity * active


def soft_active_rate(tau2, lam, sparsity: float, var: float, *, complex_signals: bool = False
                     ) -> np.ndarray:
    """``E[η'(X + τZ)]``: ``P(|X + τZ| > λτ)`` (the expected fraction of non-zeros in the
    soft-threshold output) for real signals, ``E[(1 − λτ/(2|r|)) 1{|r| > λτ}]`` for complex."""
    tau2 = np.asarray(tau2, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    if complex_signals:
        theta = lam * np.sqrt(tau2)
        return ((1.0 - sparsity) * _complex_moments(tau2, theta)[2]
                + sparsity * _complex_moments(var + tau2, theta)[2])
    return (1.0 - sparsity) * 2.0 * _tail(lam) + sparsity * 2.0 * _tail(
        lam * np.sqrt(tau2) / np.sqrt(var + tau2))


def soft_state_evolution(lam, sparsity: float, var: float, noise_var: float, ratio: float,
                         n_iter: int = 500, rtol: float = 1e-10, *,
                         complex_signals: bool = False) -> np.ndarray:
    """Fixed point ``τ²_∞`` of soft-threshold AMP's state evolution for each ``λ`` (``ratio = M/N``;
    complex signals and noise with ``complex_signals=True``)."""
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    tau2 = np.full(lam.shape, noise_var + sparsity * var / ratio)
    for _ in range(n_iter):
        new = noise_var + soft_mse(tau2, lam, sparsity, var,
                                   complex_signals=complex_signals) / ratio
        done = np.all(np.abs(new - tau2) <= rtol * new)
        tau2 = new
        if done:
            break
    return tau2


def soft_threshold_for_prior(sparsity: float, var: float, noise_var: float, ratio: float,
                             algorithm: str = "amp", *, complex_signals: bool = False) -> float:
    """The soft threshold multiplier ``λ`` with the lowest state-evolution fixed point.

    ``ratio`` is ``M/N``. VAMP (``algorithm="vamp"``) uses AMP's value: both then approach the
    same LASSO fixed point. ``λ`` is dimensionless: it is computed in units of the prior's
    variance (``var = 1``), so it does not depend on the data's scale.
    """
    if var > 0:
        var, noise_var = 1.0, noise_var / var
    kw = {"complex_signals": complex_signals}
    grid = np.linspace(0.2, 4.0, 39)
    best = float(grid[np.argmin(soft_state_evolution(grid, sparsity, var, noise_var, ratio,
                                                     **kw))])
    res = minimize_scalar(
        lambda lam: float(soft_state_evolution(lam, sparsity, var, noise_var, ratio, **kw)[0]),
        bounds=(max(best - 0.1, 0.05), best + 0.1), method="bounded",
        options={"xatol": 1e-4})
    return float(res.x)


def lasso_alpha_for_prior(sparsity: float, var: float, noise_var: float, ratio: float, *,
                          complex_signals: bool = False) -> float:
    r"""The LASSO weight ``α`` whose solution AMP-soft with the best threshold converges to.

    AMP-soft with threshold ``λτ`` has the LASSO fixed point with (Donoho-Maleki-Montanari
    calibration) ``α = λτ (1 − (N/M) E[η'])``, ``τ²`` the state-evolution fixed point and ``E[η']``
    the :func:`soft_active_rate` (``P(|X + τZ| > λτ)`` for real signals).
    Computed in units of the prior's variance and scaled back (``α`` scales with ``√var``), so
    it is exactly proportional to the data's scale.
    """
    unit = float(np.sqrt(var)) if var > 0 else 1.0
    if var > 0:
        var, noise_var = 1.0, noise_var / var
    kw = {"complex_signals": complex_signals}
    lam = soft_threshold_for_prior(sparsity, var, noise_var, ratio, **kw)
    tau2 = float(soft_state_evolution(lam, sparsity, var, noise_var, ratio, **kw)[0])
    rate = float(soft_active_rate(tau2, lam, sparsity, var, **kw))
    return float(unit * lam * np.sqrt(tau2) * max(1.0 - rate / ratio, 1e-3))


@torch.no_grad()
def fit_step_threshold(x: Tensor, update: Tensor, target: Tensor, theta0: float, *,
                       support_frac: float = 0.0, tune_step: bool = True,
                       max_samples: int = 1024) -> dict[str, float]:
    r"""The step ``γ`` and threshold ``θ`` of one shrinkage step that fit the data best.

    .. math:: (γ, θ) = \arg\min_{γ, θ > 0}
              \big\|\,\mathrm{shrink}(x + γ\,u;\ θ) - x^\star\big\|_F^2

    with ``shrink`` the soft threshold with optional support selection
    (:func:`~sklearn_unfold.steps.shrink`). Learned ISTA uses it when a layer joins the network:
    ``u`` is the layer's update at its current weights, so the search rescales the step and
    sets the threshold in one go, where Adam would need hundreds of steps to move them that far.

    The search is a coarse grid (steps ``γ`` from ``1/4`` to ``8`` by factors of 2; thresholds
    at quantiles of ``|x + γu|`` and ``θ0``), then Nelder-Mead in ``(log γ, log θ)`` from the
    best grid point, to about 1 % (``γ`` within ``[1/64, 64]``, ``θ`` below twice the largest
    ``|x + 64u|``, past which the objective is flat).
    The start ``(1, θ0)`` is among the candidates, so the result is never worse than it on
    these samples.

    Parameters
    ----------
    x : Tensor of shape (n, N)
        The layer's input estimate.
    update : Tensor of shape (n, N)
        ``u``: the layer's pre-threshold output minus ``x`` at step 1.
    target : Tensor of shape (n, N)
        The true signals.
    theta0 : float
        The current threshold.
    support_frac : float, default=0.0
        Fraction of entries per row that bypass the threshold.
    tune_step : bool, default=True
        Search ``γ`` too; ``False`` keeps ``γ = 1`` and fits ``θ`` alone.
    max_samples : int, default=1024
        Rows used (the first ones).

    Returns
    -------
    dict
        ``step`` (``γ``), ``threshold`` (``θ``), ``nmse_db_before`` (at ``(1, θ0)``) and
        ``nmse_db_after``, on the rows used.
    """
    x, u, X = x[:max_samples], update[:max_samples], target[:max_samples]
    energy = float((X.abs() ** 2).sum().clamp_min(torch.finfo(X.real.dtype).tiny))
    tiny = float(torch.finfo(x.real.dtype).tiny) ** 0.5

    def nmse(step: float, theta: float) -> float:
        th = torch.full((1,), max(theta, 0.0), dtype=x.real.dtype, device=x.device)
        err = float(((shrink(x + step * u, th, support_frac) - X).abs() ** 2).sum()) / energy
        return err if np.isfinite(err) else np.inf

    theta0 = max(float(theta0), tiny)
    best = (nmse(1.0, theta0), 1.0, theta0)
    before = best[0]
    steps = np.geomspace(0.25, 8.0, 6) if tune_step else np.ones(1)
    levels = torch.tensor([0.6, 0.8, 0.9, 0.95, 0.98], dtype=x.real.dtype, device=x.device)
    stride = max(1, x.numel() // 65536)  # quantiles of a regular subsample of the entries
    for step in steps:
        quant = torch.quantile((x + float(step) * u).abs().flatten()[::stride], levels).tolist()
        for theta in (max(q, tiny) for q in [theta0, *quant]):
            err = nmse(float(step), theta)
            if err < best[0]:
                best = (err, float(step), theta)

    def objective(p: np.ndarray) -> float:
        step = float(np.exp(p[0])) if tune_step else 1.0
        return nmse(step, float(np.exp(p[-1])))

    # Beyond max|x + γu| every thresholded entry is 0 and the objective is flat: bound the search.
    cap = max(theta0, 2.0 * (float(x.abs().max()) + 64.0 * float(u.abs().max()))) + tiny
    bounds = [(np.log(1 / 64), np.log(64.0))] if tune_step else []
    bounds.append((np.log(tiny), np.log(cap)))
    start = np.log([best[1], best[2]] if tune_step else [best[2]])
    res = minimize(objective, start, method="Nelder-Mead", bounds=bounds,
                   options={"xatol": 1e-2, "fatol": 1e-6, "maxfev": 100})
    if res.fun < best[0]:
        best = (float(res.fun), float(np.exp(res.x[0])) if tune_step else 1.0,
                float(np.exp(res.x[-1])))
    to_db = lambda e: float(10.0 * np.log10(max(e, 1e-300)))  # noqa: E731
    return {"step": best[1], "threshold": best[2], "nmse_db_before": to_db(before),
            "nmse_db_after": to_db(best[0])}
