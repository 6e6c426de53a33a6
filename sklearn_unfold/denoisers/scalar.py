"""Scalar (entrywise) shrinkages ``η(r; σ, θ)`` with their mean derivative: the math.

Every shrinkage here is a plain torch function

.. code-block:: text

    value, dmean = denoiser(r, sigma, theta)

* ``r``      : ``(n_samples, N)`` tensor, the noisy pseudo-measurement ``r = x + σ z``;
* ``sigma``  : ``(n_samples, 1)`` tensor (or anything broadcastable to it), the standard deviation
  of the effective noise in ``r``;
* ``theta``  : 1-D tensor of the denoiser's parameters (see :data:`DENOISER_PARAMS`);
* ``value``  : ``η(r)``, same shape as ``r``;
* ``dmean``  : ``⟨η'(r)⟩``, the mean over the N entries of the derivative, shape ``(n_samples, 1)``.

All functions are differentiable in ``theta`` (the modules of
:mod:`sklearn_unfold.denoisers` hold ``theta`` as a parameter and call them unchanged) and
in ``r``. AMP's Onsager term and VAMP's precision updates are built from ``dmean``.

**Complex signals.** A complex ``r`` (circularly-symmetric noise, ``E|r − x|² = σ²``) is
denoised by the complex counterpart of each shrinkage: the modulus is shrunk and the phase kept,
``η(r) = (r/|r|) f(|r|)`` where the real denoiser is ``sign(r) f(|r|)``. The derivative in the
Onsager term and VAMP's precisions is then the real part of the Wirtinger derivative,

.. math:: η'(r) = \\tfrac12\\left(\\frac{∂\\,\\mathrm{Re}\\,η}{∂\\,\\mathrm{Re}\\,r}
          + \\frac{∂\\,\\mathrm{Im}\\,η}{∂\\,\\mathrm{Im}\\,r}\\right)
          = \\tfrac12\\left(f'(|r|) + \\frac{f(|r|)}{|r|}\\right),

which is ``E[|x − η(r)|² | r]/σ²`` for the posterior mean (Bayes-optimal) denoiser. ``σ``,
``θ`` and ``dmean`` stay real.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

DenoiserFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

#: Parameter names and initial values of each parameterised shrinkage (after Borgerding et al.).
DENOISER_PARAMS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "soft": (("lam", "gain"), (1.0, 1.0)),
    "bg": (("var", "logit"), (1.0, math.log(9.0))),
    "pwlin": (("a", "b", "s0", "s1", "s2"), (2.0, 4.0, 0.1, 1.5, 0.95)),
    "expo": (("width", "slope", "dip"), (2.5, 0.9, -1.0)),
    "spline": (("width", "slope", "dip"), (3.7, 0.9, -1.5)),
}


def _tiny(dtype: torch.dtype) -> float:
    """The smallest positive normal number of ``dtype``: a positivity guard with no scale."""
    return float(torch.finfo(dtype).tiny)


def _mean(d: Tensor) -> Tensor:
    return d.mean(dim=-1, keepdim=True)


def _complex_radial(r: Tensor, tau, f, fprime, gain=None) -> tuple[Tensor, Tensor]:
    r"""``η(r) = g (r/|r|) f(|r|)`` and ``⟨η'⟩ = g ⟨½(f'(|r|) + f(|r|)/|r|)⟩`` for complex ``r``.

    ``f`` vanishes at 0 for every shrinkage here, so ``f(|r|)/|r|`` is taken as its limit
    ``f'(0)`` at ``r = 0`` (where the phase is undefined and ``η(0) = 0``).
    """
    mag = r.abs()
    safe = mag.clamp_min(_tiny(mag.dtype))
    fm, dfm = f(mag), fprime(mag)
    ratio = torch.where(mag > 0, fm / safe, dfm)
    value = r * ratio
    deriv = 0.5 * (dfm + ratio)
    if gain is not None:
        return gain * value, gain * _mean(deriv)
    return value, _mean(deriv)


def soft(r: Tensor, sigma: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    r"""Scaled soft threshold.

    .. math:: η(r) = g\,\mathrm{sign}(r)\max(|r| - λσ, 0), \qquad η'(r) = g\,1\{|r| > λσ\}

    ``theta = (λ, g)``; ``g`` is optional (1 when ``theta`` has one entry).

    For complex ``r`` the modulus is shrunk and the phase kept:

    .. math:: η(r) = g\,\frac{r}{|r|}\max(|r| - λσ, 0), \qquad
              η'(r) = g\left(1 - \frac{λσ}{2|r|}\right)1\{|r| > λσ\}
    """
    lam = theta[0]
    gain = theta[1] if theta.numel() > 1 else torch.ones((), dtype=theta.dtype, device=r.device)
    tau = lam * sigma
    if r.is_complex():
        return _complex_radial(r, tau, lambda m: torch.relu(m - tau),
                               lambda m: (m > tau).to(m.dtype), gain)
    mag = torch.relu(r.abs() - tau)
    value = gain * torch.sign(r) * mag
    active = (r.abs() > tau).to(r.dtype)
    return value, gain * _mean(active)


def _bg_terms(r: Tensor, sigma: Tensor, var: Tensor, logit: Tensor
              ) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(π, a, g)`` of the Bernoulli-Gaussian posterior, in ~5 passes over the entries.

    ``a = ½ r² c`` with ``c = 1/σ² − 1/(v+σ²)``, ``π = sigmoid(a − ℓ − ½ log((v+σ²)/σ²))`` and
    ``g = v/(v+σ²)``: the per-sample ``(n, 1)`` constants are formed first, since the denoiser
    runs in every layer of every network and its passes bound ``predict``'s speed.
    """
    s2 = sigma * sigma
    vs = var + s2
    a = r * r * (0.5 * (1.0 / s2 - 1.0 / vs))
    pi = torch.sigmoid(a - (logit + 0.5 * torch.log(vs / s2)))
    return pi, a, var / vs


