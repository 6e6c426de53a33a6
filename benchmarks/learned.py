"""Benchmark of the learned estimators on the reference problems (Borgerding et al. 2017).

Each configuration trains one estimator with its DEFAULT training settings (only ``A``,
``n_layers`` and, where the target needs it, ``tied``, ``denoiser`` or ``signal_prior`` set) on
20,000 training pairs of the reference problem (N = 500, M = 250, Bernoulli-Gaussian p = 0.1,
40 dB), then prints, on a fresh test set of 1,000 pairs on the same ``A``:

* the NMSE (dB) after every layer, beside published reference numbers, and the
  analytic initialisation (the classical solver it unrolls) at the same depth;
* with layer-wise training, the greedy trace: the validation NMSE at the end of each depth's
  stages, which is what the published per-depth numbers of LAMP and LISTA are;
* the training wall time;
* with ``--robustness K``: the NMSE on ``K`` further test sets of 5,000 pairs (seeds
  ``seed + 2 …``) and each set's worst signal (its own NMSE, and its number of non-zeros), since
  a rare signal whose error grows in the last layers can dominate a set's NMSE and is
  invisible on 1,000 test pairs;
* the predict throughput, uncompiled and with ``compile=True`` (``torch.compile``; the first,
  compiling call is timed apart), against scikit-learn's ``OrthogonalMatchingPursuit`` (best
  ``n_nonzero_coefs``) and ``Lasso`` (best ``alpha``), both tuned on 200 held-out pairs, and
  ``OrthogonalMatchingPursuit`` stopped by the residual energy ``M σw²`` (``OMP-tol``), all
  timed best-of-3 in the same run on the same test samples as the network. The OMP peers run
  with ``precompute=True`` (Gram matrix computed once for all targets): the same estimates,
  and on this problem 1.5× faster than sklearn's default ``"auto"``.

Usage::

    python benchmarks/learned.py                         # every configuration
    python benchmarks/learned.py --configs lamp10 lamp6-prior --device cpu --threads 2
    python benchmarks/learned.py --list

The training budget is each estimator's default (``max_epochs`` passes per training stage over
the 19,000 training pairs at most, 20 for LAMP and LDVAMP, 4 for LISTA; early stopping on the
1,000 held out; see the estimators' docstrings). With ``signal_prior`` the steps draw fresh
signals instead, and the same number of steps is allowed. The targets printed are those of
the training-speed benchmark (``benchmarks/speedup.py``), which times the same runs against an
earlier commit.
"""

from __future__ import annotations

import argparse
import time
from itertools import islice

import numpy as np
import torch
from sklearn.linear_model import Lasso, OrthogonalMatchingPursuit

from sklearn_unfold import LAMPRegressor, LDVAMPRegressor, LISTARegressor, nmse_db
from sklearn_unfold.datasets import make_compressed_sensing

#: Reference NMSE (dB) per depth (published runs), keyed by configuration name.
REFERENCES: dict[str, dict[int, float]] = {
    "LAMP-bg tied (Borgerding rerun)": dict(enumerate(
        [-6.58, -12.15, -17.51, -23.02, -28.88, -34.37], start=1)),
    "LISTA tied (Borgerding rerun)": dict(enumerate(
        [-6.41, -11.51, -14.65, -17.42, -20.13, -22.27], start=1)),
    "matched VAMP-bg": {6: -39.18, 8: -44.92, 10: -45.48, 15: -45.51},
    "LVAMP-bg": {6: -39.37},
}

