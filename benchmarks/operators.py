"""Benchmark of random and matrix-free operators: ensemble training and fast transforms.

Three parts, each printed as a table:

* ``giid-ensemble``: N = 500, M = 250, Bernoulli-Gaussian p = 0.1, 40 dB, a fresh i.i.d.
  Gaussian ``A`` for every sample. A LAMP-bg trained over the ensemble (20,000 training signals,
  fresh operators every mini-batch, default schedule; the training pairs' own draws are not
  passed, ``fit`` measures the signals afresh) against matched AMP-bg run on each test
  sample's own matrix, at depths 1–10, on 1,000 test samples with their own matrices; and a
  LAMP-bg trained on one fixed matrix (the common mistake) on the same test set.
* ``kappa15-ensemble``: the same with a fresh ``U diag(s) Vᵀ`` (Haar ``U, V``, condition number
  15) per sample: an ensemble-trained LDVAMP-bg against VAMP-bg at depths 1–10.
* ``dct-matrix-free``: AMP-bg and VAMP-bg on ``M = 32,768`` random rows of the orthonormal
  ``N = 65,536``-point DCT (scaled by ``√(N/M)``), never formed as a matrix, 16 signals,
  BG p = 0.1, 40 dB: NMSE after 5, 10 and 20 iterations, wall time per iteration against the
  time of one forward and one adjoint transform of the batch (same run), and the process's
  peak resident memory before and after.

Usage::

    python benchmarks/operators.py                       # every part
    python benchmarks/operators.py --parts dct-matrix-free --threads 2
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np
import torch

from sklearn_unfold import AMPRegressor, LAMPRegressor, LDVAMPRegressor, VAMPRegressor, nmse_db
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.operators import PartialDCT
from sklearn_unfold.operators.ensembles import ConditionedEnsemble, GaussianEnsemble

N, M = 500, 250


def _curve(est, Y, X, op=None) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [nmse_db(X, Xt) for Xt in est.staged_predict(Y, operator=op)]


def _row(name: str, values, seconds: float | None = None) -> str:
    cells = " ".join(f"{v:7.2f}" for v in values)
    tail = f"  ({seconds:.0f} s)" if seconds is not None else ""
    return f"{name:<34s}{cells}{tail}"


def _training_pairs(problem: str, ens, args):
    """Training signals measured through fresh draws, chunk by chunk; the draws are not kept
    (20,000 dense per-sample matrices would take 20 GB): with an ensemble, ``fit`` measures the
    training signals afresh through new draws at every mini-batch anyway."""
    Ys, Xs = [], []
    rng = np.random.RandomState(args.seed)
    for start in range(0, args.n_train, 1000):
        n = min(1000, args.n_train - start)
        Y, X, _, noise_var = make_compressed_sensing(problem, n, ensemble=ens, random_state=rng,
                                                     return_noise_var=True)
        Ys.append(Y)
        Xs.append(X)
    return np.concatenate(Ys), np.concatenate(Xs), noise_var


def giid_ensemble(args) -> None:
    ens = GaussianEnsemble(M, N)
    Y, X, noise_var = _training_pairs("giid", ens, args)
    Yt, Xt, opt = make_compressed_sensing("giid", args.n_test, ensemble=ens,
                                          random_state=args.seed + 1)
    depths = list(range(1, 11))
    print(f"\ngiid-ensemble: a fresh Gaussian A per sample, {args.n_train} training and "
          f"{args.n_test} test samples; NMSE (dB) at depth {depths[0]}..{depths[-1]}")
    amp = AMPRegressor(A=ens, max_iter=10, tol=0, noise_var=noise_var).fit(Y, X)
    print(_row("AMP-bg (matched, own A)", _curve(amp, Yt, Xt, opt)))
    t0 = time.perf_counter()
    lamp = LAMPRegressor(A=ens, n_layers=10, noise_var=noise_var, random_state=args.seed,
                         device=args.device).fit(Y, X)
    t_ens = time.perf_counter() - t0
    print(_row("LAMP-bg trained over the ensemble", _curve(lamp, Yt, Xt, opt), t_ens))
    # the common mistake: the same network trained on ONE realisation of the ensemble
    Yf, Xf, Af = make_compressed_sensing("giid", args.n_train, random_state=args.seed)
    t0 = time.perf_counter()
    fixed = LAMPRegressor(A=Af, n_layers=10, random_state=args.seed, device=args.device).fit(Yf, Xf)
    t_fix = time.perf_counter() - t0
    print(_row("LAMP-bg trained on one fixed A", _curve(fixed, Yt, Xt, opt), t_fix))
    Yf_t, Xf_t, _ = make_compressed_sensing("giid", args.n_test, A=Af, random_state=args.seed + 1)
    print(_row("  (the same, on its own A)", _curve(fixed, Yf_t, Xf_t)))


def kappa15_ensemble(args) -> None:
    ens = ConditionedEnsemble(M, N, 15.0)
    Y, X, noise_var = _training_pairs("kappa15", ens, args)
    Yt, Xt, opt = make_compressed_sensing("kappa15", args.n_test, ensemble=ens,
                                          random_state=args.seed + 1)
    print(f"\nkappa15-ensemble: a fresh U diag(s) Vᵀ per sample, {args.n_train} training and "
          f"{args.n_test} test samples; NMSE (dB) at depth 1..10")
    vamp = VAMPRegressor(A=ens, max_iter=10, tol=0, noise_var=noise_var).fit(Y, X)
    print(_row("VAMP-bg (matched, own A)", _curve(vamp, Yt, Xt, opt)))
    t0 = time.perf_counter()
    ld = LDVAMPRegressor(A=ens, n_layers=10, noise_var=noise_var, random_state=args.seed,
                         device=args.device).fit(Y, X)
    print(_row("LDVAMP-bg trained over the ensemble", _curve(ld, Yt, Xt, opt),
               time.perf_counter() - t0))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def dct_matrix_free(args) -> None:
    n_big, m_big, n_sig = 65_536, 32_768, 16
    rng = np.random.RandomState(args.seed)
    op = PartialDCT.random(m_big, n_big, random_state=rng)
    X = (rng.random_sample((n_sig, n_big)) < 0.1) * rng.standard_normal((n_sig, n_big))
    noise_var = 0.1 * (n_big / m_big) * 10 ** (-40 / 10)
    Y = op.forward(torch.from_numpy(X)).numpy() + np.sqrt(noise_var) * rng.standard_normal(
        (n_sig, m_big))
    Xt = torch.from_numpy(X)
    Yt = torch.from_numpy(Y)
    # the batch's forward + adjoint transforms, best of 5
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        op.adjoint(op.forward(Xt) - Yt)
        best = min(best, time.perf_counter() - t0)
    print(f"\ndct-matrix-free: N = {n_big}, M = {m_big}, {n_sig} signals (a dense float64 A "
          f"would take {m_big * n_big * 8 / 1e9:.0f} GB); forward + adjoint of the batch: "
          f"{best * 1e3:.1f} ms")
    base = _peak_mb()
    for cls in (AMPRegressor, VAMPRegressor):
        est = cls(A=op, max_iter=20, tol=0, noise_var=noise_var, sparsity=0.1, signal_var=1.0)
        est.fit(Y[:2], X[:2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            curve = [nmse_db(X, Xh) for Xh in est.staged_predict(Y)]
            wall = time.perf_counter() - t0
        per_iter = wall / len(curve)
        print(f"{cls.__name__[:-9] + '-bg':<10s} NMSE after 5/10/20 it: {curve[4]:.2f} / "
              f"{curve[9]:.2f} / {curve[19]:.2f} dB; {per_iter * 1e3:.1f} ms per iteration = "
              f"{per_iter / best:.2f}x the forward + adjoint; peak RSS {_peak_mb():.0f} MB "
              f"(before the solvers: {base:.0f} MB)")


PARTS = {"giid-ensemble": giid_ensemble, "kappa15-ensemble": kappa15_ensemble,
         "dct-matrix-free": dct_matrix_free}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--n-test", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CUDA available: "
          f"{torch.cuda.is_available()}, device {args.device}")
    for name in args.parts:
        PARTS[name](args)


if __name__ == "__main__":
    main()
