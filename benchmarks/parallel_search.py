"""Wall time of ``GridSearchCV(n_jobs=2)`` against ``n_jobs=1``, and torch's threads per fit.

For a classical estimator (AMP: the work is in ``predict``, called by the scorer) and a
learned one (LISTA: the work is training), the same grid is searched with ``n_jobs=1`` and
``n_jobs=2``. The scorer also reports ``torch.get_num_threads()`` and the process id of the fit
it scores, so the table shows whether the workers oversubscribe the cores: with ``n_jobs=2`` on
2 cores each worker must run torch on 1 thread (joblib's loky backend gives each worker
``cpu_count() // n_jobs`` threads through ``OMP_NUM_THREADS``; see
:mod:`sklearn_unfold._parallel`). The criterion: ``n_jobs=2`` no slower than ``n_jobs=1``
(within 10 %) on 2 cores, faster where one fit cannot keep both cores busy.

Usage::

    python benchmarks/parallel_search.py            # both estimators, 3 repeats each
    python benchmarks/parallel_search.py --estimators amp --repeats 1

Timings on a machine shared with other work are noisy; run it on an otherwise idle one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch
from joblib.externals.loky import get_reusable_executor
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_unfold import AMPRegressor, LISTARegressor
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.metrics import nmse_db


def _scorer(est, Y, X) -> dict:
    """Negative NMSE (dB), plus the torch threads and pid of the process that ran the fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = -nmse_db(X, est.predict(Y))
    return {"neg_nmse_db": score, "torch_threads": float(torch.get_num_threads()),
            "pid": float(os.getpid())}


def _searches(n_samples: int) -> dict:
    Y, X, A = make_compressed_sensing("giid", n_samples, random_state=0)
    return {
        "amp": (AMPRegressor(A=A, max_iter=30, tol=0.0),
                {"damping": [0.6, 0.8, 0.9, 1.0]}, Y, X),
        "lista": (LISTARegressor(A=A, alpha=0.02, n_layers=3, max_epochs=1, batch_size=100,
                                 training="end_to_end", device="cpu", random_state=0),
                  {"learning_rate": [1e-3, 3e-3], "tied": [False, True]}, Y, X),
    }


def run(name: str, n_jobs: int, search: tuple, repeats: int) -> tuple[float, dict]:
    """Best wall time over ``repeats`` and the cv_results_ of the last search."""
    est, grid, Y, X = search
    times, results = [], None
    for _ in range(repeats):
        gs = GridSearchCV(est, grid, scoring=_scorer, refit=False, n_jobs=n_jobs,
                          cv=KFold(2, shuffle=True, random_state=0))
        tic = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gs.fit(Y, X)
        times.append(time.perf_counter() - tic)
        results = gs.cv_results_
    return min(times), results


def main(argv: list[str] | None = None) -> int:
    """Print a table per estimator; return 1 if ``n_jobs=2`` is more than 10 % slower."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimators", nargs="+", default=["amp", "lista"],
                        choices=["amp", "lista"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=2000)
    args = parser.parse_args(argv)
    searches = _searches(args.n_samples)
    print(f"{os.cpu_count()} cores; torch threads in this process: {torch.get_num_threads()}")
    worst = 0.0
    for name in args.estimators:
        n_fits = int(np.prod([len(v) for v in searches[name][1].values()])) * 2
        print(f"\n{name}: {n_fits} fits (grid x 2 folds), {args.n_samples} samples, "
              f"best of {args.repeats}")
        base = None
        for n_jobs in (1, 2):
            seconds, res = run(name, n_jobs, searches[name], args.repeats)
            threads = sorted({int(v) for k, col in res.items() if k.startswith("split")
                              and k.endswith("_test_torch_threads") for v in col})
            pids = {int(v) for k, col in res.items() if k.startswith("split")
                    and k.endswith("_test_pid") for v in col}
            base = seconds if base is None else base
            print(f"  n_jobs={n_jobs}: {seconds:7.2f} s  ({seconds / base:5.2f}x of n_jobs=1)  "
                  f"torch threads per fit {threads}, {len(pids)} process(es), "
                  f"best NMSE {-np.max(res['mean_test_neg_nmse_db']):.2f} dB")
        worst = max(worst, seconds / base)
    get_reusable_executor().shutdown(wait=True)
    verdict = "within" if worst <= 1.10 else "NOT within"
    print(f"\nworst n_jobs=2 / n_jobs=1 time ratio: {worst:.2f} ({verdict} 1.10)")
    return 0 if worst <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
