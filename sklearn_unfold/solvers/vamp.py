"""Vector AMP (Rangan-Schniter-Fletcher) on row batches, through the SVD of ``A``.

Each iteration is :func:`sklearn_unfold.steps.vamp_step` with the matched noise precision
``γw = 1/σw²`` and no corrections; see that function for the update equations.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..denoisers import as_denoiser
from ..operators import LinearOperator, as_operator
from ..steps import vamp_initial_precision, vamp_precision_bounds, vamp_step
from ._loop import IterationReport, run_iterations


def vamp_iterates(
    Y: Tensor,
    A: LinearOperator | Tensor,
    denoiser,
    theta: Tensor | None,
    noise_var: float,
    signal_second_moment: float,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    damping: float = 1.0,
    adaptive_noise: bool = False,
    report: IterationReport | None = None,
) -> Iterator[Tensor]:
    r"""Yield the VAMP denoiser outputs ``x̂1`` after each iteration.

    Starts with the LMMSE stage from ``r2 = 0`` and ``γ2 = 1/m̂``, each sample's second moment
    ``m̂`` estimated from its measurement energy
    (:func:`~sklearn_unfold.steps.vamp_initial_precision`). With damping ``β < 1`` the
    message ``r2`` and the precision ``γ2`` are damped:
    ``r2 ← β r2⁺ + (1−β) r2``, ``γ2 ← (β/√γ2⁺ + (1−β)/√γ2)⁻²``.
    A row whose estimate becomes non-finite is frozen at its last finite iterate. The
    precisions are kept within a range relative to the starting ``γ2``
    (:func:`~sklearn_unfold.steps.vamp_precision_bounds`), so the iterates scale with the data
    and stay finite for any ``noise_var > 0``.

    Parameters
    ----------
    denoiser : torch.nn.Module, str or callable
        The denoiser stage, called as ``denoiser(r, σ) -> (x̂1, ⟨g'⟩)``: a module of
        :mod:`sklearn_unfold.denoisers` or a user's (a fixed CNN makes this D-VAMP), a name, or
        a scalar function ``fn(r, σ, θ)`` with its ``theta``
        (:func:`~sklearn_unfold.denoisers.as_denoiser`).
    theta : Tensor or None
        The parameters of a function or named shrinkage; ``None`` for a module.
    noise_var : float
        ``σw²``; the LMMSE stage uses ``γw = 1/σw²`` (with ``adaptive_noise``, at the first
        iteration).
    signal_second_moment : float
        The prior's ``E[x²]``; it floors the per-sample estimate of the initial precision.
    adaptive_noise : bool, default=False
        Re-estimate each sample's noise precision at every iteration by expectation
        maximisation (adaptive VAMP, see :func:`~sklearn_unfold.steps.vamp_step`), starting
        from ``1/noise_var``: measurements of any SNR are then recovered as if their noise
        level were known.

    The LMMSE stage is the operator's
    (:meth:`~sklearn_unfold.operators.LinearOperator.lmmse`): through its SVD (computed once
    and cached by dense operators), in closed form for row-orthogonal operators, or by
    conjugate gradients.
    """
    op = as_operator(A, dtype=Y.dtype, device=Y.device)
    op.check_batch(Y.shape[0])
    denoiser = as_denoiser(denoiser, theta)
    n = Y.shape[0]
    gamma0 = vamp_initial_precision(Y, op.frobenius_sq(), noise_var, signal_second_moment)
    state = {
        "x": torch.zeros((n, op.n_features), dtype=Y.dtype, device=Y.device),
        "ctx": op.lmmse_context(Y),
        "r2": torch.zeros((n, op.n_features), dtype=Y.dtype, device=Y.device),
        "gamma2": gamma0, "gamma0": gamma0,
    }
    gamma_w = 1.0 / noise_var
    if adaptive_noise:
        state["y"] = Y
        state["gamma_w"] = torch.full((n, 1), gamma_w, dtype=gamma0.dtype, device=Y.device)

    def step(sub, sub_op, t):
        out = vamp_step(sub["r2"], sub["gamma2"], sub["ctx"], sub_op,
                        sub["gamma_w"] if adaptive_noise else gamma_w, denoiser,
                        precision_bounds=vamp_precision_bounds(sub["gamma0"]),
                        y=sub["y"] if adaptive_noise else None)
        x1, r2, gamma2 = out[:3]
        if damping != 1.0 and t > 0:
            r2 = damping * r2 + (1.0 - damping) * sub["r2"]
            gamma2 = (damping * gamma2.rsqrt() + (1.0 - damping) * sub["gamma2"].rsqrt()) ** -2
        new = {"x": x1, "r2": r2, "gamma2": gamma2}
        if adaptive_noise:
            new["gamma_w"] = out[4]
        return new, None

    yield from run_iterations(step, state, op, max_iter=max_iter, tol=tol,
                              report=report if report is not None else IterationReport())


def vamp(Y: Tensor, A, denoiser, theta: Tensor | None, noise_var: float,
         signal_second_moment: float, **kwargs) -> tuple[Tensor, int]:
    """Run :func:`vamp_iterates` to the end; return ``(X_hat, n_iter)``."""
    report = IterationReport()
    x = None
    for x in vamp_iterates(Y, A, denoiser, theta, noise_var, signal_second_moment,  # noqa: B007 (the last value is used after the loop)
                           report=report, **kwargs):
        pass
    return x, report.n_iter
