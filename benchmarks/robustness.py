"""Robustness sweep: the NMSE of every estimator when the data change units, and edge cases.

Prints, for ISTA, FISTA, AMP, VAMP, LISTA, LAMP and LDVAMP (the learned ones small and briefly
trained), the test NMSE in dB with ``Y`` and ``X`` both scaled by ``s`` (``A`` fixed), for
``s`` from 1e-12 to 1e12, and what happens beyond that range (1e-150, 1e150, and measurements
1e30 times larger than the training data's); then VAMP with a tiny ``noise_var`` on noiseless
data (one and two threads), and ``A=None`` estimated from too few pairs.

Run: ``python benchmarks/robustness.py`` (a minute or two on a laptop).
"""

from __future__ import annotations

import warnings

import numpy as np

from sklearn_unfold import (
    AMPRegressor,
    FISTARegressor,
    ISTARegressor,
    LAMPRegressor,
    LDVAMPRegressor,
    LISTARegressor,
    VAMPRegressor,
)
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.metrics import nmse_db

SCALES = [1e-12, 1e-8, 1e-4, 1.0, 1e4, 1e8, 1e12]
LEARNED = {"n_layers": 3, "max_epochs": 1, "random_state": 0, "device": "cpu"}
ESTIMATORS = {
    "ISTA": lambda A: ISTARegressor(A=A, max_iter=500),
    "FISTA": lambda A: FISTARegressor(A=A, max_iter=500),
    "AMP": lambda A: AMPRegressor(A=A),
    "VAMP": lambda A: VAMPRegressor(A=A),
    "LISTA": lambda A: LISTARegressor(A=A, **LEARNED),
    "LAMP": lambda A: LAMPRegressor(A=A, **LEARNED),
    "LDVAMP": lambda A: LDVAMPRegressor(A=A, **LEARNED),
}


def _outcome(make, A, Ytr, Xtr, Yte, Xte, s_fit: float, s_pred: float) -> str:
    """The NMSE in dB as text, or the exception's type (what a user would see)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = make(A).fit(Ytr * s_fit, Xtr * s_fit)
            pred = est.predict(Yte * s_pred)
    except Exception as exc:  # noqa: BLE001 (reported, not hidden)
        return type(exc).__name__
    if not np.all(np.isfinite(pred)):
        return "NON-FINITE"
    if not np.any(pred):
        return "ZEROS"
    return f"{nmse_db(Xte * s_pred, pred):.2f}"


def scale_sweep() -> None:
    Y, X, A = make_compressed_sensing("giid", n_samples=400, n_features=100, n_measurements=50,
                                      random_state=0)
    Ytr, Xtr, Yte, Xte = Y[:300], X[:300], Y[300:], X[300:]
    cases = [(f"{s:g}", s, s) for s in SCALES] + [
        ("1e-150", 1e-150, 1e-150), ("1e150", 1e150, 1e150), ("Y*1e30", 1.0, 1e30)]
    print("NMSE (dB) with Y and X scaled by s (A fixed); N=100, M=50, giid")
    print(f"{'':8s}" + "".join(f"{name:>11s}" for name, _, _ in cases))
    for label, make in ESTIMATORS.items():
        row = [_outcome(make, A, Ytr, Xtr, Yte, Xte, f, p) for _, f, p in cases]
        print(f"{label:8s}" + "".join(f"{r:>11s}" for r in row), flush=True)


def tiny_noise_var() -> None:
    import torch

    print("\nVAMP on the noiseless reference problem (N=500, M=250) with a given noise_var")
    Y, X, A = make_compressed_sensing("noiseless", 300, random_state=0)
    threads = torch.get_num_threads()
    for n_threads in (1, 2):
        torch.set_num_threads(n_threads)
        for noise_var in (1e-14, 1e-20, 1e-300):
            make = lambda A, nv=noise_var: VAMPRegressor(A=A, noise_var=nv)  # noqa: E731
            result = _outcome(make, A, Y[:200], X[:200], Y[200:], X[200:], 1.0, 1.0)
            print(f"  {n_threads} thread(s), noise_var={noise_var:g}: {result} dB")
    torch.set_num_threads(threads)


def few_pairs() -> None:
    print("\nA=None estimated from few pairs (N=60, M=30); warnings shown")
    Y, X, _ = make_compressed_sensing("giid", 240, n_features=60, n_measurements=30,
                                      random_state=0)
    for n_pairs in (1, 40, 200):
        for label in ("ISTA", "VAMP"):
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always")
                try:
                    est = ESTIMATORS[label](None).fit(Y[:n_pairs], X[:n_pairs])
                    result = f"{nmse_db(X[200:], est.predict(Y[200:])):.2f} dB"
                except ValueError as exc:
                    result = f"ValueError: {exc}"
            said = [str(w.message)[:90] for w in rec if issubclass(w.category, UserWarning)
                    and "estimated" in str(w.message)]
            print(f"  {n_pairs:4d} pairs, {label}: {result}; warning: {said[0] if said else '-'}")


if __name__ == "__main__":
    scale_sweep()
    tiny_noise_var()
    few_pairs()
