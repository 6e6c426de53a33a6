"""
=====================================================
Baselines from scikit-learn, and a recovery pipeline
=====================================================

Before training a network it is worth knowing what the standard tools achieve. This example
recovers sparse signals with scikit-learn's :class:`~sklearn.linear_model.Lasso` and
:class:`~sklearn.linear_model.OrthogonalMatchingPursuit`, and with the package's classical
solvers (FISTA, AMP, VAMP), on the ``giid`` reference problem (``N = 500``, ``M = 250``,
10 % non-zeros, 40 dB), and compares accuracy and prediction time. It ends with a
:class:`~sklearn.pipeline.Pipeline` in which a recovery estimator is one step.

No network is trained here: every estimator below fits only a handful of scalars.
"""

# %%
# Data
# ----
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, OrthogonalMatchingPursuit
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sklearn_unfold import (
    AMPRegressor,
    FISTARegressor,
    ISTARegressor,
    VAMPRegressor,
    nmse_db,
    nmse_scorer,
)
from sklearn_unfold.datasets import make_compressed_sensing

Y, X, A = make_compressed_sensing("giid", n_samples=1000, random_state=0)
Y_test, X_test, _ = make_compressed_sensing("giid", n_samples=200, A=A, random_state=1)
M, N = A.shape


def quiet(func, *args, **kwargs):
    """Call ``func`` without ConvergenceWarnings.

    A few samples stop at ``max_iter`` before the strict default ``tol`` and the solvers then
    warn; that changes nothing visible in this example.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return func(*args, **kwargs)


# %%
# scikit-learn's sparse solvers, one signal at a time
# ---------------------------------------------------
# Both solve ``y ≈ A x`` for one measurement vector ``y``: ``A`` is the design matrix and the
# signal is the coefficient vector. Given all test vectors as the columns of ``Y_test.T`` they
# solve one problem per column. ``Lasso`` scales its data term by ``1/(2M)``; the ℓ1 weight that
# :class:`~sklearn_unfold.ISTARegressor` calibrates from the training pairs, divided by ``M``, is
# the matching ``alpha``. OMP adds atoms until the residual energy drops to the noise energy
# ``M σw²`` (the noise variance estimated by any of the package's estimators).
ista = ISTARegressor(A=A).fit(Y, X)
methods = {
    "sklearn Lasso": Lasso(alpha=ista.alpha_ / M, fit_intercept=False, max_iter=5000),
    "sklearn OMP": OrthogonalMatchingPursuit(tol=M * ista.noise_var_, fit_intercept=False),
}
results = {}
for name, est in methods.items():
    start = time.perf_counter()
    X_hat = est.fit(A, Y_test.T).coef_
    seconds = time.perf_counter() - start
    results[name] = (nmse_db(X_test, X_hat), 1e3 * seconds / len(Y_test))

# %%
# The package's solvers, all signals at once
# ------------------------------------------
# These are fitted once on training pairs (to learn the prior and the noise level), then
# recover any number of measurement vectors per call.
solvers = {
    "FISTA (LASSO)": FISTARegressor(A=A, max_iter=1000),
    "AMP-bg": AMPRegressor(A=A),
    "VAMP-bg": VAMPRegressor(A=A),
}
for name, est in solvers.items():
    est.fit(Y, X)
    start = time.perf_counter()
    X_hat = quiet(est.predict, Y_test)
    seconds = time.perf_counter() - start
    results[name] = (nmse_db(X_test, X_hat), 1e3 * seconds / len(Y_test))

print(f"{'method':15s} {'NMSE (dB)':>10s} {'ms / signal':>12s}")
for name, (db, ms) in results.items():
    print(f"{name:15s} {db:10.1f} {ms:12.2f}")

# %%
fig, (ax_nmse, ax_time) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
names = list(results)
ypos = np.arange(len(names))
colors = ["tab:grey"] * 2 + ["tab:blue"] * (len(names) - 2)
bars = ax_nmse.barh(ypos, [results[n][0] for n in names], color=colors)
ax_nmse.bar_label(bars, fmt="%.1f dB", padding=-52, color="white", fontsize="small")
ax_nmse.set_yticks(ypos, names)
ax_nmse.invert_yaxis()
ax_nmse.set_xlabel("test NMSE (dB), lower is better")
bars = ax_time.barh(ypos, [results[n][1] for n in names], color=colors)
ax_time.bar_label(bars, fmt="%.1f ms", padding=3, fontsize="small")
ax_time.set_xscale("log")
ax_time.xaxis.set_minor_formatter(NullFormatter())
ax_time.margins(x=0.25)
ax_time.set_xlabel("prediction time per signal (ms, log scale)")
for ax in (ax_nmse, ax_time):
    ax.grid(axis="x", alpha=0.3)
fig.suptitle("giid reference problem: scikit-learn (grey) and sklearn-unfold (blue)")
fig.tight_layout()
plt.show()

# %%
# The Lasso and FISTA solve the same problem and land on nearly the same NMSE, the LASSO's
# accuracy limit (FISTA stops after 1,000 iterations, a little short of full convergence on a
# few samples). OMP, which does not shrink the entries it selects, does better. AMP and VAMP
# with the Bernoulli-Gaussian denoiser use the prior fitted to the training signals and reach
# about −45.6 dB, the best error achievable on this problem, ahead of both scikit-learn
# solvers. They converge in a few tens of iterations and process all the signals in one batch
# of matrix products, so they are also the fastest per signal by a wide margin; FISTA needs
# hundreds of iterations, and batching does not make up for that. Times depend on the machine
# and its load.
#
# A recovery estimator inside a Pipeline
# --------------------------------------
# Real sensors rarely deliver ``y`` directly. Say the acquisition chain reports
# ``1000 y + 5`` (millivolts with an offset). A
# :class:`~sklearn.preprocessing.FunctionTransformer` undoes the known calibration and the
# recovery estimator is the final step; the pipeline is then cross-validated like any
# scikit-learn model, here with the NMSE scorer.
Y_raw = 1000.0 * Y + 5.0


def calibrate(raw):
    """Convert raw readings back to the measurements ``y``."""
    return (raw - 5.0) / 1000.0


pipe = make_pipeline(FunctionTransformer(calibrate), VAMPRegressor(A=A))
scores = quiet(cross_val_score, pipe, Y_raw, X, scoring=nmse_scorer, cv=3)
print("cross-validated NMSE per fold (dB):", np.round(-scores, 1))
