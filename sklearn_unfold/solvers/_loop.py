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
from ..steps import row_norm

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
    x_full = state["x"].clone()
    n = x_full.shape[0]
    device = x_full.device
    op.check_batch(n)
    diverged = torch.zeros(n, dtype=torch.bool, device=device)
    unconverged = torch.ones(n, dtype=torch.bool, device=device)
    # The active rows are kept compact (``sub``, ``idx``): the state is re-gathered, and the
    # operator narrowed, only in the iterations where some rows stop.
    idx = torch.arange(n, device=device)
    sub = dict(state)
    sub_op = op
    best_q = torch.full((n,), float("inf"), dtype=x_full.real.dtype, device=device)
    best_x = sub["x"]
    for t in range(max_iter):
        new, quality = step(sub, sub_op, t)
        x_old, x_new = sub["x"], new["x"]
        # a row's sum is finite exactly when its entries are (or their sum overflows: a row
        # near the dtype's largest value has diverged too); one pass, not isfinite's three
        finite = torch.isfinite(x_new.sum(dim=1))
        if quality is not None:
            q = quality.reshape(-1)
            finite &= torch.isfinite(q)
            better = finite & (q < best_q)
            best_q = torch.where(better, q, best_q)
            best_x = torch.where(better[:, None], x_new, best_x)
            blown = ~finite | (q > divergence_factor * best_q)
            fallback = best_x
        else:
            blown = ~finite
            fallback = x_old  # the last finite iterate
        if bool(blown.any()):
            x_new = torch.where(blown[:, None], fallback, x_new)
            new["x"] = x_new
        # relative change, without a division: no absolute floor (a row at any scale stops
        # at the same iteration), and a row that stays at zero stops at once
        done = (row_norm(x_new - x_old) <= tol * row_norm(x_old)) & ~blown
        # a fresh tensor every iteration (the steps never write into their inputs): what was
        # yielded is never changed afterwards
        x_full = x_new if idx.numel() == n else x_full.index_copy(0, idx, x_new)
        sub = {**sub, **new}
        report.n_iter = t + 1
        yield x_full
        stop = done | blown
        if bool(stop.any()):
            diverged[idx[blown]] = True
            unconverged[idx[stop]] = False
            keep = (~stop).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            idx = idx[keep]
            sub = {k: v[keep] for k, v in sub.items()}
            best_q, best_x = best_q[keep], best_x[keep]
            sub_op = op.take(idx)
    report.n_diverged = int(diverged.sum())
    report.n_unconverged = int(unconverged.sum())
    report.diverged = diverged