#: name: (estimator class, problem, constructor keywords, target (depth, dB), references)
CONFIGS: dict[str, tuple] = {
    "lamp10": (LAMPRegressor, "giid", {"n_layers": 10}, (10, -44.5),
               ["LAMP-bg tied (Borgerding rerun)"]),
    "lamp6": (LAMPRegressor, "giid", {"n_layers": 6}, None, ["LAMP-bg tied (Borgerding rerun)"]),
    "lamp6-prior": (LAMPRegressor, "giid", {"n_layers": 6, "signal_prior": "bernoulli_gaussian"},
                    (6, -36.5), ["LAMP-bg tied (Borgerding rerun)"]),
    "lista6-prior": (LISTARegressor, "giid",
                     {"n_layers": 6, "signal_prior": "bernoulli_gaussian"}, None,
                     ["LISTA tied (Borgerding rerun)"]),
    "lista16-prior": (LISTARegressor, "giid",
                      {"n_layers": 16, "signal_prior": "bernoulli_gaussian"}, (16, -40.0),
                      ["LISTA tied (Borgerding rerun)"]),
    "ldvamp6": (LDVAMPRegressor, "giid", {"n_layers": 6}, (6, -40.0),
                ["matched VAMP-bg", "LVAMP-bg"]),
    "ldvamp10-kappa15": (LDVAMPRegressor, "kappa15", {"n_layers": 10}, (10, -43.8), []),
}


def tuned_peers(Y, X, A, Yt, noise_var, n_tune=200):
    """scikit-learn peers: OMP (best k) and Lasso (best alpha) tuned on ``n_tune`` pairs, and
    OMP stopped by the residual energy ``M σw²`` (no tuning; ``σw²`` as fitted by the network).

    Returns name -> estimator.
    """
    Yv, Xv = Y[-n_tune:], X[-n_tune:]
    best = {"OMP-tol": (OrthogonalMatchingPursuit(tol=A.shape[0] * noise_var,
                                                  fit_intercept=False, precompute=True), None)}
    for k in (20, 30, 40, 50, 60, 70, 80):
        omp = OrthogonalMatchingPursuit(n_nonzero_coefs=k, fit_intercept=False, precompute=True)
        err = nmse_db(Xv, omp.fit(A, Yv.T).coef_)
        if err < best.get("OMP", (None, np.inf))[1]:  # best fixed k
            best["OMP"] = (omp, err)
    for alpha in (3e-5, 1e-4, 3e-4, 1e-3, 3e-3):
        lasso = Lasso(alpha=alpha, fit_intercept=False, max_iter=5000, tol=1e-6)
        err = nmse_db(Xv, lasso.fit(A, Yv.T).coef_)
        if err < best.get("Lasso", (None, np.inf))[1]:
            best["Lasso"] = (lasso, err)
    return {name: est for name, (est, _) in best.items()}


