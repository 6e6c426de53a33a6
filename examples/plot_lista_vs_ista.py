"""
================================================
Learned ISTA against ISTA: layers for iterations
================================================

ISTA solves the LASSO by repeating one cheap step: a gradient step on the data fit followed by
a soft threshold. It converges for any sensing matrix, but slowly: on the problem below it
needs thousands of iterations to settle. Learned ISTA (LISTA) runs only a handful of those
steps, each with its own trained matrix and threshold, and is trained to get as far in ten
layers as ISTA gets in thousands of iterations.

This example draws a compressed-sensing problem, runs ISTA for 3,000 iterations, trains a
10-layer LISTA, and plots the test NMSE of both against the number of (un)rolled iterations.

To fit the two-minute budget of the gallery the problem is smaller than the reference problems
(``N = 200`` unknowns, ``M = 100`` measurements, 30 dB SNR instead of 40 dB) and LISTA is trained
briefly (about 1,200 optimiser steps in all). A longer training, with more layers, goes well past
the LASSO; see :doc:`/user_guide/lista`.
"""

# %%
# The problem
# -----------
# Bernoulli-Gaussian signals with 10 % non-zero entries, an i.i.d. Gaussian ``A`` and a test set
# measured through the same ``A``. The learned network is trained for this ``A``.
import warnings

import matplotlib.pyplot as plt
from sklearn.exceptions import ConvergenceWarning

from sklearn_unfold import FISTARegressor, ISTARegressor, LISTARegressor, nmse_db
from sklearn_unfold.datasets import make_compressed_sensing
from sklearn_unfold.plotting import NMSECurveDisplay, TrainingHistoryDisplay

problem = dict(n_features=200, n_measurements=100, snr_db=30.0)
Y, X, A = make_compressed_sensing("giid", n_samples=2000, random_state=0, **problem)
Y_test, X_test, _ = make_compressed_sensing("giid", n_samples=300, A=A, random_state=1,
                                            **problem)

# %%
# ISTA and the LASSO solution it converges to
# -------------------------------------------
# ``alpha="auto"`` sets the ℓ1 weight from the prior and the noise level fitted to the
# training pairs. FISTA, the accelerated variant, converges to the same LASSO solution much
# faster; its final NMSE is the level ISTA approaches.
ista = ISTARegressor(A=A, max_iter=3000).fit(Y, X)
fista = FISTARegressor(A=A, max_iter=3000).fit(Y, X)
lasso_db = nmse_db(X_test, fista.predict(Y_test))
print(f"LASSO solution (FISTA after {fista.n_iter_} iterations): {lasso_db:.1f} dB")

# %%
# Learned ISTA
# ------------
# The default LISTA is the coupled form with support selection (LISTA-CP-SS), grown layer by
# layer from the ISTA initialisation. ``signal_prior="bernoulli_gaussian"`` draws fresh signals
# from the prior fitted to ``X`` at every training step, so the network cannot memorise the
# training pairs (they serve for validation only).
lista = LISTARegressor(A=A, n_layers=10, max_epochs=15, learning_rate=6e-3,
                       signal_prior="bernoulli_gaussian", random_state=0)
lista.fit(Y, X)
print(f"LISTA, 10 layers: {nmse_db(X_test, lista.predict(Y_test)):.1f} dB")

# %%
# NMSE against depth
# ------------------
# :class:`~sklearn_unfold.plotting.NMSECurveDisplay` runs ``staged_predict`` of each estimator
# on the test set. The x-axis is logarithmic because ISTA's curve has 3,000 points.
# ISTA is cut at 3,000 iterations on purpose; its ConvergenceWarning is silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    display = NMSECurveDisplay.from_estimators(
        {"ISTA": ista, "LISTA (10 layers)": lista}, Y_test, X_test,
        references={"LASSO solution": lasso_db})
display.ax_.set_title("giid, N=200, M=100, 30 dB")
ista_curve = display.nmse_db[0]
reach = int((ista_curve <= display.nmse_db[1][-1]).argmax()) + 1
print(f"ISTA after 10 iterations: {ista_curve[9]:.1f} dB; after 1,000: {ista_curve[999]:.1f} dB; "
      f"after 3,000: {ista_curve[-1]:.1f} dB")
print(f"ISTA first matches LISTA's 10-layer NMSE after {reach} iterations"
      if ista_curve[-1] <= display.nmse_db[1][-1]
      else "ISTA does not reach LISTA's 10-layer NMSE within 3,000 iterations")
plt.show()

# %%
# Before training, the 10-layer LISTA *is* the first 10 ISTA iterations (about −3 dB here).
# After training it goes past the LASSO solution's NMSE at its last layer (by about 1 dB
# here), a level that ISTA, which converges to the LASSO solution, does not reach in 3,000
# iterations: a factor of several hundred in depth, hence in computation per recovered signal.
# The price is the training, and a network tied to this ``A``.
#
# How the network was grown
# -------------------------
# Each new layer's direction, step and threshold are first fitted to the data, then the layer
# is trained alone (circles), then all layers so far are refined (dots); the dotted vertical
# lines mark where a layer was added. The validation NMSE improves with every layer.
TrainingHistoryDisplay.from_estimator(lista)
plt.show()
