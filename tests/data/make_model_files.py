"""Write the model files that ``tests/test_persistence.py`` loads: tiny fitted estimators in the
current file format, with measurements and the predictions expected from them.

Run from the repository root whenever the format version changes::

    python tests/data/make_model_files.py

Deterministic (fixed seeds, CPU, one thread): running it twice writes the same predictions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

import sklearn_unfold
from sklearn_unfold.persistence import save

OUT = Path(__file__).resolve().parent / "models"
M, N, N_TRAIN, N_TEST = 6, 12, 64, 8

#: name -> (estimator class, parameters); tiny and fast, a few KB each.
MODELS = {
    "vamp": (sklearn_unfold.VAMPRegressor, {"max_iter": 10}),
    "lista": (sklearn_unfold.LISTARegressor, {"n_layers": 2, "max_epochs": 1, "batch_size": 16,
                                              "training": "end_to_end", "alpha": 0.05}),
    "lamp": (sklearn_unfold.LAMPRegressor, {"n_layers": 2, "max_epochs": 1, "batch_size": 16,
                                            "training": "end_to_end"}),
    "ldvamp": (sklearn_unfold.LDVAMPRegressor, {"n_layers": 2, "max_epochs": 1, "batch_size": 16,
                                                "training": "end_to_end"}),
}


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, N)) / np.sqrt(M)
    X = rng.standard_normal((N_TRAIN + N_TEST, N)) * (rng.random((N_TRAIN + N_TEST, N)) < 0.25)
    Y = X @ A.T + 0.01 * rng.standard_normal((N_TRAIN + N_TEST, M))
    return A, Y[:N_TRAIN], X[:N_TRAIN], Y[N_TRAIN:]


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    A, Y, X, Y_test = make_data()
    expected = {"Y": Y_test}
    for name, (cls, params) in MODELS.items():
        names = cls().get_params(deep=False)
        extra = {k: v for k, v in {"random_state": 0, "device": "cpu"}.items() if k in names}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = cls(A=A, **params, **extra).fit(Y, X)
            expected[name] = est.predict(Y_test)
        save(est, OUT / f"{name}.sfu")
    np.savez(OUT / "expected.npz", **expected)
    for path in sorted(OUT.iterdir()):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
