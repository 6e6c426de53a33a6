"""Approximate message passing (Donoho-Maleki-Montanari) on row batches.

Each iteration is :func:`sklearn_unfold.steps.amp_step` with ``B = Aᴴ`` and the analytic
Onsager coefficient; see that function for the update equations.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..denoisers import as_denoiser
from ..operators import LinearOperator, as_operator
from ..steps import amp_step
from ._loop import IterationReport, run_iterations


def amp_iterates(
    Y: Tensor,
    A: LinearOperator | Tensor,
    denoiser,
    theta: Tensor | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    damping: float = 1.0,
    report: IterationReport | None = None,
) -> Iterator[Tensor]:
    r"""Yield the AMP estimates ``x̂_1, x̂_2, …``.

    .. math::
        v_t = y - A\hat x_t + \tfrac{N}{M}\langle η'_{t-1}\rangle v_{t-1}, \quad
        σ_t = \|v_t\|/\sqrt M, \quad
        \hat x_{t+1} = β\,η(\hat x_t + Aᴴ v_t;\ σ_t, θ) + (1-β)\,\hat x_t

    with damping ``β`` (1 = undamped). ``denoiser`` is called as
    ``denoiser(r, σ) -> (η(r), ⟨η'⟩)``: a module of :mod:`sklearn_unfold.denoisers` or a user's
    (a fixed CNN makes this D-AMP), a name, or a scalar function ``fn(r, σ, θ)`` with its
    ``theta`` (:func:`~sklearn_unfold.denoisers.as_denoiser`). ``A`` is any operator
    (:func:`~sklearn_unfold.operators.as_operator`): one shared by the batch, or one per sample.
    Each row stops on its own at ``tol``. A row whose ``σ_t`` (AMP's own estimate of its error)
    grows past 1.5 times its smallest value, or becomes non-finite, has diverged: it is frozen
    at the iterate with the smallest ``σ_t`` and counted in ``report.n_diverged``.
    """
    op = as_operator(A, dtype=Y.dtype, device=Y.device)
    op.check_batch(Y.shape[0])
    denoiser = as_denoiser(denoiser, theta)
    n = Y.shape[0]
    x0 = torch.zeros((n, op.n_features), dtype=Y.dtype, device=Y.device)
    state = {
        "x": x0, "y": Y, "v": torch.zeros_like(Y),
        "b": torch.zeros((n, 1), dtype=Y.real.dtype, device=Y.device),
    }

    def step(sub, sub_op, t):
        x_new, v, b, sigma = amp_step(sub["x"], sub["v"], sub["b"], sub["y"], sub_op, denoiser)
        if damping != 1.0 and t > 0:
            x_new = damping * x_new + (1.0 - damping) * sub["x"]
        return {"x": x_new, "v": v, "b": b}, sigma

    yield from run_iterations(step, state, op, max_iter=max_iter, tol=tol, divergence_factor=1.5,
                              report=report if report is not None else IterationReport())


def amp(Y: Tensor, A, denoiser, theta: Tensor | None = None, **kwargs) -> tuple[Tensor, int]:
    """Run :func:`amp_iterates` to the end; return ``(X_hat, n_iter)``."""
    report = IterationReport()
    x = None
    for x in amp_iterates(Y, A, denoiser, theta, report=report, **kwargs):  # noqa: B007 (the last value is used after the loop)
        pass
    return x, report.n_iter