def bg_posterior_prob(r: Tensor, sigma: Tensor, var: Tensor, logit: Tensor) -> Tensor:
    r"""Posterior probability ``π(r)`` that an entry is active under the Bernoulli-Gaussian prior.

    .. math:: π(r) = \left(1 + \tfrac{1-p}{p}\sqrt{\tfrac{v+σ^2}{σ^2}}
              \exp\!\left(-\tfrac{r^2}{2}\left(\tfrac{1}{σ^2} - \tfrac{1}{v+σ^2}\right)\right)\right)^{-1},
              \quad p = \frac{1}{1+e^{ℓ}}

    computed in the log domain (a sigmoid), so it never overflows.
    """
    return _bg_terms(r, sigma, var, logit)[0]


def bg(r: Tensor, sigma: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    r"""Bernoulli-Gaussian MMSE denoiser ``E[x | r]`` for ``x ~ (1-p) δ0 + p N(0, v)``.

    .. math:: η(r) = π(r)\,\frac{v}{v+σ^2}\,r, \qquad
              η'(r) = \frac{v}{v+σ^2}\,(π + r π'), \qquad
              π' = π(1-π)\,r\left(\tfrac{1}{σ^2} - \tfrac{1}{v+σ^2}\right)

    ``theta = (v, ℓ)`` with sparsity rate ``p = 1/(1+e^ℓ)``; ``v`` is kept positive
    (floored at the dtype's smallest normal number, never at a fixed scale).

    For complex ``r`` the non-zeros are circularly-symmetric, ``x ~ (1-p) δ0 + p CN(0, v)``
    (one support for the real and imaginary parts), with ``CN(r; 0, s) = e^{-|r|^2/s}/(πs)``:

    .. math:: π(r) = \left(1 + \tfrac{1-p}{p}\,\tfrac{v+σ^2}{σ^2}
              \exp\!\left(-|r|^2\left(\tfrac{1}{σ^2} - \tfrac{1}{v+σ^2}\right)\right)\right)^{-1},
              \qquad η(r) = π\,\frac{v}{v+σ^2}\,r, \qquad
              η'(r) = \frac{E[|x - η(r)|^2 \mid r]}{σ^2}
              = \frac{v}{v+σ^2}\left(π + π(1-π)\,|r|^2\left(\tfrac{1}{σ^2} - \tfrac{1}{v+σ^2}\right)\right)
    """
    var = theta[0].clamp_min(_tiny(theta.dtype))
    if r.is_complex():
        s2 = sigma * sigma
        vs = var + s2
        a = (r.real.square() + r.imag.square()) * (1.0 / s2 - 1.0 / vs)
        pi = torch.sigmoid(a - (theta[1] + torch.log(vs / s2)))
        g = var / vs
        return pi * (g * r), g * (_mean(pi) + _mean(pi * (1.0 - pi) * a))
    pi, a, g = _bg_terms(r, sigma, var, theta[1])
    # r π' = π (1 − π) r² c = 2 π (1 − π) a
    return pi * (g * r), g * (_mean(pi) + 2.0 * _mean(pi * (1.0 - pi) * a))


def pwlin(r: Tensor, sigma: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    r"""Piecewise-linear shrinkage with breakpoints ``aσ`` and ``bσ``.

    .. math:: η(r) = \mathrm{sign}(r)\left[s_0|r| + (s_1-s_0)\max(|r|-aσ,0) + (s_2-s_1)\max(|r|-bσ,0)\right]

    ``theta = (a, b, s0, s1, s2)``. Complex ``r``: the modulus is mapped the same way and the
    phase kept (see the module docstring for the derivative).
    """
    a, b, s0, s1, s2 = theta[0], theta[1], theta[2], theta[3], theta[4]
    if r.is_complex():  # the same map of the modulus, phase kept
        return _complex_radial(
            r, None,
            lambda m: s0 * m + (s1 - s0) * torch.relu(m - a * sigma)
            + (s2 - s1) * torch.relu(m - b * sigma),
            lambda m: s0 + (s1 - s0) * (m > a * sigma).to(m.dtype)
            + (s2 - s1) * (m > b * sigma).to(m.dtype))
    ar = r.abs()
    value = torch.sign(r) * (
        s0 * ar + (s1 - s0) * torch.relu(ar - a * sigma) + (s2 - s1) * torch.relu(ar - b * sigma)
    )
    deriv = s0 + (s1 - s0) * (ar > a * sigma).to(r.dtype) + (s2 - s1) * (ar > b * sigma).to(r.dtype)
    return value, _mean(deriv)


def expo(r: Tensor, sigma: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    r"""Exponential shrinkage.

    .. math:: η(r) = r\left(θ_1 + θ_2 e^{-r^2/(2θ_0^2σ^2)}\right), \qquad
              η'(r) = θ_1 + θ_2 e^{-r^2/(2θ_0^2σ^2)}\left(1 - \tfrac{r^2}{θ_0^2σ^2}\right)

    ``theta = (θ0, θ1, θ2)``. Complex ``r``: ``|r|²`` replaces ``r²`` (the phase is kept) and
    ``η' = θ_1 + θ_2 e^{-|r|^2/(2θ_0^2σ^2)}(1 - |r|^2/(2θ_0^2σ^2))``.
    """
    w2 = (theta[0] * sigma) ** 2
    if r.is_complex():  # η(r) = r (θ1 + θ2 e^{-|r|²/(2θ0²σ²)}): f(m)/m is the bracket
        m2 = r.real.square() + r.imag.square()
        e = torch.exp(-m2 / (2.0 * w2))
        bracket = theta[1] + theta[2] * e
        return r * bracket, _mean(bracket - 0.5 * theta[2] * e * m2 / w2)
    e = torch.exp(-r * r / (2.0 * w2))
    value = r * (theta[1] + theta[2] * e)
    deriv = theta[1] + theta[2] * e * (1.0 - r * r / w2)
    return value, _mean(deriv)


def _bspline3(u: Tensor) -> tuple[Tensor, Tensor]:
    """Cubic B-spline ``β3(u)`` and its derivative."""
    au = u.abs()
    inner = au < 1.0
    outer = (au >= 1.0) & (au < 2.0)
    zero = torch.zeros_like(u)
    val = torch.where(inner, 2.0 / 3.0 - au**2 + 0.5 * au**3, zero)
    val = torch.where(outer, (2.0 - au) ** 3 / 6.0, val)
    der = torch.where(inner, torch.sign(u) * (-2.0 * au + 1.5 * au**2), zero)
    der = torch.where(outer, -torch.sign(u) * 0.5 * (2.0 - au) ** 2, der)
    return val, der


def spline(r: Tensor, sigma: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    r"""Cubic-spline shrinkage.

    .. math:: η(r) = r\left(θ_1 + θ_2 β_3\!\left(\tfrac{r}{θ_0σ}\right)\right), \qquad
              η'(r) = θ_1 + θ_2 β_3(u) + θ_2 u β_3'(u),\ u = \tfrac{r}{θ_0σ}

    with ``β3`` the cubic B-spline; ``theta = (θ0, θ1, θ2)``. Complex ``r``: ``u = |r|/(θ0σ)``
    (the phase is kept) and ``η' = θ_1 + θ_2 β_3(u) + ½θ_2 u β_3'(u)``.
    """
    if r.is_complex():  # the same map of the modulus: f(m)/m = θ1 + θ2 β3(u), u = m/(θ0σ)
        u = r.abs() / (theta[0] * sigma)
        b, db = _bspline3(u)
        bracket = theta[1] + theta[2] * b
        return r * bracket, _mean(bracket + 0.5 * theta[2] * u * db)
    u = r / (theta[0] * sigma)
    b, db = _bspline3(u)
    value = r * (theta[1] + theta[2] * b)
    deriv = theta[1] + theta[2] * b + theta[2] * u * db
    return value, _mean(deriv)


_DENOISERS: dict[str, DenoiserFn] = {
    "soft": soft, "bg": bg, "pwlin": pwlin, "expo": expo, "spline": spline,
}


def get_denoiser(name: str) -> DenoiserFn:
    """Return the denoiser function called ``name`` (one of :data:`DENOISER_PARAMS`)."""
    try:
        return _DENOISERS[name]
    except KeyError:
        raise ValueError(
            f"denoiser must be one of {sorted(_DENOISERS)}; got {name!r}."
        ) from None


def default_theta(name: str, **overrides: float) -> np.ndarray:
    """Initial parameters of denoiser ``name`` as a float64 array; keywords override by name."""
    if name not in DENOISER_PARAMS:
        raise ValueError(f"denoiser must be one of {sorted(DENOISER_PARAMS)}; got {name!r}.")
    names, values = DENOISER_PARAMS[name]
    theta = dict(zip(names, values, strict=True))
    for key, val in overrides.items():
        if key not in theta:
            raise ValueError(f"denoiser {name!r} has no parameter {key!r}; it has {names}.")
        theta[key] = float(val)
    return np.array([theta[n] for n in names], dtype=np.float64)


def bg_theta(sparsity: float, var: float) -> np.ndarray:
    """``theta`` of the Bernoulli-Gaussian denoiser matched to rate ``sparsity`` and variance ``var``."""
    p = float(np.clip(sparsity, 1e-9, 1 - 1e-9))
    return np.array([var, math.log((1.0 - p) / p)], dtype=np.float64)


def bg_mse(sigma2: float | np.ndarray, sparsity: float, var: float, n_points: int = 40001, *,
           complex_signals: bool = False) -> np.ndarray:
    r"""Mean-squared error of the Bernoulli-Gaussian MMSE denoiser at noise variance ``σ²``.

    .. math:: \mathrm{mse}(σ^2) = p v - E_r[|η(r)|^2], \qquad
              r \sim (1-p) N(0, σ^2) + p N(0, v + σ^2)

    (``CN`` in place of ``N`` with ``complex_signals=True``: circularly-symmetric non-zeros of
    ``E|x|² = v`` and noise of ``E|r − x|² = σ²``). The expectation is a trapezoid rule on a
    fine grid over ``±10`` standard deviations of the wider component (over the modulus
    ``|r| ∈ [0, 10\sqrt{v + σ^2}]`` for complex signals, whose density is
    ``2m e^{-m^2/s}/s``); the posterior mean has sharp transitions at small ``σ²``, where
    Gauss-Hermite quadrature is inaccurate. This is the scalar channel of AMP's state evolution.
    """
    s2 = np.atleast_1d(np.asarray(sigma2, dtype=np.float64))
    theta = torch.as_tensor(bg_theta(sparsity, var))
    out = np.empty_like(s2)
    for i, s in enumerate(s2):
        half = 10.0 * math.sqrt(var + s)
        sig = torch.tensor([[math.sqrt(s)]], dtype=torch.float64)
        if complex_signals:
            m = np.linspace(0.0, half, n_points)
            dens = (1.0 - sparsity) * 2 * m * np.exp(-m * m / s) / s
            dens += sparsity * 2 * m * np.exp(-m * m / (var + s)) / (var + s)
            val, _ = bg(torch.as_tensor(m + 0j)[None, :], sig, theta)
            out[i] = sparsity * var - np.trapezoid(dens * np.abs(val[0].numpy()) ** 2, m)
            continue
        r = np.linspace(-half, half, n_points)
        dens = (1.0 - sparsity) * np.exp(-r * r / (2 * s)) / math.sqrt(2 * math.pi * s)
        dens += sparsity * np.exp(-r * r / (2 * (var + s))) / math.sqrt(2 * math.pi * (var + s))
        val, _ = bg(torch.as_tensor(r)[None, :], sig, theta)
        out[i] = sparsity * var - np.trapezoid(dens * val[0].numpy() ** 2, r)
    return out
