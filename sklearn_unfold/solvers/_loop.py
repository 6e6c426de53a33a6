"""The iteration driver shared by every classical solver.

A solver supplies a ``step(state, op, t) -> (new_state, quality)`` closure over its fixed
parameters. The driver runs it on the rows that are still active, narrowing the state and the
operator together (a per-sample operator keeps only the active samples' maps; a shared one
serves them all), so that every sample stops on its own when its relative change falls below
``tol`` (a sample's result never depends on the other samples in the batch), and guards
against divergence: a row whose new estimate is not finite, or whose ``quality`` (a
per-sample error proxy such as AMP's ``σ_t``) grows past ``divergence_factor`` times its best
value, is frozen at its best iterate and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..operators import LinearOperator

StepFn = Callable[[dict[str, Tensor], LinearOperator, int], tuple[dict[str, Tensor], Tensor | None]]


@dataclass
class IterationReport:
    """What a finished run reports: iterations used and how many rows diverged or did not converge."""

    n_iter: int = 0
    n_diverged: int = 0
    n_unconverged: int = 0
    diverged: Tensor | None = field(default=None, repr=False)


def run_iterations(
    step: StepFn,
    state: dict[str, Tensor],
    op: LinearOperator,
    *,
    max_iter: int,
    tol: float,
    report: IterationReport,
    divergence_factor: float = 10.0,
) -> Iterator[Tensor]:
    """Run ``step`` for at most ``max_iter`` iterations, yielding the full estimate ``state['x']``.

    ``state`` maps names to tensors whose first dimension is the sample axis; ``step`` receives
    and returns such a dict restricted to the active rows (plus ``'x'``, the current estimate),
    with ``op`` restricted to the same rows.
    ``report`` is filled in as the run goes.
    """
    x = state["x"]
    n = x.shape[0]
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    diverged = torch.zeros(n, dtype=torch.bool, device=x.device)
    best_q = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    best_x = x.clone()
    op.check_batch(n)
    sub_op, n_active = op, n
    for t in range(max_iter):
        idx = active.nonzero().squeeze(1)
        if idx.numel() != n_active:  # rows stopped: narrow the operator with the state
            sub_op, n_active = op.take(idx), idx.numel()
        sub = {k: v[idx] for k, v in state.items()}
        new, quality = step(sub, sub_op, t)
        x_old, x_new = sub["x"], new["x"]
        finite = torch.isfinite(x_new).all(dim=1)
        if quality is not None:
            q = quality.reshape(-1)
            finite &= torch.isfinite(q)
            better = finite & (q < best_q[idx])
            best_q[idx[better]] = q[better]
            best_x[idx[better]] = x_new[better]
            blown = ~finite | (q > divergence_factor * best_q[idx])
        else:
            best_x[idx[finite]] = x_new[finite]
            blown = ~finite
        for k, v in new.items():
            state[k][idx] = v
        if blown.any():
            rows = idx[blown]
            state["x"][rows] = best_x[rows]
            diverged[rows] = True
            active[rows] = False
        change = (x_new - x_old).norm(dim=1) / x_old.norm(dim=1).clamp_min(1e-30)
        done = (change <= tol) & ~blown
        active[idx[done]] = False
        report.n_iter = t + 1
        yield state["x"].clone()  # a fresh tensor: the state is updated in place next iteration
        if not active.any():
            break
    report.n_diverged = int(diverged.sum())
    report.n_unconverged = int(active.sum())
    report.diverged = diverged
