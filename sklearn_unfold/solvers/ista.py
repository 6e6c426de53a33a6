"""ISTA and FISTA for the LASSO ``min_x ½‖y − Ax‖² + α‖x‖₁``, on row batches.

Both call :func:`sklearn_unfold.steps.ista_step` with fixed parameters ``γ = 1/L``,
``θ = α/L`` (``L = ‖A‖₂²``); FISTA adds :func:`~sklearn_unfold.steps.fista_momentum`.
scikit-learn's :class:`~sklearn.linear_model.Lasso` minimises ``(1/(2M))‖y − Ax‖² + α_sk‖x‖₁``,
so ``α = M·α_sk`` gives the same solution.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..operators import LinearOperator, as_operator
from ..steps import fista_momentum, ista_step
from ._loop import IterationReport, run_iterations


def ista_iterates(
    Y: Tensor,
    A: LinearOperator | Tensor,
    alpha: float,
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    accelerated: bool = False,
    lipschitz: float | None = None,
    report: IterationReport | None = None,
) -> Iterator[Tensor]:
    r"""Yield the ISTA (or, with ``accelerated=True``, FISTA) iterates ``x_1, x_2, …``.

    .. math:: x_{t+1} = \mathrm{soft}\big(z_t + Aᴴ(y − A z_t)/L;\ α/L\big)

    with ``z_t = x_t`` for ISTA and FISTA's extrapolated point for FISTA. Starts at ``x_0 = 0``;
    each row stops when ``‖x_{t+1} − x_t‖ ≤ tol·‖x_t‖``.

    Parameters
    ----------
    Y : tensor of shape (n_samples, M)
    A : LinearOperator or tensor of shape (M, N) or (n_samples, M, N)
        One operator for every sample, or one per sample (then each row has its own ``L``).
    alpha : float
        The ℓ1 weight ``α`` (``M`` times scikit-learn's Lasso ``alpha``).
    max_iter : int
    tol : float
    accelerated : bool
        FISTA instead of ISTA.
    lipschitz : float or Tensor, optional
        ``L = ‖A‖₂²`` (an ``(n, 1)`` column for per-sample operators); computed when omitted.
    report : IterationReport, optional
        Filled in with the number of iterations run.
    """
    op = as_operator(A, dtype=Y.dtype, device=Y.device)
    op.check_batch(Y.shape[0])
    L = op.norm_sq() if lipschitz is None else lipschitz
    L = torch.as_tensor(L, dtype=torch.float64).to(dtype=Y.real.dtype, device=Y.device)
    per_row = L.ndim == 2  # a per-sample operator: one step size per row
    x0 = torch.zeros((Y.shape[0], op.n_features), dtype=Y.dtype, device=Y.device)
    state = {"x": x0, "y": Y, "x_prev": x0.clone()}
    if per_row:
        state["L"] = L
    momentum = {"s": 1.0}

    def step(sub, sub_op, t):
        z = sub["x"]
        if accelerated:
            z, momentum["s"] = fista_momentum(sub["x"], sub["x_prev"], momentum["s"])
        L_t = sub["L"] if per_row else L
        x_new = ista_step(z, sub["y"], sub_op, alpha / L_t, step=1.0 / L_t)
        out = {"x": x_new, "x_prev": sub["x"]}
        if per_row:
            out["L"] = sub["L"]
        return out, None

    yield from run_iterations(step, state, op, max_iter=max_iter, tol=tol,
                              report=report if report is not None else IterationReport())


def ista(Y: Tensor, A, alpha: float, **kwargs) -> tuple[Tensor, int]:
    """Run :func:`ista_iterates` to the end; return ``(X_hat, n_iter)``."""
    report = IterationReport()
    x = None
    for x in ista_iterates(Y, A, alpha, report=report, **kwargs):  # noqa: B007 (the last value is used after the loop)
        pass
    return x, report.n_iter


def fista(Y: Tensor, A, alpha: float, **kwargs) -> tuple[Tensor, int]:
    """FISTA: :func:`ista` with ``accelerated=True``."""
    return ista(Y, A, alpha, accelerated=True, **kwargs)
