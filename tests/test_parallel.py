"""Torch threads inside parallel searches: no oversubscription, budgets applied and restored."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from joblib.externals.loky import get_reusable_executor
from sklearn.model_selection import GridSearchCV

from sklearn_unfold import AMPRegressor
from sklearn_unfold._parallel import limit_torch_threads, thread_budget


@pytest.mark.parametrize("value, expected", [("1", 1), (" 3 ", 3), ("0", None), ("", None),
                                             ("many", None)])
def test_thread_budget_reads_omp_num_threads(monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert thread_budget() == expected


def test_limit_torch_threads_caps_and_restores(monkeypatch):
    before = torch.get_num_threads()
    with limit_torch_threads(1) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with limit_torch_threads() as n:  # no budget: nothing changes
        assert n == before == torch.get_num_threads()
    with limit_torch_threads(before + 4) as n:  # never raises the count
        assert n == before


def _threads_scorer(est, Y, X):
    return float(torch.get_num_threads())


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to share")
def test_grid_search_workers_run_torch_on_their_share_of_cores():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((8, 16)) / np.sqrt(8)
    X = rng.standard_normal((40, 16)) * (rng.random((40, 16)) < 0.2)
    Y = X @ A.T
    gs = GridSearchCV(AMPRegressor(A=A, max_iter=3), {"damping": [0.5, 1.0]}, cv=2, n_jobs=2,
                      scoring=_threads_scorer, refit=False, error_score="raise")
    try:
        gs.fit(Y, X)
    finally:
        get_reusable_executor().shutdown(wait=True)  # leave no idle worker processes behind
    share = max((os.cpu_count() or 1) // 2, 1)
    threads = {gs.cv_results_[f"split{i}_test_score"][j] for i in range(2) for j in range(2)}
    assert threads == {float(share)}
