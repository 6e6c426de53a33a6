"""NMSE per iteration of the classical solvers on giid and kappa15, beside published numbers.

Run from the repository root (most of the time is ISTA's; the documentation's benchmarks page
records the figures and the wall times)::

    python benchmarks/classical.py                 # giid and kappa15, 1000 test samples
    python benchmarks/classical.py --problems giid --n-test 200 --threads 1

Each problem: ``A`` and 1000 training pairs (what the estimators fit: the prior, the noise
variance, the thresholds), then a fresh test set through the same ``A``. Printed per problem:

* the test NMSE (dB) after selected iterations for ISTA, FISTA, AMP-soft, AMP-bg and VAMP-bg,
  with AMP-bg's state-evolution prediction (giid) and the reference matched VAMP-bg run
  (an independent implementation, and the published one);
* the final NMSE, the iterations to reach −35 dB against the reference (AMP-soft 25,
  FISTA 202, ISTA 3420 on giid), the LASSO floor (≈ −36.7 dB), the support oracle (genie least
  squares on the true support, measured on the same test set) and the Bayes-optimal MMSE
  (the fixed point of BG-AMP's state evolution).

A solver that stopped (every sample converged) keeps its last value in later rows; a row past
``max_iter`` of a solver that did not converge is blank.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from sklearn_unfold import AMPRegressor, FISTARegressor, ISTARegressor, VAMPRegressor
from sklearn_unfold.comparison import make_comparison_data
from sklearn_unfold.denoisers import bg_mse
from sklearn_unfold.metrics import nmse_db

ROWS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 50, 100, 200, 500, 1000, 2000,
        3420, 5000)
REF_VAMP = {"giid": (-6.6, -12.3, -18.6, -25.5, -32.6, -39.1, -43.3, -45.0, -45.5)}
REF_VAMP_PUBLISHED = {"giid": (-6.75, -12.57, -18.88, -25.72, -32.81, -39.18, -43.32, -44.92,
                               -45.48)}
REF_TO_35DB = {"giid": {"ISTA": 3420, "FISTA": 202, "AMP-soft": 25}}
REF_ORACLE = {"giid": -45.97, "kappa15": -44.7}
REF_BAYES = {"giid": -45.6}
REF_LASSO_FLOOR = {"giid": -36.7}


def solvers(A: np.ndarray) -> dict:
    """The classical solvers, at their default iteration caps."""
    return {
        "ISTA": ISTARegressor(A=A),
        "FISTA": FISTARegressor(A=A),
        "AMP-soft": AMPRegressor(A=A, denoiser="soft"),
        "AMP-bg": AMPRegressor(A=A, denoiser="bg"),
        "VAMP-bg": VAMPRegressor(A=A, denoiser="bg"),
    }


def staged_curve(est, Y: np.ndarray, X: np.ndarray, label: str) -> np.ndarray:
    """Test NMSE (dB) after every iteration, with a progress bar on stderr."""
    stages = tqdm(est.staged_predict(Y), total=est.max_iter, desc=label, leave=False)
    return np.array([nmse_db(X, X_hat) for X_hat in stages])


def support_oracle_nmse_db(A: np.ndarray, Y: np.ndarray, X: np.ndarray) -> float:
    """Genie least squares on each sample's true support, NMSE in dB."""
    X_hat = np.zeros_like(X)
    for i, (y, x) in enumerate(zip(Y, X, strict=True)):
        support = np.flatnonzero(x)
        if support.size:
            X_hat[i, support] = np.linalg.lstsq(A[:, support], y, rcond=None)[0]
    return float(10 * np.log10(np.sum((X_hat - X) ** 2) / np.sum(X**2)))


def state_evolution_db(sparsity: float, var: float, noise_var: float, ratio: float,
                       n_iter: int = 60) -> np.ndarray:
    """BG-AMP's state evolution: predicted NMSE (dB) after iterations ``1 … n_iter``.

    ``τ²_0 = σw² + E[x²]/ratio``, ``τ²_{t+1} = σw² + mse(τ²_t)/ratio``, NMSE_t = mse(τ²_{t−1})/E[x²]
    with ``ratio = M/N`` and ``mse`` the MMSE of the Bernoulli-Gaussian scalar channel.
    """
    second = sparsity * var
    tau2, out = noise_var + second / ratio, []
    for _ in range(n_iter):
        mse = float(bg_mse(tau2, sparsity, var)[0])
        out.append(10 * np.log10(mse / second))
        tau2 = noise_var + mse / ratio
    return np.asarray(out)


