"""One iteration of each algorithm, as plain torch functions.

This module is the only place where an update rule is written. A classical solver
(:mod:`sklearn_unfold.solvers`) calls a step with its parameters fixed until convergence; a
learned layer (:mod:`sklearn_unfold.networks`) calls the same step with its parameters free.

Conventions: batches are rows (``X`` is ``(n, N)``, ``Y`` is ``(n, M)``), per-sample scalars are
``(n, 1)`` columns, and a learned matrix ``B`` of shape ``(N, M)`` acts on a residual batch ``V``
as ``V Bᵀ``. The operator ``op`` (a :class:`~sklearn_unfold.operators.LinearOperator`) is an
argument of every step, never captured: one matrix shared by the batch, a fast transform, or
one operator per sample flow through the same code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .denoisers import _tiny
from .operators import LinearOperator

#: Bounds of the stage derivatives ``α`` (dimensionless): they keep the extrinsic messages finite.
_ALPHA_MIN, _ALPHA_MAX = 1e-10, 1.0 - 1e-7


def sigma_floor(dtype: torch.dtype) -> float:
    """A guard for a noise level ``σ``: ``√tiny``, so that ``σ²`` (and ``1/σ²``) stay finite.

    It is scale-free in practice (``1.5e-154`` in float64, ``1.1e-19`` in float32): it only bites
    on a residual that is exactly zero, never on data of any ordinary scale.
    """
    return _tiny(dtype) ** 0.5


def row_norm(t: Tensor) -> Tensor:
    """``‖t_i‖`` per row, shape ``(n,)`` (complex rows through their real view: torch's complex
    norm is an order of magnitude slower on CPU)."""
    if t.is_complex():
        return torch.linalg.vector_norm(torch.view_as_real(t), dim=(-2, -1))
    return t.norm(dim=-1)


def shrink(r: Tensor, theta: Tensor, support_frac: float = 0.0) -> Tensor:
    r"""Soft threshold ``soft(r; θ)`` with optional support selection.

    With ``support_frac = q > 0``, the ``⌈qN⌉`` entries of largest magnitude in each row bypass
    the threshold (Chen et al.'s support selection): ``η(r)_i = r_i`` for them,
    ``sign(r_i) max(|r_i| − θ, 0)`` for the rest.

    ``θ`` is a scalar (a 0-d or one-entry tensor) or a per-sample ``(n, 1)`` column. For
    complex ``r`` the modulus is shrunk and the phase kept, ``r · max(|r| − θ, 0)/|r|`` (the
    proximal map of ``θ Σ|x_i|`` with the complex modulus).
    """
    if isinstance(theta, Tensor) and theta.ndim == 1:
        theta = theta.reshape(())
    if r.is_complex():
        mag = r.abs()
        value = r * (torch.relu(mag - theta) / mag.clamp_min(_tiny(mag.dtype)))
    else:
        value = torch.sign(r) * torch.relu(r.abs() - theta)
    if support_frac > 0:
        k = min(r.shape[-1], int(math.ceil(support_frac * r.shape[-1])))
        if k > 0:  # the row's k-th largest magnitude, as a cut (faster than scattering indices)
            mag = r.detach().abs()
            cut = mag.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
            value = torch.where(mag >= cut, r, value)
    return value


def ista_step(
    x: Tensor,
    y: Tensor,
    op: LinearOperator,
    theta: Tensor,
    *,
    B: Tensor | None = None,
    step: float | Tensor = 1.0,
    support_frac: float = 0.0,
) -> Tensor:
    r"""One (coupled) ISTA step.

    .. math:: x_{t+1} = \mathrm{soft}\big(x_t + γ\,B\,(y - A x_t);\ θ\big)

    * ISTA: ``B = Aᴴ`` (``B=None``), ``γ = 1/L``, ``θ = α/L`` with ``L = ‖A‖₂²``;
    * LISTA-CP: ``B`` learned (initialised at ``Aᴴ/L``), ``γ = 1``;
    * ALISTA: ``B`` analytic and fixed, ``γ`` and ``θ`` learned per layer.
    """
    resid = op.residual(y, x)
    back = op.adjoint(resid) if B is None else resid @ B.T
    return shrink(x + step * back, theta, support_frac)


def lista_step(x: Tensor, Wy: Tensor, S: Tensor, theta: Tensor, *, support_frac: float = 0.0
               ) -> Tensor:
    r"""One LISTA step (Gregor-LeCun form).

    .. math:: x_{t+1} = \mathrm{soft}(W y + S x_t;\ θ)

    ``Wy`` is the precomputed ``(n, N)`` batch ``y Wᵀ``. With ``W = Aᴴ/L``, ``S = I − AᴴA/L``,
    ``θ = α/L`` this is exactly :func:`ista_step`.
    """
    return shrink(Wy + x @ S.T, theta, support_frac)


def fista_momentum(x: Tensor, x_prev: Tensor, s_prev: float) -> tuple[Tensor, float]:
    r"""FISTA extrapolation.

    .. math:: s_t = \tfrac{1}{2}\left(1 + \sqrt{1 + 4 s_{t-1}^2}\right), \qquad
              z_t = x_t + \tfrac{s_{t-1} - 1}{s_t}(x_t - x_{t-1})

    Returns ``(z_t, s_t)``; ISTA's step is then taken at ``z_t``.
    """
    s = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * s_prev * s_prev))
    return x + ((s_prev - 1.0) / s) * (x - x_prev), s


def amp_step(
    x: Tensor | None,
    v_prev: Tensor | None,
    onsager: Tensor | None,
    y: Tensor,
    op: LinearOperator,
    denoiser,
    *,
    B: Tensor | None = None,
    step: float | Tensor = 1.0,
    onsager_scale: float | Tensor = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""One AMP / LAMP iteration.

    .. math::
        v_t &= y - A\hat x_t + b_t v_{t-1} \\
        σ_t &= \|v_t\|/\sqrt{M} \\
        \hat x_{t+1} &= η(\hat x_t + B v_t;\ σ_t, θ) \\
        b_{t+1} &= c\,(N/M)\,\langle η'(\hat x_t + B v_t;\ σ_t, θ)\rangle

    AMP is ``B = Aᴴ`` (``B=None``, ``β = 1``) and ``c = 1``. LAMP learns ``θ`` and ``c`` per
    layer and either a matrix ``B`` (one fixed ``A``), or only a scalar ``β`` with
    ``B = β Aᴴ`` taken from each sample's own operator (``B=None``, ``step=β``): the
    operator-independent form that serves a random ``A`` per sample.
    ``denoiser(r, σ)`` returns ``(η(r), ⟨η'⟩)`` (:mod:`sklearn_unfold.denoisers`). With a
    denoiser that sees the whole signal (a CNN), ``⟨η'⟩ = \mathrm{div}\,η/N`` and the Onsager
    coefficient ``(N/M)⟨η'⟩ = \mathrm{div}\,η/M`` is D-AMP's (Metzler, Maleki and Baraniuk,
    IEEE TIT 2016).
    Start with ``x̂_0 = 0``, ``v_{−1} = 0``, ``b_0 = 0`` (so ``v_0 = y``); passing ``x=None``
    (``v_prev`` and ``onsager`` are then ignored) takes that first step without multiplying by
    the zero estimate.

    Returns ``(x̂_{t+1}, v_t, b_{t+1}, σ_t)``.
    """
    M, N = op.n_measurements, op.n_features
    if x is None:  # x̂_0 = 0: v_0 = y and r_0 = B y
        v = y
        r = step * op.adjoint(v) if B is None else v @ B.T
    else:
        v = op.residual(y + onsager * v_prev, x)
        # x + v Bᵀ in one GEMM (its add is fused): one pass fewer over the (n, N) entries
        r = x + step * op.adjoint(v) if B is None else torch.addmm(x, v, B.T)
    sigma = row_norm(v).unsqueeze(-1) / math.sqrt(M)
    sigma = sigma.clamp_min(sigma_floor(sigma.dtype))  # only a zero residual: no absolute scale
    x_new, dmean = denoiser(r, sigma)
    return x_new, v, onsager_scale * (N / M) * dmean, sigma


def vamp_initial_precision(Y: Tensor, frobenius_sq: float | Tensor, noise_var: float | Tensor,
                           signal_second_moment: float) -> Tensor:
    r"""VAMP's starting precision ``γ2 = 1/m̂`` per sample, ``m̂`` estimated from the measurements.

    For a rotationally invariant ``A``, ``E‖Ax‖² = ‖x‖²‖A‖²_F/N``, so each sample's second
    moment is estimated from its measurement energy,

    .. math::
        \hat m = \max\Big(\frac{‖y‖² - Mσ_w²}{‖A‖_F^2},\ 10^{-2}\,E[x^2]\Big),

    floored at 1 % of the prior's ``E[x²]`` (a measurement of pure noise). The reference VAMP
    code starts the same way (``‖y‖²/N``); a constant ``1/E[x²]`` for every sample starts
    signals with more or fewer non-zeros than average at the wrong precision and lags by
    0.1–0.4 dB at each iteration on the ``giid`` problem.

    Parameters
    ----------
    Y : Tensor of shape (n, M)
    frobenius_sq : float or Tensor
        ``‖A‖²_F`` (:meth:`~sklearn_unfold.operators.LinearOperator.frobenius_sq`): a scalar,
        or an ``(n, 1)`` column for per-sample operators.
    noise_var : float or Tensor
        ``σw²`` (the LMMSE stage's ``1/γw``).
    signal_second_moment : float
        The prior's ``E[x²]``.

    Returns
    -------
    Tensor of shape (n, 1)
    """
    if isinstance(frobenius_sq, Tensor):
        frobenius_sq = frobenius_sq.to(device=Y.device, dtype=Y.real.dtype)
    energy = (Y.abs() ** 2 if Y.is_complex() else Y * Y).sum(dim=-1, keepdim=True)
    m_hat = ((energy - Y.shape[-1] * noise_var) / frobenius_sq).clamp_min(
        1e-2 * signal_second_moment)
    return 1.0 / m_hat


def vamp_precision_bounds(gamma0: Tensor) -> tuple[Tensor, Tensor]:
    r"""The range VAMP's precisions ``γ1, γ2`` are kept in, relative to the starting ``γ0``.

    ``[10^{-12} γ0,\ 4 γ0/ε²]`` (``ε`` the dtype's machine epsilon): an error variance below
    ``ε²/4`` times the signal's second moment is below the round-off of the estimate itself, and
    one twelve orders of magnitude above it carries no information. Both ends scale with the
    data (``γ0 = 1/m̂``), so scaling ``Y`` and ``X`` together scales every precision by the
    same factor, and neither ``γ`` nor ``1/γ`` can overflow or underflow on data of any
    ordinary scale (the unbounded updates ran ``γ`` up to ``1/σw²`` for a tiny ``σw²``).

    Parameters
    ----------
    gamma0 : Tensor of shape (n, 1)
        The starting precision (:func:`vamp_initial_precision`).

    Returns
    -------
    (low, high) : tuple of Tensor of shape (n, 1)
    """
    eps = float(torch.finfo(gamma0.dtype).eps)
    return gamma0 * 1e-12, gamma0 * (4.0 / (eps * eps))


def _clamp_precision(gamma: Tensor, bounds: tuple[Tensor, Tensor] | None) -> Tensor:
    if bounds is None:  # positivity only (a learned correction may push γ through zero)
        return gamma.clamp_min(_tiny(gamma.dtype))
    return torch.minimum(torch.maximum(gamma, bounds[0]), bounds[1])


def _extrinsic(x: Tensor, alpha: Tensor, r: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    r"""Onsager-corrected message: ``η = γ/α``, ``γ_out = η − γ``, ``r_out = (η x − γ r)/γ_out``."""
    alpha = alpha.clamp(_ALPHA_MIN, _ALPHA_MAX)
    gamma_out = gamma * (1.0 - alpha) / alpha
    r_out = (x - alpha * r) / (1.0 - alpha)
    return r_out, gamma_out


def vamp_step(
    r2: Tensor,
    gamma2: Tensor,
    context,
    op: LinearOperator,
    gamma_w: float | Tensor,
    denoiser,
    *,
    gain_scale: Tensor | None = None,
    gamma1_scale: float | Tensor = 1.0,
    gamma2_scale: float | Tensor = 1.0,
    precision_bounds: tuple[Tensor, Tensor] | None = None,
    y: Tensor | None = None,
) -> tuple[Tensor, ...]:
    r"""One VAMP / LDVAMP iteration: the LMMSE stage, then the denoiser stage.

    .. math::
        &\hat x_2, α_2 = \mathrm{LMMSE}(r_2, γ_2), \quad γ_1 = c_1 γ_2 (1-α_2)/α_2,
        \quad r_1 = (\hat x_2 - α_2 r_2)/(1-α_2) \\
        &\hat x_1 = g_1(r_1; 1/\sqrt{γ_1}), \quad α_1 = \langle g_1' \rangle, \quad
        γ_2^+ = c_2 γ_1 (1-α_1)/α_1, \quad r_2^+ = (\hat x_1 - α_1 r_1)/(1-α_1)

    with the LMMSE stage ``x̂2 = (γw AᴴA + γ2 I)⁻¹(γw Aᴴy + γ2 r2)`` of the operator ``op``
    (:meth:`~sklearn_unfold.operators.LinearOperator.lmmse`: through its SVD, in closed form
    for row-orthogonal operators, or by conjugate gradients) and ``context`` its
    :meth:`~sklearn_unfold.operators.LinearOperator.lmmse_context` of the measurements.
    Classical VAMP has ``c_1 = c_2 = 1`` and the matched ``γ_w = 1/σ_w²``; LDVAMP learns
    ``γ_w``, the corrections ``c_1, c_2``, the gains and the denoiser per layer.
    ``denoiser(r, σ)`` returns ``(g_1(r), ⟨g_1'⟩)`` (:mod:`sklearn_unfold.denoisers`; a
    non-separable one makes this D-VAMP). Start from ``r_2 = 0`` and
    :func:`vamp_initial_precision`. Returns ``(x̂1, r2⁺, γ2⁺, γ1)``.

    The LMMSE stage depends on ``γw`` and ``γ2`` only through their ratio, and is computed
    from ``γ2/γw`` with a unit noise precision: a tiny ``σw²`` (a huge ``γw``) cannot overflow
    it. ``precision_bounds`` (:func:`vamp_precision_bounds` of the starting precision) keeps
    ``γ1`` and ``γ2⁺`` in a range relative to the data; without it they are only kept positive.

    With the measurements ``y`` given, the noise precision is also re-estimated per sample from
    the LMMSE stage's belief ``N(x̂2, C)``, ``C = (γw AᴴA + γ2 I)⁻¹``, by expectation
    maximisation (adaptive VAMP; Fletcher, Sahraee-Ardakan, Rangan and Schniter, "Rigorous
    dynamics and consistent estimation in arbitrarily conditioned linear systems", NeurIPS
    2017), and returned as a fifth output:

    .. math:: \frac{1}{γ_w^+} = \frac{1}{M}\Big(\|y - A\hat x_2\|^2
              + \mathrm{tr}(A C Aᴴ)\Big), \qquad \mathrm{tr}(A C Aᴴ) = \frac{N(1-α_2)}{γ_w}

    (``γw`` is then a per-sample ``(n, 1)`` column).
    """
    x2, alpha2 = op.lmmse(r2, gamma2 / gamma_w, context, 1.0, gain_scale=gain_scale)
    r1, gamma1 = _extrinsic(x2, alpha2, r2, gamma2)
    gamma1 = _clamp_precision(gamma1_scale * gamma1, precision_bounds)
    x1, alpha1 = denoiser(r1, gamma1.rsqrt())
    r2_new, gamma2_new = _extrinsic(x1, alpha1, r1, gamma1)
    out = (x1, r2_new, _clamp_precision(gamma2_scale * gamma2_new, precision_bounds), gamma1)
    if y is None:
        return out
    M, N = op.n_measurements, op.n_features
    resid = row_norm(op.residual(y, x2)).unsqueeze(-1) ** 2
    noise_var = (resid + N * (1.0 - alpha2) / gamma_w) / M
    return (*out, 1.0 / noise_var.clamp_min(_tiny(noise_var.dtype)))
