"""Torch threads inside parallel searches: no oversubscription, budgets applied and restored."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from joblib import Parallel, delayed
from joblib.externals.loky import get_reusable_executor
from sklearn.model_selection import GridSearchCV

from sklearn_unfold import AMPRegressor
from sklearn_unfold._parallel import (
    in_parallel_worker,
    limit_torch_threads,
    thread_budget,
    warn_if_gpu_shared,
)


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


def _worker_report() -> tuple[bool, bool]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warned = warn_if_gpu_shared(torch.device("cuda"))
    return in_parallel_worker(), warned and any("n_jobs=1 per GPU" in str(w.message)
                                                for w in caught)


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_cuda_inside_parallel_jobs_warns(backend):
    # The check reads only the device type and where it runs, so it is testable without a GPU.
    assert not in_parallel_worker()
    assert not warn_if_gpu_shared(torch.device("cuda"))  # a single job on the main thread
    reports = Parallel(n_jobs=2, backend=backend)(delayed(_worker_report)() for _ in range(2))
    assert reports == [(True, True), (True, True)]


def test_cpu_inside_parallel_jobs_does_not_warn():
    assert Parallel(n_jobs=2)(delayed(warn_if_gpu_shared)(torch.device("cpu"))
                              for _ in range(2)) == [False, False]