def value_at(curve: np.ndarray, t: int, stopped: bool) -> float | None:
    """The NMSE after iteration ``t`` (a stopped solver keeps its last value)."""
    if t <= curve.size:
        return float(curve[t - 1])
    return float(curve[-1]) if stopped else None


def first_below(curve: np.ndarray, level: float) -> int | None:
    hit = np.flatnonzero(curve <= level)
    return int(hit[0]) + 1 if hit.size else None


def fmt(v, spec: str = "8.2f") -> str:
    width = int(spec.rstrip("df").split(".")[0])
    return " " * width if v is None else format(v, spec)


def run_problem(problem: str, n_train: int, n_test: int, random_state: int) -> None:
    data = make_comparison_data(problem, n_train, n_test, random_state)
    M, N = data.A.shape
    curves, stopped, notes, seconds = {}, {}, {}, {}
    fitted = solvers(data.A)
    for name, est in fitted.items():
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(data.Y_train, data.X_train)
            curves[name] = staged_curve(est, data.Y_test, data.X_test, name)
        seconds[name] = time.perf_counter() - start
        stopped[name] = curves[name].size < est.max_iter
        notes[name] = "; ".join(sorted({str(w.message).split(";")[0] for w in caught}))
        print(f"  {name:9s} {curves[name].size:5d} iterations, {seconds[name]:6.1f} s",
              flush=True)
    first = fitted["AMP-bg"]
    se = None
    if problem in ("giid", "noiseless"):
        se = state_evolution_db(first.sparsity_, first.signal_var_, first.noise_var_, M / N)

    names = list(curves)
    print(f"\n{problem}: N={N}, M={M}, {n_test} test samples, fitted p={first.sparsity_:.4f}, "
          f"v={first.signal_var_:.3f}, noise var={first.noise_var_:.3g}")
    head = "  iter " + "".join(f"{n:>10s}" for n in names)
    head += "   AMP-bg SE" if se is not None else ""
    head += "   ref VAMP-bg (published)" if problem in REF_VAMP else ""
    print(head)
    for t in ROWS:
        vals = [value_at(curves[n], t, stopped[n]) for n in names]
        if all(v is None for v in vals):
            continue
        line = f"  {t:4d} " + "".join(f"  {fmt(v)}" for v in vals)
        if se is not None:
            line += f"   {fmt(value_at(se, t, True))}"
        if problem in REF_VAMP and t <= len(REF_VAMP[problem]):
            line += f"   {REF_VAMP[problem][t - 1]:8.1f} ({REF_VAMP_PUBLISHED[problem][t - 1]:.2f})"
        print(line)

    print("\n  final NMSE (dB)     " + "".join(f"{n:>10s}" for n in names))
    print("  measured           " + "".join(f"  {curves[n][-1]:8.2f}" for n in names))
    print("  iterations run     " + "".join(f"  {curves[n].size:8d}" for n in names))
    print("  to reach -35 dB    " + "".join(f"  {fmt(first_below(curves[n], -35.0), '8d')}"
                                            for n in names))
    ref35 = REF_TO_35DB.get(problem, {})
    if ref35:
        print("  reference -35 dB   " + "".join(f"  {fmt(ref35.get(n), '8d')}" for n in names))
    print("  fit + staged (s)   " + "".join(f"  {seconds[n]:8.1f}" for n in names))

    oracle = support_oracle_nmse_db(data.A, data.Y_test, data.X_test)
    print(f"\n  support oracle              {oracle:8.2f} dB measured"
          + (f"   (reference {REF_ORACLE[problem]:.2f})" if problem in REF_ORACLE else ""))
    if se is not None:
        print(f"  Bayes-optimal (SE fixed pt) {se[-1]:8.2f} dB computed"
              + (f"   (reference {REF_BAYES[problem]:.1f})" if problem in REF_BAYES else ""))
    if problem in REF_LASSO_FLOOR:
        floor = ", ".join(f"{n} {curves[n][-1]:.2f}" for n in ("ISTA", "FISTA", "AMP-soft"))
        print(f"  LASSO floor                 {floor}   (reference "
              f"≈ {REF_LASSO_FLOOR[problem]:.1f})")
    for n in names:
        if notes[n]:
            print(f"  note {n}: {notes[n]}")
    print()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="giid,kappa15",
                        help="comma-separated reference problems (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for problem in args.problems.split(","):
        print(f"== {problem}", flush=True)
        run_problem(problem.strip(), args.n_train, args.n_test, args.random_state)


if __name__ == "__main__":
    main()