def timed(fn, *args, repeat=3):
    """Best wall time of ``repeat`` calls, and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def robustness(est, problem, A, seed, n_sets, n_test=5000):
    """NMSE and worst signal on ``n_sets`` further test sets of ``n_test`` pairs."""
    for k in range(n_sets):
        Yr, Xr, _ = make_compressed_sensing(problem, n_test, A=A, random_state=seed + 2 + k)
        Xh = est.predict(Yr)
        per = 10 * np.log10(((Xh - Xr) ** 2).sum(1) / np.maximum((Xr**2).sum(1), 1e-300))
        worst = int(np.argmax(per))
        print(f"  robustness set {k + 1} ({n_test} pairs, seed {seed + 2 + k}): "
              f"{nmse_db(Xr, Xh):.2f} dB; worst signal {per[worst]:.1f} dB "
              f"({int((Xr[worst] != 0).sum())} non-zeros)")


def run_config(name, n_train, n_test, device, seed, peers_cache, overrides=None,
               n_robust=0):
    cls, problem, kwargs, target, refs = CONFIGS[name]
    kwargs = {**kwargs, **(overrides or {})}
    Y, X, A = make_compressed_sensing(problem, n_train, random_state=seed)
    Yt, Xt, _ = make_compressed_sensing(problem, n_test, A=A, random_state=seed + 1)
    est = cls(A=A, device=device, random_state=seed, **kwargs)
    t0 = time.perf_counter()
    est.fit(Y, X)
    train_s = time.perf_counter() - t0
    staged = [nmse_db(Xt, Xh) for Xh in est.staged_predict(Yt)]
    init = [nmse_db(Xt, Xh) for Xh in islice(est.init_estimator_.staged_predict(Yt),
                                              est.n_layers_)]
    print(f"\n== {name}: {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) "
          f"on {problem}, {n_train} training pairs, device={device}")
    print(f"training wall time: {train_s:.1f} s "
          f"({sum(h['steps'] for h in est.stages_)} optimiser steps, "
          f"{len(est.stages_)} stages)")
    header = f"{'layer':>5} {'learned':>9} {'init':>9}" + "".join(f" {r[:24]:>25}" for r in refs)
    print(header)
    for t, (dl, di) in enumerate(zip(staged, init, strict=False), start=1):
        ref_cols = "".join(
            f" {REFERENCES[r][t]:>25.2f}" if t in REFERENCES[r] else f" {'':>25}" for r in refs)
        print(f"{t:>5} {dl:>9.2f} {di:>9.2f}{ref_cols}")
    trace = {h["layer"]: h["val_nmse_db"] for h in est.stages_}  # each depth's last stage
    if len(trace) > 1:
        print("greedy trace (validation NMSE at the end of each depth's stages, the quantity "
              "the references report): " + ", ".join(f"{trace[t]:.3f}" for t in sorted(trace)))
    if target is not None:
        depth, goal = target
        verdict = "met" if staged[depth - 1] <= goal else "NOT met"
        print(f"target <= {goal} dB at {depth} layers: {staged[depth - 1]:.2f} dB ({verdict})")
    robustness(est, problem, A, seed, n_robust)
    pred_s, _ = timed(est.predict, Yt)
    est.set_params(compile=True)
    t0 = time.perf_counter()
    est.predict(Yt)  # compiles (once per process and network structure), plus one predict
    compile_s = time.perf_counter() - t0
    comp_s, _ = timed(est.predict, Yt)
    est.set_params(compile=False)
    print(f"predict: {1e6 * pred_s / n_test:.1f} us/sample; compile=True: "
          f"{1e6 * comp_s / n_test:.1f} us/sample (after {compile_s:.1f} s compiling)")
    if peers_cache is None:
        return est
    if problem not in peers_cache:
        peers_cache[problem] = tuned_peers(Y, X, A, Yt, est.noise_var_)
    for peer_name, peer in peers_cache[problem].items():
        peer_s, coef = timed(lambda Yq, p=peer: p.fit(A, Yq.T).coef_, Yt)  # best of 3, as above
        print(f"  vs {peer_name:<7}: {nmse_db(Xt, coef):7.2f} dB, {1e3 * peer_s / n_test:.2f} "
              f"ms/sample -> learned is {peer_s / pred_s:.0f}x faster "
              f"({peer_s / comp_s:.0f}x compiled), "
              f"{nmse_db(Xt, coef) - staged[-1]:+.1f} dB better")
    return est


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS),
                        help=f"which configurations (default: all of {list(CONFIGS)})")
    parser.add_argument("--networks", nargs="*", choices=["lista", "lamp", "ldvamp"],
                        help="only the configurations of these networks")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', ...")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="PARAM=VALUE",
                        help="override estimator parameters, e.g. --set training=layerwise")
    parser.add_argument("--robustness", type=int, default=0, metavar="K",
                        help="also evaluate on K further test sets of 5,000 pairs (worst signal)")
    parser.add_argument("--no-peers", action="store_true",
                        help="skip the OMP / Lasso throughput comparison")
    parser.add_argument("--list", action="store_true", help="list the configurations")
    args = parser.parse_args(argv)
    if args.list:
        for name, (cls, problem, kwargs, target, _) in CONFIGS.items():
            print(f"{name:<18} {cls.__name__}{kwargs} on {problem}, target {target}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = args.configs
    if args.networks:
        configs = [c for c in configs if any(c.startswith(n) for n in args.networks)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA available: {torch.cuda.is_available()}")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = eval(value, {})  # noqa: S307 - command-line literals
        except (NameError, SyntaxError):
            overrides[key] = value
    peers: dict = {}
    for name in configs:
        run_config(name, args.n_train, args.n_test, args.device, args.seed,
                   None if args.no_peers else peers, overrides, args.robustness)


if __name__ == "__main__":
    main()
