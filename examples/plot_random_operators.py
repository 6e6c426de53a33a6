"""
======================================================================
A fresh sensing matrix per sample: train over the ensemble, not on one
======================================================================

In many applications the operator changes from one measurement to the next: random sampling
masks, fresh pilot sequences, a new random projection per acquisition. A learned network that
was trained on *one* realisation of the random matrix has learned that realisation, not the
family: on fresh matrices it collapses. This is the commonest mistake in applying deep
unfolding.

The remedy has two parts:

1. a parameterisation whose learned quantities do not depend on one matrix. Learned AMP then
   uses ``B_t = β_t Aᴴ`` with each sample's own ``A`` and learns only the scalars ``β_t``, the
   Onsager scales and the denoiser parameters;
2. training over the ensemble: every mini-batch draws fresh operators.

Passing an operator ensemble as ``A`` does both. This example compares, on test samples that
each come with their own fresh Gaussian matrix,

* LAMP trained on one fixed matrix (the mistake),
* the same network trained over the ensemble,
* AMP with the Bernoulli-Gaussian denoiser, run on each sample's own matrix,

as NMSE against depth. The problem is smaller than the reference problems to stay within the
gallery's budget (``N = 200``, ``M = 100``, Bernoulli-Gaussian ``p = 0.1``, 40 dB, 4,000
training signals).
"""

# %%
# Data: one matrix per sample
# ---------------------------
# ``make_compressed_sensing(..., ensemble=...)`` draws one operator per sample and returns them
# as a per-sample :class:`~sklearn_unfold.operators.LinearOperator` of shape ``(n, M, N)``.
import warnings

import matplotlib.pyplot as plt

from sklearn_unfold import AMPRegressor, LAMPRegressor, nmse_db
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.operators import GaussianEnsemble

N, M, DEPTH = 200, 100, 8
ensemble = GaussianEnsemble(M, N)
kw = {"n_features": N, "n_measurements": M}
Y, X, ops, noise_var = make_compressed_sensing("giid", 4000, ensemble=ensemble, random_state=0,
                                               return_noise_var=True, **kw)
Y_test, X_test, ops_test = make_compressed_sensing("giid", 500, ensemble=ensemble,
                                                   random_state=1, **kw)


def curve(est, Y, X, operator):
    """Test NMSE (dB) after each layer or iteration."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [nmse_db(X, Xt) for Xt in est.staged_predict(Y, operator=operator)]


# %%
# The mistake: train on one realisation
# -------------------------------------
# Pairs measured through one fixed matrix ``A0``; the network learns matrices ``B_t`` for it.
Y0, X0, A0 = make_compressed_sensing("giid", 4000, random_state=0, **kw)
fixed = LAMPRegressor(A=A0, n_layers=DEPTH, random_state=0).fit(Y0, X0)
print("trained on one A:", fixed.parameterization_)

# %%
# The remedy: train over the ensemble
# -----------------------------------
# ``A=ensemble``: every mini-batch draws fresh matrices, and the layers use each sample's own.
# The pairs' own operators serve for validation and for estimating the noise.
over = LAMPRegressor(A=ensemble, n_layers=DEPTH, random_state=0).fit(Y, X, operator=ops)
print("trained over the ensemble:", over.parameterization_)

# %%
# AMP needs no training: it takes each sample's operator analytically.
amp = AMPRegressor(A=ensemble, max_iter=DEPTH, tol=0, noise_var=over.noise_var_).fit(
    Y, X, operator=ops)

# %%
# NMSE against depth on fresh matrices
# ------------------------------------
depths = range(1, DEPTH + 1)
results = {
    "LAMP trained on one fixed A": curve(fixed, Y_test, X_test, ops_test),
    "LAMP trained over the ensemble": curve(over, Y_test, X_test, ops_test),
    "AMP-bg on each sample's own A": curve(amp, Y_test, X_test, ops_test),
}
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for (name, values), style in zip(results.items(), ["o--", "s-", "^:"], strict=True):
    ax.plot(depths, values, style, label=name)
ax.set_xlabel("layers / iterations")
ax.set_ylabel("test NMSE (dB), a fresh A per sample")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
for name, values in results.items():
    print(f"{name:<32s} " + " ".join(f"{v:6.1f}" for v in values))

# %%
# The network trained on one matrix is far worse than plain AMP on fresh matrices, however
# good it is on the matrix it was trained for; trained over the ensemble, the same
# architecture follows AMP at every depth and goes past it.
