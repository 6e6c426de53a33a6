"""Wall time of a depth-and-tying grid search over LAMP with the default training.

``GridSearchCV(LAMPRegressor(A=A), {"n_layers": [4, 6, 8, 10], "tied": [True, False]}, cv=3)``
on 20,000 pairs of the giid reference problem (N = 500, M = 250, Bernoulli-Gaussian p = 0.1,
40 dB): 24 trainings on 13,333 pairs each, plus the refit of the best candidate on all 20,000.
Prints the search's wall time, per candidate the mean fit time and the mean validation NMSE
(dB, scored on the held-out fold) with its optimiser steps, and the best candidate's NMSE on a
fresh test set of 1,000 pairs.

Usage::

    python benchmarks/grid_search.py --threads 2
    python benchmarks/grid_search.py --threads 1 --n-jobs 2      # two folds at a time
    python benchmarks/grid_search.py --set training=layerwise    # another training recipe
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_unfold import LAMPRegressor
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.metrics import nmse_db
from sklearn_unfold.training import LRSchedule, Optimizer


def _scorer(est, Y, X) -> dict:
    """Negative validation NMSE (dB) and the fit's optimiser steps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = -nmse_db(X, est.predict(Y))
    return {"neg_nmse_db": score, "steps": float(sum(s["steps"] for s in est.stages_))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--n-jobs", type=int, default=1, help="GridSearchCV's n_jobs")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="PARAM=VALUE",
                        help="estimator parameters, e.g. --set training=layerwise")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            params[key] = eval(value, {"torch": torch, "LRSchedule": LRSchedule,  # noqa: S307
                                       "Optimizer": Optimizer})  # command-line literals
        except (NameError, SyntaxError):
            params[key] = value
    Y, X, A = make_compressed_sensing("giid", args.n_train, random_state=args.seed)
    Yt, Xt, _ = make_compressed_sensing("giid", 1000, A=A, random_state=args.seed + 1)
    est = LAMPRegressor(A=A, device="cpu", random_state=args.seed, **params)
    grid = {"n_layers": [4, 6, 8, 10], "tied": [True, False]}
    search = GridSearchCV(est, grid, cv=KFold(3), scoring=_scorer, refit="neg_nmse_db",
                          n_jobs=args.n_jobs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n_jobs={args.n_jobs}; "
          f"GridSearchCV(LAMPRegressor({', '.join(f'{k}={v!r}' for k, v in params.items())}), "
          f"{grid}, cv=3) on {args.n_train} giid pairs")
    t0 = time.perf_counter()
    search.fit(Y, X)
    wall = time.perf_counter() - t0
    res = search.cv_results_
    print(f"\n{'n_layers':>8} {'tied':>5} {'fit s':>7} {'val dB':>8} {'steps':>6}")
    for i, p in enumerate(res["params"]):
        print(f"{p['n_layers']:>8} {p['tied']!s:>5} {res['mean_fit_time'][i]:7.1f} "
              f"{-res['mean_test_neg_nmse_db'][i]:8.2f} {res['mean_test_steps'][i]:6.0f}")
    best = search.best_estimator_
    print(f"\nbest {search.best_params_}; refit {search.refit_time_:.1f} s; test NMSE "
          f"{nmse_db(Xt, best.predict(Yt)):.2f} dB")
    print(f"search wall time {wall:.1f} s ({wall / 60:.1f} min; "
          f"{np.sum(res['mean_fit_time']) * 3:.0f} s in the 24 fits)")


if __name__ == "__main__":
    main()
